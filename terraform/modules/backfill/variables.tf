variable "stage" {
  description = "Deployment stage for resource names"
  type        = string
}

variable "visibility_timeout" {
  description = "Seconds a received message stays invisible. The GPU worker extends it with heartbeats while it works, so for it this bounds how long the messages of a killed worker stay hidden; where the Lambda function consumes the queue (backfill_on_lambda) AWS asks for at least 6 times the function's timeout"
  type        = number
  default     = 900
  # A stage passes null for the default.
  nullable = false
}

variable "max_receive_count" {
  description = "Receives before a message moves to the dead-letter queue"
  type        = number
  default     = 5
}

variable "stuck_after_seconds" {
  description = "Age of the oldest message above which, with nothing received for as long as the alarm looks, the backlog counts as stuck (no consumer: GPU workers off or unable to start, backfill_on_lambda off) and the alarm topic hears of it; a backfill being worked on receives messages all the time and never trips it"
  type        = number
  default     = 3600
}

variable "alarm_topic_arn" {
  description = "SNS topic notified by the alarms"
  type        = string
}

variable "tags" {
  description = "Tags for every resource"
  type        = map(string)
}
