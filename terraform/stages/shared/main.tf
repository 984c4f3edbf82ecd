# What both stages share: the image repositories (CI pushes each image once) and the role the
# GitHub workflow pushes with. Apply this first.
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
    key     = "concrexit-facedetection/shared.tfstate"
    region  = "eu-west-1"
    profile = "thalia"
  }
}

provider "aws" {
  profile = var.aws_profile
  region  = var.aws_region
}

locals {
  tags = {
    Category    = "concrexit-facedetection-lambda",
    Owner       = "technicie",
    Environment = "shared",
    Terraform   = true
  }
}

module "registry" {
  source                   = "../../modules/registry"
  aws_region               = var.aws_region
  github_oidc_provider_arn = var.github_oidc_provider_arn
  github_repository        = var.github_repository
  tags                     = local.tags
}

# ECS's service-linked role, which the GPU workers' cluster and capacity provider need. An account
# that never used ECS has none, and the stage's first apply would fail creating the capacity
# provider ("Unable to assume the service linked role"); an account that has one adopts it
# (imports.tf). Shared: one per account, whichever stages run workers.
resource "aws_iam_service_linked_role" "ecs" {
  # No description or tags: an adopted role stays as it was.
  aws_service_name = "ecs.amazonaws.com"
}
