# The Lambda function for live uploads: concrexit invokes it asynchronously with the original's
# payload. Asynchronous invocations that still fail after Lambda's retries land, with their
# payload, in an SQS queue (the on-failure destination) that raises an alarm; optionally the
# function also consumes the backfill queue.

locals {
  function_name = "concrexit-${var.stage}-facedetection-lambda"
  log_group     = "/aws/lambda/${local.function_name}"
}

data "aws_ecr_repository" "this" {
  name = var.repository_name
}

data "aws_ecr_image" "this" {
  repository_name = data.aws_ecr_repository.this.name
  image_tag       = var.image_tag
}

resource "aws_cloudwatch_log_group" "this" {
  name              = local.log_group
  retention_in_days = var.log_retention_days
  # checkov:skip=CKV_AWS_158:CloudWatch Logs encrypts at rest with its own key; the service never logs tokens or query strings, so a customer-managed KMS key adds cost without protecting anything more.
  # checkov:skip=CKV_AWS_338:Thirty days cover debugging a failed upload; these are operational logs, not an audit trail.
  tags = var.tags
}

resource "aws_sqs_queue" "failed" {
  name                      = "concrexit-${var.stage}-facedetection-failed-invocations"
  message_retention_seconds = var.failure_retention_seconds
  sqs_managed_sse_enabled   = true
  tags                      = var.tags
}

data "aws_iam_policy_document" "assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["lambda.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "this" {
  name               = "concrexit-${var.stage}-facedetection-lambda-role"
  assume_role_policy = data.aws_iam_policy_document.assume.json
  tags               = var.tags
}

data "aws_iam_policy_document" "this" {
  statement {
    sid       = "Logs"
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents"]
    resources = ["${aws_cloudwatch_log_group.this.arn}:*"]
  }

  # Lambda delivers the on-failure record with the function's role.
  statement {
    sid       = "OnFailureDestination"
    actions   = ["sqs:SendMessage"]
    resources = [aws_sqs_queue.failed.arn]
  }

  dynamic "statement" {
    for_each = var.event_source == null ? [] : [var.event_source.arn]
    content {
      sid = "BackfillQueue"
      actions = [
        "sqs:ChangeMessageVisibility",
        "sqs:DeleteMessage",
        "sqs:GetQueueAttributes",
        "sqs:ReceiveMessage",
      ]
      resources = [statement.value]
    }
  }
}

resource "aws_iam_role_policy" "this" {
  name   = "facedetection-lambda"
  role   = aws_iam_role.this.id
  policy = data.aws_iam_policy_document.this.json
}

resource "aws_lambda_function" "this" {
  function_name = local.function_name
  description   = "concrexit face detection: encodes the faces of uploaded photos"
  role          = aws_iam_role.this.arn

  package_type  = "Image"
  image_uri     = "${data.aws_ecr_repository.this.repository_url}@${data.aws_ecr_image.this.image_digest}"
  architectures = ["x86_64"]

  memory_size                    = var.memory_size
  timeout                        = var.timeout
  reserved_concurrent_executions = var.reserved_concurrency

  # Failed sources, panics and invocations near their timeout go to Sentry, as the original's
  # did (its SENTRY_DSN and SENTRY_ENVIRONMENT = stage).
  environment {
    variables = merge(
      { RUST_LOG = "info", SENTRY_ENVIRONMENT = var.stage },
      var.sentry_dsn == null ? {} : { SENTRY_DSN = var.sentry_dsn },
    )
  }

  # checkov:skip=CKV_AWS_116:Failed asynchronous invocations go to the on-failure destination below, which records the payload and the error; a dead-letter config as well would store every failure twice.
  # checkov:skip=CKV_AWS_117:The function only talks to concrexit over the internet; inside a VPC it would need a NAT gateway, which costs more than the function.
  # checkov:skip=CKV_AWS_173:The environment's only credential is the Sentry DSN, which lets its holder send events and nothing else (Sentry treats DSNs as public); Lambda encrypts it at rest with its own key.
  # checkov:skip=CKV_AWS_272:Code signing is not available for container images; images are pinned by digest.
  # checkov:skip=CKV_AWS_50:The binary emits no X-Ray segments; its JSON logs carry each stage's timing.

  tags = var.tags

  depends_on = [aws_cloudwatch_log_group.this, aws_iam_role_policy.this]
}

resource "aws_lambda_function_event_invoke_config" "this" {
  function_name                = aws_lambda_function.this.function_name
  maximum_retry_attempts       = var.maximum_retry_attempts
  maximum_event_age_in_seconds = var.maximum_event_age

  destination_config {
    on_failure {
      destination = aws_sqs_queue.failed.arn
    }
  }
}

resource "aws_lambda_event_source_mapping" "backfill" {
  count = var.event_source == null ? 0 : 1

  event_source_arn = var.event_source.arn
  function_name    = aws_lambda_function.this.arn
  # One message (up to 20 sources) per invocation keeps an invocation's work within the timeout.
  batch_size              = 1
  function_response_types = ["ReportBatchItemFailures"]

  scaling_config {
    maximum_concurrency = var.event_source_max_concurrency
  }

  lifecycle {
    # Both share the function's reserved concurrency: the queue's share must leave live uploads
    # their minimum, or a backfill throttles every upload until it is done.
    precondition {
      condition     = var.event_source_max_concurrency + var.min_live_concurrency <= var.reserved_concurrency
      error_message = "The backfill queue may occupy ${var.event_source_max_concurrency} instances (event_source_max_concurrency) and live uploads need ${var.min_live_concurrency} (min_live_concurrency), more than the function's reserved concurrency of ${var.reserved_concurrency}: raise reserved_concurrency or lower event_source_max_concurrency (at least 2)."
    }

    # AWS asks for at least 6 times the function's timeout on a queue an event source mapping
    # reads: the mapping retries throttled invocations within the visibility timeout, and a
    # message must not be handed out again while the function still works on it.
    precondition {
      condition     = var.event_source.visibility_timeout >= 6 * var.timeout
      error_message = "The queue's visibility timeout (${var.event_source.visibility_timeout} s) must be at least 6 times the function's timeout (${6 * var.timeout} s), as AWS asks for a queue that a function consumes."
    }
  }
}

resource "aws_cloudwatch_metric_alarm" "errors" {
  alarm_name          = "${local.function_name}-errors"
  alarm_description   = "The face detection function failed (invalid payload or a source that could not be processed); see its logs"
  namespace           = "AWS/Lambda"
  metric_name         = "Errors"
  dimensions          = { FunctionName = aws_lambda_function.this.function_name }
  statistic           = "Sum"
  period              = 300
  evaluation_periods  = 1
  threshold           = 0
  comparison_operator = "GreaterThanThreshold"
  treat_missing_data  = "notBreaching"
  alarm_actions       = [var.alarm_topic_arn]
  ok_actions          = [var.alarm_topic_arn]
  tags                = var.tags
}

resource "aws_cloudwatch_metric_alarm" "failed" {
  alarm_name          = "${aws_sqs_queue.failed.name}-not-empty"
  alarm_description   = "Invocations failed after every retry; their payloads wait in the queue for a look and a re-run"
  namespace           = "AWS/SQS"
  metric_name         = "ApproximateNumberOfMessagesVisible"
  dimensions          = { QueueName = aws_sqs_queue.failed.name }
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
