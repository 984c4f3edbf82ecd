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
  # Measured (README, "Cost and capacity"): a 1200x900 album photo takes 0.38 s of one core
  # (HOG, single-threaded; 0.33 s through the whole service), and a 20-photo invocation peaks
  # at 217 MB resident. Memory therefore only buys CPU, and CPU-bound work costs the same
  # GB-seconds at any size (0.66 GB-s, $0.011 per 1000 photos): at 2048 MB (1.16 vCPU) a
  # 20-photo batch takes about 7 s instead of 26 s at the original's 512 MB, with ample room.
  default = 2048
}

variable "timeout" {
  description = "Seconds an invocation may run: a 20-photo batch takes about 7 s of CPU at the default memory; the rest covers the service's worst-case retries of one source (4 downloads of 15 s, 4 callbacks of 30 s, with backoff)"
  type        = number
  default     = 300
}

variable "reserved_concurrency" {
  description = "The most instances at once; bounds the load on concrexit and the cost of a burst of uploads"
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
  description = "The most instances the queue may occupy at once (at least 2), leaving the rest of the reserved concurrency to live uploads"
  type        = number
  default     = 2
}

variable "tags" {
  description = "Tags for every resource"
  type        = map(string)
}
