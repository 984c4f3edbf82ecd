output "lambda_arn" {
  description = "ARN of the lambda function, to be used from concrexit (FACEDETECTION_LAMBDA_ARN)"
  value       = module.lambda.lambda_arn
}

output "failed_invocations_queue_url" {
  description = "Queue holding Lambda invocations that failed after every retry"
  value       = module.lambda.failed_invocations_queue_url
}

output "backfill_queue_url" {
  description = "Queue of the backfill (facedetect enqueue FILE --queue-url URL)"
  value       = module.backfill.queue_url
}

output "backfill_dead_letter_queue_url" {
  description = "Dead-letter queue of the backfill"
  value       = module.backfill.dead_letter_queue_url
}

output "backfill_cluster" {
  description = "ECS cluster and service of the GPU workers (null while gpu_workers is off)"
  value       = one([for workers in module.gpu_workers : "${workers.cluster_name}/${workers.service_name}"])
}

output "log_groups" {
  description = "Log groups of the function and the worker"
  value       = concat([module.lambda.log_group], module.gpu_workers[*].log_group)
}

output "alarm_topic_arn" {
  description = "SNS topic of the alarms"
  value       = module.alerts.topic_arn
}
