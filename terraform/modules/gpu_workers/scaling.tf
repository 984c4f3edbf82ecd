# The workers scale on the backlog: the messages visible and in flight, per task of the service
# (its desired count: the tasks running or starting, from Container Insights, so that a worker
# whose instance is still booting already counts). Three step policies:
#
# - start: a visible message and no task, two minutes running: add one worker
#   (ChangeInCapacity +1).
# - scale_out: more than messages_per_task of backlog per task: add one (ChangeInCapacity +1),
#   up to max_tasks.
# - to_zero: nothing visible and nothing in flight for idle_minutes: no worker (ExactCapacity 0),
#   and then the capacity provider removes the instance.
#
# Only to_zero lowers the count, and only when both counts have been zero for idle_minutes: a
# queue whose last messages are all being worked on (nothing visible, some in flight) keeps its
# workers until they are done.
#
# Metrics arrive late and alarm actions repeat: an alarm's action runs again every minute it stays
# in ALARM. So the task count is never read as 0 because its point is late (a missing minute
# repeats the last count reported, FILL(tasks, REPEAT); only a service that reports nothing at
# all counts as none), start needs two minutes in a row, and the idle alarm counts only while the
# service has workers: once at zero it returns to OK, so no to_zero is repeated after a start.

locals {
  # The metrics the scaling alarms combine, by metric-math id; each is the maximum of a minute.
  # (Dimensions as maps, so that the three have one type and make a map.)
  scaling_metrics = {
    visible = {
      namespace   = "AWS/SQS"
      metric_name = "ApproximateNumberOfMessagesVisible"
      dimensions  = tomap({ QueueName = var.queue.name })
    }
    in_flight = {
      namespace   = "AWS/SQS"
      metric_name = "ApproximateNumberOfMessagesNotVisible"
      dimensions  = tomap({ QueueName = var.queue.name })
    }
    tasks = {
      namespace   = "ECS/ContainerInsights"
      metric_name = "DesiredTaskCount"
      dimensions  = tomap({ ClusterName = aws_ecs_cluster.this.name, ServiceName = aws_ecs_service.worker.name })
    }
  }

  # The task count of a minute: a late point is the last one reported; none at all is none.
  tasks = "FILL(FILL(tasks, REPEAT), 0)"

  # A new worker's first poll comes after its instance boots, joins the cluster and pulls the
  # image (README, "Cost and capacity": about 7 minutes). The scale-out policies wait this long
  # after acting before acting again on the same trigger, so a metric that lags the desired
  # count cannot start a second worker for the same backlog.
  scale_out_cooldown = 300
}

resource "aws_appautoscaling_policy" "start" {
  name               = "${local.name}-worker-start"
  policy_type        = "StepScaling"
  service_namespace  = aws_appautoscaling_target.worker.service_namespace
  resource_id        = aws_appautoscaling_target.worker.resource_id
  scalable_dimension = aws_appautoscaling_target.worker.scalable_dimension

  step_scaling_policy_configuration {
    adjustment_type         = "ChangeInCapacity"
    cooldown                = local.scale_out_cooldown
    metric_aggregation_type = "Maximum"

    step_adjustment {
      metric_interval_lower_bound = 0
      scaling_adjustment          = 1
    }
  }
}

resource "aws_appautoscaling_policy" "scale_out" {
  name               = "${local.name}-worker-scale-out"
  policy_type        = "StepScaling"
  service_namespace  = aws_appautoscaling_target.worker.service_namespace
  resource_id        = aws_appautoscaling_target.worker.resource_id
  scalable_dimension = aws_appautoscaling_target.worker.scalable_dimension

  step_scaling_policy_configuration {
    adjustment_type         = "ChangeInCapacity"
    cooldown                = local.scale_out_cooldown
    metric_aggregation_type = "Maximum"

    step_adjustment {
      metric_interval_lower_bound = 0
      scaling_adjustment          = 1
    }
  }
}

