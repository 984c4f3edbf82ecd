terraform {
  required_version = ">= 1.5.0"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = ">= 5.80.0, < 7.0.0"
    }
  }

  # A backend block cannot read variables: the bucket's region and profile are written out.
  backend "s3" {
    bucket  = "thalia-terraform-state"
    key     = "concrexit-facedetection/staging.tfstate"
    region  = "eu-west-1"
    profile = "thalia"
  }
}

provider "aws" {
  profile = var.aws_profile
  region  = var.aws_region
}

locals {
  stage = "staging"
  tags = {
    Category    = "concrexit-facedetection-lambda",
    Owner       = "technicie",
    Environment = local.stage,
    Terraform   = true
  }
  # The function's timeout, which the backfill queue's visibility timeout follows.
  lambda_timeout = 300
}

module "alerts" {
  source = "../../modules/alerts"
  stage  = local.stage
  email  = var.alarm_email
  tags   = local.tags
}

module "backfill" {
  source = "../../modules/backfill"
  stage  = local.stage
  # AWS asks for 6 times the function's timeout where the function consumes the queue; the GPU
  # worker's heartbeats need no more than the module's default.
  visibility_timeout = var.backfill_on_lambda ? 6 * local.lambda_timeout : null
  alarm_topic_arn    = module.alerts.topic_arn
  tags               = local.tags
}

# The GPU workers, once the G and VT quota is granted (README, Deployment): off, nothing of them is
# planned, and the stage needs no VPC, no subnets and no quota.
module "gpu_workers" {
  source = "../../modules/gpu_workers"
  count  = var.gpu_workers ? 1 : 0

  stage      = local.stage
  aws_region = var.aws_region
  queue = {
    url  = module.backfill.queue_url
    arn  = module.backfill.queue_arn
    name = module.backfill.queue_name
  }
  repository_name           = "concrexit/facedetection-worker"
  image_tag                 = var.worker_image_tag
  max_tasks                 = 1
  other_stages_gpu_vcpus    = var.other_stages_gpu_vcpus
  spot                      = var.spot_workers
  vpc_id                    = var.backfill_vpc_id
  subnet_ids                = var.backfill_subnet_ids
  assign_public_ip          = var.backfill_assign_public_ip
  read_only_root_filesystem = var.worker_read_only_root_filesystem
  sentry_dsn                = var.sentry_dsn
  alarm_topic_arn           = module.alerts.topic_arn
  tags                      = local.tags
}

module "lambda" {
  source          = "../../modules/lambda"
  stage           = local.stage
  aws_region      = var.aws_region
  repository_name = "concrexit/facedetection-lambda"
  image_tag       = var.lambda_image_tag
  timeout         = local.lambda_timeout
  sentry_dsn      = var.sentry_dsn
  # 2 for live uploads alone; with a backfill on Lambda 3: 2 for the queue (the least an SQS
  # event source mapping allows) and 1 always left to live uploads.
  reserved_concurrency         = var.backfill_on_lambda ? 3 : 2
  event_source_max_concurrency = 2
  min_live_concurrency         = 1
  alarm_topic_arn              = module.alerts.topic_arn
  event_source = var.backfill_on_lambda ? {
    arn                = module.backfill.queue_arn
    visibility_timeout = module.backfill.queue_visibility_timeout
  } : null
  tags = local.tags
}

# The images this stage runs carry the tag release-staging, which the registry's lifecycle policy
# never expires (modules/registry): after every apply that changes an image, the tag moves to it.
# Needs the AWS CLI (ecr:BatchGetImage, ecr:PutImage) where terraform runs.
resource "terraform_data" "release_tags" {
  triggers_replace = {
    lambda = module.lambda.image_digest
    worker = one(module.gpu_workers[*].image_digest)
  }

  provisioner "local-exec" {
    command = join(" ", concat([
      "${path.module}/../../../scripts/tag-release.sh", "release-${local.stage}",
      "${module.lambda.repository_name}@${module.lambda.image_digest}",
      ], [
      for workers in module.gpu_workers : "${workers.repository_name}@${workers.image_digest}"
    ]))
    environment = {
      AWS_PROFILE = var.aws_profile
      AWS_REGION  = var.aws_region
    }
  }

  depends_on = [module.lambda, module.gpu_workers]
}
