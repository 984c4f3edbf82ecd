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
