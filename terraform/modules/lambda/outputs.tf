output "lambda_arn" {
  description = "ARN of the lambda function, to be used from concrexit (FACEDETECTION_LAMBDA_ARN)"
  value       = aws_lambda_function.this.arn
}

output "timeout" {
  description = "Seconds an invocation may run"
  value       = aws_lambda_function.this.timeout
}

output "function_name" {
  description = "Name of the function"
  value       = aws_lambda_function.this.function_name
}

output "failed_invocations_queue_url" {
  description = "Queue holding asynchronous invocations that failed after every retry"
  value       = aws_sqs_queue.failed.url
}

output "log_group" {
  description = "The function's log group"
  value       = aws_cloudwatch_log_group.this.name
}

output "repository_name" {
  description = "ECR repository of the function's image"
  value       = data.aws_ecr_repository.this.name
}

output "image_digest" {
  description = "Digest of the image the function runs (the stage tags it release-<stage>)"
  value       = data.aws_ecr_image.this.image_digest
}
