output "repository_urls" {
  description = "Where to push the images: lambda (Dockerfile.cpu) and worker (Dockerfile.cuda)"
  value       = module.registry.repository_urls
}

output "github_push_role_arn" {
  description = "Set as the GitHub repository variable AWS_ROLE_ARN"
  value       = module.registry.github_push_role_arn
}
