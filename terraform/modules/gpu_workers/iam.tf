# Three roles, each with only what it uses: the instances' (the ECS agent), the task execution
# role (pull the worker image, write its logs) and the task role (the worker's queue access).

data "aws_caller_identity" "current" {}

data "aws_partition" "current" {}

locals {
  ecs_arn_prefix = "arn:${data.aws_partition.current.partition}:ecs:${var.aws_region}:${data.aws_caller_identity.current.account_id}"
}

data "aws_iam_policy_document" "ec2_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["ec2.amazonaws.com"]
    }
  }
}

data "aws_iam_policy_document" "ecs_tasks_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["ecs-tasks.amazonaws.com"]
    }
    condition {
      test     = "ArnLike"
      variable = "aws:SourceArn"
      values   = ["${local.ecs_arn_prefix}:*"]
    }
    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [data.aws_caller_identity.current.account_id]
    }
  }
}

# The ECS agent on the instances: what AmazonEC2ContainerServiceforEC2Role grants for the agent,
# scoped to this cluster, without its ECR and log permissions on "*" (the task execution role
# pulls the image and writes the logs).
resource "aws_iam_role" "instance" {
  name               = "${local.name}-gpu-instance"
  assume_role_policy = data.aws_iam_policy_document.ec2_assume.json
  tags               = var.tags
}

data "aws_iam_policy_document" "instance" {
  statement {
    sid = "Cluster"
    actions = [
      "ecs:DeregisterContainerInstance",
      "ecs:RegisterContainerInstance",
      "ecs:SubmitAttachmentStateChanges",
      "ecs:SubmitContainerStateChange",
      "ecs:SubmitTaskStateChange",
    ]
    resources = [aws_ecs_cluster.this.arn]
  }

  # Spot draining (ECS_ENABLE_SPOT_INSTANCE_DRAINING): on an interruption notice the agent sets
  # its own container instance to DRAINING. UpdateContainerInstancesState acts on container
  # instances, not on the cluster, so it needs their ARNs (a statement naming only the cluster
  # lets the call fail with AccessDenied); ecs:cluster keeps it to this cluster's instances.
  statement {
    sid       = "SpotDraining"
    actions   = ["ecs:UpdateContainerInstancesState"]
    resources = ["${local.ecs_arn_prefix}:container-instance/${aws_ecs_cluster.this.name}/*"]
    condition {
      test     = "ArnEquals"
      variable = "ecs:cluster"
      values   = [aws_ecs_cluster.this.arn]
    }
  }

  statement {
    sid       = "ContainerInstances"
    actions   = ["ecs:Poll", "ecs:StartTelemetrySession"]
    resources = ["${local.ecs_arn_prefix}:container-instance/${aws_ecs_cluster.this.name}/*"]
  }

  # The agent reads the tags of its cluster and container instances (what
  # AmazonEC2ContainerServiceforEC2Role grants on "*").
  statement {
    sid     = "Tags"
    actions = ["ecs:ListTagsForResource"]
    resources = [
      aws_ecs_cluster.this.arn,
      "${local.ecs_arn_prefix}:container-instance/${aws_ecs_cluster.this.name}/*",
    ]
  }

  # DiscoverPollEndpoint has no resource-level permissions.
  statement {
    sid       = "DiscoverPollEndpoint"
    actions   = ["ecs:DiscoverPollEndpoint"]
    resources = ["*"]
  }
}

resource "aws_iam_role_policy" "instance" {
  name   = "ecs-agent"
  role   = aws_iam_role.instance.id
  policy = data.aws_iam_policy_document.instance.json
}

resource "aws_iam_instance_profile" "instance" {
  name = "${local.name}-gpu-instance"
  role = aws_iam_role.instance.name
  tags = var.tags
}

resource "aws_iam_role" "execution" {
  name               = "${local.name}-worker-execution"
  assume_role_policy = data.aws_iam_policy_document.ecs_tasks_assume.json
  tags               = var.tags
}

data "aws_iam_policy_document" "execution" {
  # GetAuthorizationToken has no resource-level permissions: AWS accepts only "*" for it. The
  # token grants nothing by itself; the next statement limits what can be pulled.
  statement {
    sid       = "RegistryLogin"
    actions   = ["ecr:GetAuthorizationToken"]
    resources = ["*"]
  }

  statement {
    sid = "PullWorkerImage"
    actions = [
      "ecr:BatchCheckLayerAvailability",
      "ecr:BatchGetImage",
      "ecr:GetDownloadUrlForLayer",
    ]
    resources = [data.aws_ecr_repository.worker.arn]
  }

  statement {
    sid       = "WorkerLogs"
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents"]
    resources = ["${aws_cloudwatch_log_group.worker.arn}:*"]
  }
}

resource "aws_iam_role_policy" "execution" {
  name   = "pull-and-log"
  role   = aws_iam_role.execution.id
  policy = data.aws_iam_policy_document.execution.json
}

resource "aws_iam_role" "task" {
  name               = "${local.name}-worker-task"
  assume_role_policy = data.aws_iam_policy_document.ecs_tasks_assume.json
  tags               = var.tags
}

data "aws_iam_policy_document" "task" {
  statement {
    sid = "BackfillQueue"
    actions = [
      "sqs:ChangeMessageVisibility",
      "sqs:DeleteMessage",
      "sqs:GetQueueAttributes",
      "sqs:ReceiveMessage",
    ]
    resources = [var.queue.arn]
  }
}

resource "aws_iam_role_policy" "task" {
  name   = "backfill-queue"
  role   = aws_iam_role.task.id
  policy = data.aws_iam_policy_document.task.json
}
