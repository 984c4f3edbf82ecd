variable "aws_profile" {
  description = "AWS CLI profile with the credentials to deploy"
  type        = string
  default     = "thalia"
}

variable "aws_region" {
  description = "AWS region to deploy to"
  type        = string
  default     = "eu-west-1"
}

variable "github_oidc_provider_arn" {
  description = "ARN of the account's IAM OIDC provider for GitHub Actions (token.actions.githubusercontent.com); null to push images by hand"
  type        = string
  default     = null
}

variable "github_repository" {
  description = "GitHub repository (owner/name) whose build workflow on main may push the images: the one this code is pushed to, which holds the AWS_ROLE_ARN variable"
  type        = string
  default     = "svthalia/concrexit-facedetection-lambda"
}
