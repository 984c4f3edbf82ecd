variable "stage" {
  description = "Deployment stage for resource names"
  type        = string
}

variable "aws_region" {
  description = "Region of the function"
  type        = string
}

variable "repository_name" {
  description = "ECR repository holding the Lambda image (Dockerfile.cpu)"
  type        = string
}

variable "image_tag" {
  description = "Tag of the image to deploy; the function pins the digest the tag points to at apply time"
  type        = string
}

variable "memory_size" {
  description = "Memory in MB; Lambda's CPU share grows with it (1769 MB is one vCPU). See the README's cost section for the measurements behind the default."
  type        = number
  # The README's cost table (scripts/cost-table, from the committed bench results) gives the
  # time per photo and the cost at several sizes: the work is CPU-bound, so every size costs
  # about the same GB-seconds per photo and memory buys latency; 2048 MB (1.16 vCPU, two
  # threads) runs a 20-photo batch in a few seconds, with many times its peak memory to spare.
  default = 2048
}

variable "timeout" {
  description = "Seconds an invocation may run: a 20-photo batch takes a few seconds of CPU at the default memory (README, cost table); the rest covers the service's worst-case retries of one source (4 downloads of 15 s, 4 callbacks of 30 s, with backoff)"
  type        = number
  default     = 300
}

variable "sentry_dsn" {
  description = "Sentry DSN the function reports to (SENTRY_DSN), as the original's; null for none"
  type        = string
  default     = null
  sensitive   = true
}

variable "reserved_concurrency" {
  description = "The most instances at once; bounds the load on concrexit and the cost of a burst of uploads. Live uploads and, with event_source, the backfill queue share it"
  type        = number
}

variable "maximum_retry_attempts" {
  description = "Retries of a failed asynchronous invocation (0-2); a retry re-posts nothing twice, concrexit answers 'not processing' for delivered sources"
  type        = number
  default     = 2
}

variable "maximum_event_age" {
  description = "Seconds an asynchronous event may wait (for concurrency or between retries) before it goes to the on-failure destination"
  type        = number
  default     = 21600
}

variable "log_retention_days" {
  description = "Days the function's logs are kept"
  type        = number
  default     = 30
}

variable "failure_retention_seconds" {
  description = "How long failed invocations stay in the on-failure queue"
  type        = number
  default     = 1209600
}

variable "alarm_topic_arn" {
  description = "SNS topic notified by the alarms"
  type        = string
}

variable "event_source" {
  description = "Also consume this queue (the backfill queue) with ReportBatchItemFailures, so a backfill can run on Lambda without GPUs; null for none"
  type = object({
    arn                = string
    visibility_timeout = number
  })
  default = null
}

variable "event_source_max_concurrency" {
  description = "The most instances the backfill queue (event_source) may occupy at once; with min_live_concurrency it must fit in reserved_concurrency, so that live uploads are never starved"
  type        = number
  default     = 2

  validation {
    # SQS event source mappings accept a maximum concurrency of 2 to 1000.
    condition     = var.event_source_max_concurrency >= 2 && var.event_source_max_concurrency <= 1000
    error_message = "event_source_max_concurrency must be between 2 and 1000 (the limits of an SQS event source mapping)."
  }
}

variable "min_live_concurrency" {
  description = "Instances of reserved_concurrency that the backfill queue never takes: live uploads always have at least these"
  type        = number
  default     = 1

  validation {
    condition     = var.min_live_concurrency >= 1
    error_message = "min_live_concurrency must be at least 1, or a backfill on Lambda could hold every instance while uploads wait."
  }
}

variable "tags" {
  description = "Tags for every resource"
  type        = map(string)
}
