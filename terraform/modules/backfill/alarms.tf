# Messages that failed max_receive_count times wait in the dead-letter queue for a person.

resource "aws_cloudwatch_metric_alarm" "dead_letter" {
  alarm_name          = "${aws_sqs_queue.dead_letter.name}-not-empty"
  alarm_description   = "Backfill messages failed ${var.max_receive_count} times; see the worker's logs, then redrive them from the console"
  namespace           = "AWS/SQS"
  metric_name         = "ApproximateNumberOfMessagesVisible"
  dimensions          = { QueueName = aws_sqs_queue.dead_letter.name }
  statistic           = "Maximum"
  period              = 300
  evaluation_periods  = 1
  threshold           = 0
  comparison_operator = "GreaterThanThreshold"
  treat_missing_data  = "notBreaching"
  alarm_actions       = [var.alarm_topic_arn]
  ok_actions          = [var.alarm_topic_arn]
  tags                = var.tags
}
