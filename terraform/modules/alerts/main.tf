# Where the stage's alarms go: an SNS topic, with an optional e-mail subscription.

resource "aws_sns_topic" "this" {
  name = "concrexit-${var.stage}-facedetection-alarms"
  # checkov:skip=CKV_AWS_26:CloudWatch alarms cannot publish to a topic encrypted with the AWS-managed SNS key, and alarm messages carry no secrets (metric names and thresholds).
  tags = var.tags
}

resource "aws_sns_topic_subscription" "email" {
  count = var.email == null ? 0 : 1

  topic_arn = aws_sns_topic.this.arn
  protocol  = "email"
  endpoint  = var.email
}
