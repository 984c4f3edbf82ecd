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
    key     = "concrexit-facedetection/production.tfstate"
    region  = "eu-west-1"
    profile = "thalia"
  }
}

provider "aws" {
  profile = var.aws_profile
  region  = var.aws_region
}

locals {
  stage = "production"
  tags = {
    Category    = "concrexit-facedetection-lambda",
    Owner       = "technicie",
    Environment = local.stage,
    Terraform   = true
  }
}

module "alerts" {
  source = "../../modules/alerts"
  stage  = local.stage
  email  = var.alarm_email
  tags   = local.tags
}

module "backfill" {
  source           = "../../modules/backfill"
  stage            = local.stage
  aws_region       = var.aws_region
  repository_name  = "concrexit/facedetection-worker"
  image_tag        = var.worker_image_tag
  max_tasks        = 2
  spot             = var.spot_workers
  vpc_id           = var.backfill_vpc_id
  subnet_ids       = var.backfill_subnet_ids
  assign_public_ip = var.backfill_assign_public_ip
  alarm_topic_arn  = module.alerts.topic_arn
  tags             = local.tags
}

module "lambda" {
  source          = "../../modules/lambda"
  stage           = local.stage
  aws_region      = var.aws_region
  repository_name = "concrexit/facedetection-lambda"
  image_tag       = var.lambda_image_tag
  # A backfill on Lambda takes at most half: 5 instances for the queue, 5 always left to
  # live uploads.
  reserved_concurrency         = 10
  event_source_max_concurrency = 5
  min_live_concurrency         = 5
  alarm_topic_arn              = module.alerts.topic_arn
  event_source = var.backfill_on_lambda ? {
    arn                = module.backfill.queue_arn
    visibility_timeout = module.backfill.queue_visibility_timeout
  } : null
  tags = local.tags
}

# The images this stage runs carry the tag release-production, which the registry's lifecycle policy
# never expires (modules/registry): after every apply that changes an image, the tag moves to it.
# Needs the AWS CLI (ecr:BatchGetImage, ecr:PutImage) where terraform runs.
resource "terraform_data" "release_tags" {
  triggers_replace = {
    lambda = module.lambda.image_digest
    worker = module.backfill.image_digest
  }

  provisioner "local-exec" {
    command = join(" ", [
      "${path.module}/../../../scripts/tag-release.sh", "release-${local.stage}",
      "${module.lambda.repository_name}@${module.lambda.image_digest}",
      "${module.backfill.repository_name}@${module.backfill.image_digest}",
    ])
    environment = {
      AWS_PROFILE = var.aws_profile
      AWS_REGION  = var.aws_region
    }
  }

  depends_on = [module.lambda, module.backfill]
}
