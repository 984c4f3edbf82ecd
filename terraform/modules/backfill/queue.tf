# The backfill queue: each message is one payload exactly as the Lambda function takes it
# (`facedetect enqueue` splits large payloads into messages of at most 20 sources). A message
# that keeps failing moves to the dead-letter queue after max_receive_count receives. The queue
# needs no GPU and no VPC: the GPU workers (module gpu_workers) or the Lambda function
# (backfill_on_lambda) consume it, whichever the stage turns on.

locals {
  name = "concrexit-${var.stage}-facedetection"
}

resource "aws_sqs_queue" "dead_letter" {
  name = "${local.name}-backfill-dlq"
  # Longer than the queue's retention: a standard queue keeps a message's original enqueue time
  # when it moves, so the dead-letter queue must keep it longer than the queue did.
  message_retention_seconds = 1209600
  sqs_managed_sse_enabled   = true
  tags                      = var.tags
}

resource "aws_sqs_queue" "backfill" {
  name                       = "${local.name}-backfill"
  visibility_timeout_seconds = var.visibility_timeout
  message_retention_seconds  = 345600
  receive_wait_time_seconds  = 20
  sqs_managed_sse_enabled    = true

  redrive_policy = jsonencode({
    deadLetterTargetArn = aws_sqs_queue.dead_letter.arn
    maxReceiveCount     = var.max_receive_count
  })

  tags = var.tags
}

resource "aws_sqs_queue_redrive_allow_policy" "dead_letter" {
  queue_url = aws_sqs_queue.dead_letter.id
  redrive_allow_policy = jsonencode({
    redrivePermission = "byQueue"
    sourceQueueArns   = [aws_sqs_queue.backfill.arn]
  })
}
