# The worker: `facedetect worker` (the image's entrypoint) on one GPU, reading the backfill
# queue; its service scales on the backlog (scaling.tf), from zero to max_tasks and back to zero.

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

  # The worker admits photos against FACEDETECT_MEMORY_MB (its default, 2048, suits a Lambda
  # function, not a 16 GiB instance): a share of the container's hard limit. Likewise the GPU
  # memory (FACEDETECT_DEVICE_MEMORY_MB): a share of one GPU of the instance type.
  worker_memory_mb = floor(var.task_memory * var.memory_budget_percent / 100)
  gpu_memory_mb    = try(max([for gpu in data.aws_ec2_instance_type.gpu.gpus : gpu.memory_size]...), 0)
  device_memory_mb = coalesce(var.device_memory_mb, floor(local.gpu_memory_mb * var.memory_budget_percent / 100))

  # The image's CUDA_CACHE_PATH (Dockerfile.cuda) lies under this tmpfs: the driver compiles
  # candle's PTX kernels when it loads them and caches the result there, which a read-only root
  # file system would refuse. Docker creates a tmpfs with mode 1777, so the non-root user can
  # write it; its pages count against the container's memory, and CUDA_CACHE_MAXSIZE bounds
  # the cache below its size.
  tmpfs_path    = "/tmp"
  tmpfs_size_mb = 512
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
        { name = "FACEDETECT_QUEUE_URL", value = var.queue.url },
        { name = "FACEDETECT_MEMORY_MB", value = tostring(local.worker_memory_mb) },
        { name = "FACEDETECT_DEVICE_MEMORY_MB", value = tostring(local.device_memory_mb) },
        # Containers cannot reach the instance metadata (hop limit 1), so the region is given.
        { name = "AWS_REGION", value = var.aws_region },
        { name = "RUST_LOG", value = "info" },
        # Failed sources and panics go to Sentry, as the function's do (an empty DSN: none).
        { name = "SENTRY_ENVIRONMENT", value = var.stage },
        { name = "SENTRY_DSN", value = var.sentry_dsn == null ? "" : var.sentry_dsn },
      ]
      resourceRequirements   = [{ type = "GPU", value = "1" }]
      memory                 = var.task_memory
      stopTimeout            = local.stop_timeout
      readonlyRootFilesystem = var.read_only_root_filesystem
      linuxParameters = {
        initProcessEnabled = true
        tmpfs              = [{ containerPath = local.tmpfs_path, size = local.tmpfs_size_mb }]
      }
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

    # The system and the ECS agent keep about 1 GiB of an instance; a task asking for more than
    # the rest is never placed, and the service waits for capacity forever.
    precondition {
      condition     = var.task_memory <= data.aws_ec2_instance_type.gpu.memory_size - 1024
      error_message = "task_memory (${var.task_memory} MiB) does not fit on a ${var.instance_type} (${data.aws_ec2_instance_type.gpu.memory_size} MiB, of which about 1024 MiB stay with the system and the ECS agent)."
    }

    precondition {
      condition     = local.device_memory_mb > 0 && local.device_memory_mb <= local.gpu_memory_mb
      error_message = "device_memory_mb (${local.device_memory_mb}) must be positive and at most the memory of one GPU of a ${var.instance_type} (${local.gpu_memory_mb} MiB)."
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

