# The worker: `facedetect worker` (the image's entrypoint) on one GPU, reading the backfill
# queue; its service scales on the queue's depth, from zero to max_tasks and back to zero.

data "aws_ecr_repository" "worker" {
  name = var.repository_name
}

data "aws_ecr_image" "worker" {
  repository_name = data.aws_ecr_repository.worker.name
  image_tag       = var.image_tag
}

resource "aws_cloudwatch_log_group" "worker" {
  name              = "/ecs/${local.name}-worker"
  retention_in_days = var.log_retention_days
  # checkov:skip=CKV_AWS_158:CloudWatch Logs encrypts at rest with its own key; the worker never logs tokens or query strings, so a customer-managed KMS key adds cost without protecting anything more.
  # checkov:skip=CKV_AWS_338:Thirty days cover debugging a backfill; these are operational logs, not an audit trail.
  tags = var.tags
}

locals {
  # ECS sends SIGTERM, waits this long, then SIGKILL: above the worker's drain bound, so a
  # stopping worker finishes or releases its messages (a SIGKILL loses nothing either: the
  # messages come back when their visibility times out, only later).
  stop_timeout = var.worker_drain_seconds + 30
}

resource "aws_ecs_task_definition" "worker" {
  family                   = "${local.name}-worker"
  requires_compatibilities = ["EC2"]
  network_mode             = "bridge"
  execution_role_arn       = aws_iam_role.execution.arn
  task_role_arn            = aws_iam_role.task.arn

  container_definitions = jsonencode([
    {
      name      = "worker"
      image     = "${data.aws_ecr_repository.worker.repository_url}@${data.aws_ecr_image.worker.image_digest}"
      essential = true
      # The image's entrypoint is `facedetect worker`; the queue URL comes from the environment.
      command = [
        "--detector", var.detector,
        "--upsample", tostring(var.upsample),
        "--device", "cuda",
      ]
      environment = [
        { name = "FACEDETECT_QUEUE_URL", value = aws_sqs_queue.backfill.url },
        # Containers cannot reach the instance metadata (hop limit 1), so the region is given.
        { name = "AWS_REGION", value = var.aws_region },
        { name = "RUST_LOG", value = "info" },
      ]
      resourceRequirements   = [{ type = "GPU", value = "1" }]
      memoryReservation      = var.task_memory_reservation
      stopTimeout            = local.stop_timeout
      readonlyRootFilesystem = true
      linuxParameters        = { initProcessEnabled = true }
      logConfiguration = {
        logDriver = "awslogs"
        options = {
          awslogs-group         = aws_cloudwatch_log_group.worker.name
          awslogs-region        = var.aws_region
          awslogs-stream-prefix = "worker"
        }
      }
    }
  ])

  lifecycle {
    precondition {
      condition     = local.stop_timeout <= 120
      error_message = "ECS allows a stop timeout of at most 120 s: the worker's drain bound must be at most 90 s."
    }
  }

  tags = var.tags
}

resource "aws_ecs_service" "worker" {
  name            = "${local.name}-worker"
  cluster         = aws_ecs_cluster.this.id
  task_definition = aws_ecs_task_definition.worker.arn
  desired_count   = 0

  capacity_provider_strategy {
    capacity_provider = aws_ecs_capacity_provider.gpu.name
    weight            = 1
    base              = 0
  }

  # A new task definition replaces the workers one by one without a second GPU instance.
  deployment_minimum_healthy_percent = 0
  deployment_maximum_percent         = 100

  enable_ecs_managed_tags = true
  propagate_tags          = "SERVICE"
  tags                    = var.tags

  lifecycle {
    # The scaling policies below own the desired count.
    ignore_changes = [desired_count]
  }

  depends_on = [aws_ecs_cluster_capacity_providers.this]
}

resource "aws_appautoscaling_target" "worker" {
  service_namespace  = "ecs"
  resource_id        = "service/${aws_ecs_cluster.this.name}/${aws_ecs_service.worker.name}"
  scalable_dimension = "ecs:service:DesiredCount"
  min_capacity       = 0
  max_capacity       = var.max_tasks
}

# Work waiting: one worker per messages_per_task visible messages, at most max_tasks. Step
# bounds are relative to the alarm's threshold of 1 message.
resource "aws_appautoscaling_policy" "scale_out" {
  name               = "${local.name}-worker-scale-out"
  policy_type        = "StepScaling"
  service_namespace  = aws_appautoscaling_target.worker.service_namespace
  resource_id        = aws_appautoscaling_target.worker.resource_id
  scalable_dimension = aws_appautoscaling_target.worker.scalable_dimension

  step_scaling_policy_configuration {
    adjustment_type         = "ExactCapacity"
    cooldown                = 60
    metric_aggregation_type = "Maximum"

    dynamic "step_adjustment" {
      for_each = range(1, var.max_tasks + 1)
      content {
        metric_interval_lower_bound = (step_adjustment.value - 1) * var.messages_per_task
        metric_interval_upper_bound = step_adjustment.value == var.max_tasks ? null : step_adjustment.value * var.messages_per_task
        scaling_adjustment          = step_adjustment.value
      }
    }
  }
}

# Nothing visible and nothing in flight for idle_minutes: no worker, and then no GPU instance.
resource "aws_appautoscaling_policy" "scale_in" {
  name               = "${local.name}-worker-scale-in"
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
  alarm_description   = "Messages wait in the backfill queue: scale the GPU workers out"
  namespace           = "AWS/SQS"
  metric_name         = "ApproximateNumberOfMessagesVisible"
  dimensions          = { QueueName = aws_sqs_queue.backfill.name }
  statistic           = "Maximum"
  period              = 60
  evaluation_periods  = 1
  threshold           = 1
  comparison_operator = "GreaterThanOrEqualToThreshold"
  treat_missing_data  = "notBreaching"
  alarm_actions       = [aws_appautoscaling_policy.scale_out.arn]
  tags                = var.tags
}

resource "aws_cloudwatch_metric_alarm" "queue_idle" {
  alarm_name          = "${local.name}-backfill-idle"
  alarm_description   = "The backfill queue is empty, nothing in flight: scale the GPU workers to zero"
  comparison_operator = "LessThanOrEqualToThreshold"
  threshold           = 0
  evaluation_periods  = var.idle_minutes
  # An idle queue stops reporting metrics; that counts as empty.
  treat_missing_data = "breaching"
  alarm_actions      = [aws_appautoscaling_policy.scale_in.arn]
  tags               = var.tags

  metric_query {
    id          = "depth"
    expression  = "visible + in_flight"
    label       = "Messages visible or in flight"
    return_data = true
  }

  metric_query {
    id = "visible"
    metric {
      namespace   = "AWS/SQS"
      metric_name = "ApproximateNumberOfMessagesVisible"
      dimensions  = { QueueName = aws_sqs_queue.backfill.name }
      stat        = "Maximum"
      period      = 60
    }
  }

  metric_query {
    id = "in_flight"
    metric {
      namespace   = "AWS/SQS"
      metric_name = "ApproximateNumberOfMessagesNotVisible"
      dimensions  = { QueueName = aws_sqs_queue.backfill.name }
      stat        = "Maximum"
      period      = 60
    }
  }
}
