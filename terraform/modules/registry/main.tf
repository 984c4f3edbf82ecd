# The container registries for both images: the Lambda function's (Dockerfile.cpu) and the GPU
# worker's (Dockerfile.cuda), shared by all stages like the original's single repository, and the
# role GitHub Actions assumes through OIDC to push to them.

data "aws_caller_identity" "current" {}

data "aws_partition" "current" {}

resource "aws_ecr_repository" "this" {
  for_each = var.repositories

  name = each.value
  # checkov:skip=CKV_AWS_51:Tags move: the workflow pushes `latest` (as the original did) and sha-<commit>; stages pin images by digest, so a moved tag never changes what runs.
  image_tag_mutability = "MUTABLE"
  # checkov:skip=CKV_AWS_136:AES-256 server-side encryption (ECR's default) is enough for public code and model weights; a KMS key would cost more than the registry.

  image_scanning_configuration {
    scan_on_push = true
  }

  encryption_configuration {
    encryption_type = "AES256"
  }

  tags = var.tags
}

# What a stage runs is pinned by digest, so an image must outlive its deployment. Each stage's
# apply tags the images it runs release-<stage> (scripts/tag-release.sh; the tag moves with the
# next apply), and the rules below never expire an image that carries such a tag: ECR expires an
# image by at most one rule, and an image matching a rule of higher priority is never expired by
# a lower one. Rule 1 selects the released images and expires only beyond keep_releases, which
# the stages' release tags never reach (one image per stage per repository at most). CI's own
# images (sha-<commit>, `latest`) keep the last keep_images; untagged ones (build leftovers,
# images whose tags all moved away) go after untagged_days.
resource "aws_ecr_lifecycle_policy" "this" {
  for_each = aws_ecr_repository.this

  repository = each.value.name
  policy = jsonencode({
    rules = [
      {
        rulePriority = 1
        description  = "Keep the images the stages run (tagged ${var.release_tag_prefix}<stage> when applied)"
        selection = {
          tagStatus     = "tagged"
          tagPrefixList = [var.release_tag_prefix]
          countType     = "imageCountMoreThan"
          countNumber   = var.keep_releases
        }
        action = { type = "expire" }
      },
      {
        rulePriority = 2
        description  = "Keep the last ${var.keep_images} images pushed by CI"
        selection = {
          tagStatus     = "tagged"
          tagPrefixList = ["sha-"]
          countType     = "imageCountMoreThan"
          countNumber   = var.keep_images
        }
        action = { type = "expire" }
      },
      {
        rulePriority = 3
        description  = "Expire untagged images after ${var.untagged_days} days"
        selection = {
          tagStatus   = "untagged"
          countType   = "sinceImagePushed"
          countUnit   = "days"
          countNumber = var.untagged_days
        }
        action = { type = "expire" }
      },
    ]
  })
}

# Lambda pulls a container image with the repository's policy: allow the facedetection functions
# of this account, and nothing else, to read the Lambda image.
data "aws_iam_policy_document" "lambda_pull" {
  statement {
    sid     = "LambdaPull"
    actions = ["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"]
    principals {
      type        = "Service"
      identifiers = ["lambda.amazonaws.com"]
    }
    condition {
      test     = "StringLike"
      variable = "aws:sourceArn"
      values   = ["arn:${data.aws_partition.current.partition}:lambda:${var.aws_region}:${data.aws_caller_identity.current.account_id}:function:${var.lambda_function_name_pattern}"]
    }
  }
}

resource "aws_ecr_repository_policy" "lambda" {
  repository = aws_ecr_repository.this["lambda"].name
  policy     = data.aws_iam_policy_document.lambda_pull.json
}

# The role the GitHub workflow assumes (vars.AWS_ROLE_ARN) to push both images: only the build
# workflow's jobs on the main branch of var.github_repository (an exact subject, no wildcard; a
# job with a GitHub environment would present another subject and be refused).
data "aws_iam_policy_document" "github_trust" {
  count = local.push_role ? 1 : 0

  statement {
    actions = ["sts:AssumeRoleWithWebIdentity"]
    principals {
      type        = "Federated"
      identifiers = [var.github_oidc_provider_arn]
    }
    condition {
      test     = "StringEquals"
      variable = "token.actions.githubusercontent.com:aud"
      values   = ["sts.amazonaws.com"]
    }
    condition {
      test     = "StringEquals"
      variable = "token.actions.githubusercontent.com:sub"
      values   = ["repo:${var.github_repository}:ref:refs/heads/main"]
    }
  }
}

data "aws_iam_policy_document" "github_push" {
  count = local.push_role ? 1 : 0

  # GetAuthorizationToken has no resource-level permissions: AWS accepts only "*" for it. The
  # token it returns grants nothing by itself; the statement below limits what can be pushed.
  statement {
    sid       = "RegistryLogin"
    actions   = ["ecr:GetAuthorizationToken"]
    resources = ["*"]
  }

  statement {
    sid = "PushImages"
    actions = [
      "ecr:BatchCheckLayerAvailability",
      "ecr:BatchGetImage",
      "ecr:CompleteLayerUpload",
      "ecr:GetDownloadUrlForLayer",
      "ecr:InitiateLayerUpload",
      "ecr:PutImage",
      "ecr:UploadLayerPart",
    ]
    resources = [for repository in aws_ecr_repository.this : repository.arn]
  }
}

locals {
  push_role = var.github_oidc_provider_arn != null
}

resource "aws_iam_role" "github_push" {
  count = local.push_role ? 1 : 0

  name               = "concrexit-facedetection-github-push"
  assume_role_policy = data.aws_iam_policy_document.github_trust[0].json
  tags               = var.tags
}

resource "aws_iam_role_policy" "github_push" {
  count = local.push_role ? 1 : 0

  name   = "push-images"
  role   = aws_iam_role.github_push[0].id
  policy = data.aws_iam_policy_document.github_push[0].json
}
