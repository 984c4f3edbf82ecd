output "cluster_name" {
  description = "ECS cluster of the GPU workers"
  value       = aws_ecs_cluster.this.name
}

output "service_name" {
  description = "ECS service of the GPU workers"
  value       = aws_ecs_service.worker.name
}

output "log_group" {
  description = "The worker's log group"
  value       = aws_cloudwatch_log_group.worker.name
}

output "repository_name" {
  description = "ECR repository of the worker image"
  value       = data.aws_ecr_repository.worker.name
}

output "image_digest" {
  description = "Digest of the worker image the task definition runs (the stage tags it release-<stage>)"
  value       = data.aws_ecr_image.worker.image_digest
}
