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

# A backlog nobody consumes: no GPU worker starts (quota used up, no capacity, an image that
# crash-loops before its first receive) and the function does not consume the queue either.
# Such messages are never received, so they never reach the dead-letter queue, and SQS deletes
# them after their retention: the oldest message's age, while nothing is received, says so.
resource "aws_cloudwatch_metric_alarm" "stuck" {
  alarm_name          = "${aws_sqs_queue.backfill.name}-stuck"
  alarm_description   = "The oldest backfill message has waited over ${var.stuck_after_seconds} s and nothing received one for 15 minutes: no worker consumes the queue (see the worker service's events and the Auto Scaling group's activity, or enable backfill_on_lambda)"
  comparison_operator = "GreaterThanThreshold"
  threshold           = var.stuck_after_seconds
  evaluation_periods  = 3
  datapoints_to_alarm = 3
  treat_missing_data  = "notBreaching"
  alarm_actions       = [var.alarm_topic_arn]
  ok_actions          = [var.alarm_topic_arn]
  tags                = var.tags

  metric_query {
    id          = "age_unreceived"
    expression  = "IF(FILL(received, 0) == 0, FILL(age, 0), 0)"
    label       = "Age of the oldest message while none is received"
    return_data = true
  }

  metric_query {
    id = "age"
    metric {
      namespace   = "AWS/SQS"
      metric_name = "ApproximateAgeOfOldestMessage"
      dimensions  = { QueueName = aws_sqs_queue.backfill.name }
      stat        = "Maximum"
      period      = 300
    }
  }

  metric_query {
    id = "received"
    metric {
      namespace   = "AWS/SQS"
      metric_name = "NumberOfMessagesReceived"
      dimensions  = { QueueName = aws_sqs_queue.backfill.name }
      stat        = "Sum"
      period      = 300
    }
  }
}
