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
  source          = "../../modules/backfill"
  stage           = local.stage
  aws_region      = var.aws_region
  repository_name = "concrexit/facedetection-worker"
  image_tag       = var.worker_image_tag
  max_tasks       = 2
  spot            = var.spot_workers
  alarm_topic_arn = module.alerts.topic_arn
  tags            = local.tags
}

module "lambda" {
  source               = "../../modules/lambda"
  stage                = local.stage
  aws_region           = var.aws_region
  repository_name      = "concrexit/facedetection-lambda"
  image_tag            = var.lambda_image_tag
  reserved_concurrency = 10
  alarm_topic_arn      = module.alerts.topic_arn
  event_source = var.backfill_on_lambda ? {
    arn                = module.backfill.queue_arn
    visibility_timeout = module.backfill.queue_visibility_timeout
  } : null
  tags = local.tags
}
