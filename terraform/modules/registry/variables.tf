variable "repositories" {
  description = "Names of the ECR repositories to create, keyed by a short name (lambda, worker)"
  type        = map(string)
  default = {
    lambda = "concrexit/facedetection-lambda"
    worker = "concrexit/facedetection-worker"
  }
}

variable "keep_images" {
  description = "How many images pushed by CI (tagged sha-<commit>) each repository keeps; a deployed function or task pins one of them by digest"
  type        = number
  default     = 20
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
  description = "GitHub repository (owner/name) whose workflow on main pushes the images; null for no push role"
  type        = string
  default     = "svthalia/concrexit-facedetection"
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
