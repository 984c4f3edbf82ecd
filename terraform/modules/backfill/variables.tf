variable "stage" {
  description = "Deployment stage for resource names"
  type        = string
}

variable "aws_region" {
  description = "Region of the cluster"
  type        = string
}

variable "repository_name" {
  description = "ECR repository holding the worker image (Dockerfile.cuda)"
  type        = string
}

variable "image_tag" {
  description = "Tag of the worker image; the task definition pins the digest the tag points to at apply time"
  type        = string
}

variable "instance_type" {
  description = "GPU instance type; the image's CUDA_COMPUTE_CAP must suit its GPU (g6: L4, 89; g5: A10G, 86; p4d: A100, 80)"
  type        = string
  default     = "g6.xlarge"
}

variable "spot" {
  description = "Run the GPU instances as spot instances: the worker loses nothing when stopped or killed, since unfinished messages come back to the queue"
  type        = bool
  default     = false
}

variable "max_tasks" {
  description = "The most workers (one GPU instance each) at once"
  type        = number
  default     = 1
}

variable "messages_per_task" {
  description = "Visible messages per running worker that make the service add one (each message holds up to 20 sources)"
  type        = number
  default     = 500
}

variable "idle_minutes" {
  description = "Minutes the queue must be empty (nothing visible, nothing in flight) before the service scales to zero"
  type        = number
  default     = 15
}

variable "detector" {
  description = "Face detector of the worker: hog (as the Lambda function and the original) or cnn"
  type        = string
  default     = "hog"

  validation {
    condition     = contains(["hog", "cnn"], var.detector)
    error_message = "detector is hog or cnn."
  }
}

variable "upsample" {
  description = "Times the worker doubles each photo before detection (the original: 1)"
  type        = number
  default     = 1
}

variable "task_memory_reservation" {
  description = "MiB of host memory reserved for the worker (soft limit; g6.xlarge has 16 GiB)"
  type        = number
  default     = 8192
}

variable "root_volume_size" {
  description = "GiB of the instances' root volume (the CUDA image is several GB)"
  type        = number
  default     = 60
}

variable "visibility_timeout" {
  description = "Seconds a received message stays invisible; the worker extends it with heartbeats while it works, so this bounds how long the messages of a killed worker stay hidden"
  type        = number
  default     = 900
}

variable "max_receive_count" {
  description = "Receives before a message moves to the dead-letter queue"
  type        = number
  default     = 5
}

variable "worker_drain_seconds" {
  description = "The worker's bound for finishing or releasing its messages after SIGTERM (facedetect worker); the task's stop timeout is set above it"
  type        = number
  default     = 90
}

variable "vpc_id" {
  description = "VPC of the GPU instances; null for the account's default VPC"
  type        = string
  default     = null
}

variable "subnet_ids" {
  description = "Subnets of the GPU instances; null for every subnet of the VPC"
  type        = list(string)
  default     = null
}

variable "assign_public_ip" {
  description = "Give the instances a public address (needed without a NAT gateway: they reach ECR, SQS, CloudWatch and concrexit over the internet)"
  type        = bool
  default     = true
}

variable "log_retention_days" {
  description = "Days the worker's logs are kept"
  type        = number
  default     = 30
}

variable "alarm_topic_arn" {
  description = "SNS topic notified by the alarms"
  type        = string
}

variable "tags" {
  description = "Tags for every resource"
  type        = map(string)
}
