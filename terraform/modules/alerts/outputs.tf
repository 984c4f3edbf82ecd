output "topic_arn" {
  description = "SNS topic the stage's alarms notify"
  value       = aws_sns_topic.this.arn
}
