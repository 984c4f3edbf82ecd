# A worker that is asked for but never runs: no GPU capacity or spot instance to be had, the quota
# taken by another stage, an image or driver that crash-loops. The queue's own stuck alarm (module
# backfill) sees only a backlog that nobody receives; this one also sees a task that keeps
# receiving and dying, which keeps a GPU instance billed while the queue never goes idle.
resource "aws_cloudwatch_metric_alarm" "tasks_not_running" {
  alarm_name          = "${local.name}-worker-not-running"
  alarm_description   = "Fewer GPU workers run than the service wants, for 15 minutes: see the service's events (aws ecs describe-services) and the Auto Scaling group's activity"
  comparison_operator = "GreaterThanThreshold"
  threshold           = 0
  evaluation_periods  = 15
  datapoints_to_alarm = 15
  treat_missing_data  = "notBreaching"
  alarm_actions       = [var.alarm_topic_arn]
  ok_actions          = [var.alarm_topic_arn]
  tags                = var.tags

  metric_query {
    id          = "not_running"
    expression  = "FILL(desired, 0) - FILL(running, 0)"
    label       = "Tasks desired but not running"
    return_data = true
  }

  metric_query {
    id = "desired"
    metric {
      namespace   = "ECS/ContainerInsights"
      metric_name = "DesiredTaskCount"
      dimensions  = { ClusterName = aws_ecs_cluster.this.name, ServiceName = aws_ecs_service.worker.name }
      stat        = "Maximum"
      period      = 60
    }
  }

  # The fewest running in the minute: a task that crashes and restarts counts as not running.
  metric_query {
    id = "running"
    metric {
      namespace   = "ECS/ContainerInsights"
      metric_name = "RunningTaskCount"
      dimensions  = { ClusterName = aws_ecs_cluster.this.name, ServiceName = aws_ecs_service.worker.name }
      stat        = "Minimum"
      period      = 60
    }
  }
}
