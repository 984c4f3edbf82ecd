output "queue_url" {
  description = "URL of the backfill queue (facedetect enqueue --queue-url)"
  value       = aws_sqs_queue.backfill.url
}

output "queue_arn" {
  description = "ARN of the backfill queue (grant sqs:SendMessage on it to whoever enqueues)"
  value       = aws_sqs_queue.backfill.arn
}

output "queue_name" {
  description = "Name of the backfill queue (the dimension of its CloudWatch metrics)"
  value       = aws_sqs_queue.backfill.name
}

output "queue_visibility_timeout" {
  description = "Visibility timeout of the backfill queue"
  value       = aws_sqs_queue.backfill.visibility_timeout_seconds
}

output "dead_letter_queue_url" {
  description = "URL of the backfill's dead-letter queue"
  value       = aws_sqs_queue.dead_letter.url
}
