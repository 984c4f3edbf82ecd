variable "repositories" {
  description = "Names of the ECR repositories to create, keyed by a short name (lambda, worker)"
  type        = map(string)
  default = {
    lambda = "concrexit/facedetection-lambda"
    worker = "concrexit/facedetection-worker"
  }
}

variable "keep_images" {
  description = "How many images pushed by CI (tagged sha-<commit>) each repository keeps, besides the released ones"
  type        = number
  default     = 20
}

variable "release_tag_prefix" {
  description = "Prefix of the tags a stage puts on the images it runs (release-staging, release-production); images with such a tag are never expired"
  type        = string
  default     = "release-"
}

variable "keep_releases" {
  description = "Released images (tagged release_tag_prefix...) kept per repository: above the number of stages, so that no image a stage runs is ever expired"
  type        = number
  default     = 10
}

variable "untagged_days" {
  description = "Days an untagged image is kept"
  type        = number
  default     = 14
}

variable "lambda_function_name_pattern" {
  description = "Functions allowed to pull the Lambda image (Lambda pulls with the repository's policy, not the function's role)"
  type        = string
  default     = "concrexit-*-facedetection-lambda"
}

variable "aws_region" {
  description = "Region of the repositories and of the functions that pull from them"
  type        = string
}

variable "github_repository" {
  description = "GitHub repository (owner/name) whose build workflow on main pushes the images: the original's, whose AWS_ROLE_ARN variable the workflow reads"
  type        = string
  default     = "svthalia/concrexit-facedetection-lambda"

  validation {
    condition     = can(regex("^[A-Za-z0-9][A-Za-z0-9-]*/[A-Za-z0-9._-]+$", var.github_repository))
    error_message = "github_repository is owner/name exactly (no wildcard): the trust policy allows that repository's main branch and nothing else."
  }
}

variable "github_oidc_provider_arn" {
  description = "ARN of the account's IAM OIDC provider for token.actions.githubusercontent.com (there is one per account; the original's workflow already uses it)"
  type        = string
  default     = null
}

variable "tags" {
  description = "Tags for every resource"
  type        = map(string)
}