resource "aws_appautoscaling_policy" "to_zero" {
  name               = "${local.name}-worker-to-zero"
  policy_type        = "StepScaling"
  service_namespace  = aws_appautoscaling_target.worker.service_namespace
  resource_id        = aws_appautoscaling_target.worker.resource_id
  scalable_dimension = aws_appautoscaling_target.worker.scalable_dimension

  step_scaling_policy_configuration {
    adjustment_type         = "ExactCapacity"
    cooldown                = 60
    metric_aggregation_type = "Maximum"

    step_adjustment {
      metric_interval_upper_bound = 0
      scaling_adjustment          = 0
    }
  }
}

resource "aws_cloudwatch_metric_alarm" "work_waiting" {
  alarm_name          = "${local.name}-backfill-work-waiting"
  alarm_description   = "Messages wait in the backfill queue and no worker runs or starts: start one"
  comparison_operator = "GreaterThanThreshold"
  threshold           = 0
  # Two minutes: one minute's point of the task count may still be missing.
  evaluation_periods  = 2
  datapoints_to_alarm = 2
  # No data: nothing has been sent for hours, so nothing waits.
  treat_missing_data = "notBreaching"
  alarm_actions      = [aws_appautoscaling_policy.start.arn]
  tags               = var.tags

  metric_query {
    id          = "waiting_without_worker"
    expression  = "IF(${local.tasks} == 0, FILL(visible, 0), 0)"
    label       = "Messages visible while no worker runs or starts"
    return_data = true
  }

  dynamic "metric_query" {
    for_each = local.scaling_metrics
    content {
      id = metric_query.key
      metric {
        namespace   = metric_query.value.namespace
        metric_name = metric_query.value.metric_name
        dimensions  = metric_query.value.dimensions
        stat        = "Maximum"
        period      = 60
      }
    }
  }
}

resource "aws_cloudwatch_metric_alarm" "backlog_per_task" {
  alarm_name          = "${local.name}-backfill-backlog-per-task"
  alarm_description   = "More than ${var.messages_per_task} backfill messages (visible and in flight) per worker: add one"
  comparison_operator = "GreaterThanThreshold"
  threshold           = var.messages_per_task
  evaluation_periods  = 1
  treat_missing_data  = "notBreaching"
  alarm_actions       = [aws_appautoscaling_policy.scale_out.arn]
  tags                = var.tags

  metric_query {
    id          = "backlog_per_task"
    expression  = "IF(${local.tasks} > 0, (FILL(visible, 0) + FILL(in_flight, 0)) / ${local.tasks}, 0)"
    label       = "Messages visible or in flight per worker"
    return_data = true
  }

  dynamic "metric_query" {
    for_each = local.scaling_metrics
    content {
      id = metric_query.key
      metric {
        namespace   = metric_query.value.namespace
        metric_name = metric_query.value.metric_name
        dimensions  = metric_query.value.dimensions
        stat        = "Maximum"
        period      = 60
      }
    }
  }
}

resource "aws_cloudwatch_metric_alarm" "queue_idle" {
  alarm_name          = "${local.name}-backfill-idle"
  alarm_description   = "Workers run and nothing has been visible or in flight in the backfill queue for ${var.idle_minutes} minutes: scale the GPU workers to zero"
  comparison_operator = "LessThanOrEqualToThreshold"
  threshold           = 0
  evaluation_periods  = var.idle_minutes
  datapoints_to_alarm = var.idle_minutes
  # SQS stops reporting a queue nobody has used for hours: its missing counts are 0 (FILL). A
  # service without workers is not idle but done (1), so the alarm is OK at zero.
  treat_missing_data = "notBreaching"
  alarm_actions      = [aws_appautoscaling_policy.to_zero.arn]
  tags               = var.tags

  metric_query {
    id          = "backlog_while_working"
    expression  = "IF(${local.tasks} > 0, FILL(visible, 0) + FILL(in_flight, 0), 1)"
    label       = "Messages visible or in flight while workers run (1 with none)"
    return_data = true
  }

  dynamic "metric_query" {
    for_each = local.scaling_metrics
    content {
      id = metric_query.key
      metric {
        namespace   = metric_query.value.namespace
        metric_name = metric_query.value.metric_name
        dimensions  = metric_query.value.dimensions
        stat        = "Maximum"
        period      = 60
      }
    }
  }
}
