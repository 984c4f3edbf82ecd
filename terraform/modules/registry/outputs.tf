output "repository_urls" {
  description = "URL of each repository, by short name (lambda, worker)"
  value       = { for key, repository in aws_ecr_repository.this : key => repository.repository_url }
}

output "repository_names" {
  description = "Name of each repository, by short name (lambda, worker)"
  value       = { for key, repository in aws_ecr_repository.this : key => repository.name }
}

output "github_push_role_arn" {
  description = "Role for the GitHub workflow (set it as the repository variable AWS_ROLE_ARN); null without an OIDC provider"
  value       = one(aws_iam_role.github_push[*].arn)
}
