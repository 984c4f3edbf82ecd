variable "stage" {
  description = "Deployment stage for resource names"
  type        = string
}

variable "aws_region" {
  description = "Region of the cluster"
  type        = string
}

variable "queue" {
  description = "The backfill queue the workers consume (module backfill's outputs)"
  type = object({
    url  = string
    arn  = string
    name = string
  })
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
  description = "GPU instance type, of a family the worker image runs on (g5: A10G; g6, gr6: L4; g6e: L40S); its vCPUs times max_tasks must fit the account's G and VT vCPU quota"
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

variable "other_stages_gpu_vcpus" {
  description = "vCPUs of the same G and VT quota that the region's other stages may use (their max_tasks x their instance type's vCPUs): the quota is per region, so this stage's check counts them too"
  type        = number
  default     = 0

  validation {
    condition     = var.other_stages_gpu_vcpus >= 0
    error_message = "other_stages_gpu_vcpus is a number of vCPUs, 0 or more."
  }
}

variable "read_only_root_filesystem" {
  description = "Run the worker's container with a read-only root file system (its writable paths are a tmpfs); turn it off only if the NVIDIA container hooks fail on the read-only root (the task then stops at start with an error from nvidia-container-cli)"
  type        = bool
  default     = true
}

variable "sentry_dsn" {
  description = "Sentry DSN the worker reports failed sources and panics to (SENTRY_DSN); null for none"
  type        = string
  default     = null
  sensitive   = true
}

variable "messages_per_task" {
  description = "Backlog (messages visible and in flight) per worker above which the service adds one, up to max_tasks (each message holds up to 20 sources)"
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

variable "task_memory" {
  description = "MiB of host memory the worker's container may use (its hard limit). The worker's own budget, FACEDETECT_MEMORY_MB, is derived from it. g6.xlarge has 16 GiB, of which the system and the ECS agent keep about 1 GiB"
  type        = number
  default     = 14336

  validation {
    condition     = var.task_memory >= 2048
    error_message = "task_memory must be at least 2048 MiB: the models, the CUDA context and a batch of photos need it."
  }
}

variable "memory_budget_percent" {
  description = "Share of task_memory, in percent, that the worker admits photos against (FACEDETECT_MEMORY_MB); the rest covers what its budget does not count (allocator fragmentation, the CUDA driver's host allocations after start), so that the container's hard limit is never reached"
  type        = number
  default     = 90

  validation {
    condition     = var.memory_budget_percent > 0 && var.memory_budget_percent <= 100
    error_message = "memory_budget_percent is a percentage (1-100)."
  }
}

variable "device_memory_mb" {
  description = "MiB of GPU memory the worker may use (FACEDETECT_DEVICE_MEMORY_MB); null for memory_budget_percent of the instance type's GPU memory"
  type        = number
  default     = null
}

variable "image_compute_capability" {
  description = "The CUDA compute capability the worker image's kernels are built for (Dockerfile.cuda's CUDA_COMPUTE_CAP, as PTX that the driver compiles for any GPU at or above it); the instance type's GPU must have at least this"
  type        = number
  default     = 80
}

variable "root_volume_size" {
  description = "GiB of the instances' root volume (the CUDA image is several GB)"
  type        = number
  default     = 60
}

variable "worker_drain_seconds" {
  description = "The worker's bound for finishing or releasing its messages after SIGTERM (facedetect worker); the task's stop timeout is set above it"
  type        = number
  default     = 90
}

variable "vpc_id" {
  description = "VPC of the GPU instances (no default VPC is assumed)"
  type        = string
  default     = null

  validation {
    condition     = var.vpc_id != null && can(regex("^vpc-[0-9a-f]{8,17}$", var.vpc_id))
    error_message = "vpc_id is not set or not a VPC ID (vpc-...): give the VPC of the GPU instances, e.g. -var backfill_vpc_id=vpc-0123456789abcdef0 on the stage (aws ec2 describe-vpcs --query 'Vpcs[].[VpcId,IsDefault,Tags]' lists them)."
  }
}

variable "subnet_ids" {
  description = "Subnets of the GPU instances, in vpc_id: public subnets with assign_public_ip, or private ones behind a NAT gateway"
  type        = list(string)
  default     = null

  validation {
    condition     = var.subnet_ids != null && try(length(var.subnet_ids) > 0 && alltrue([for id in var.subnet_ids : can(regex("^subnet-[0-9a-f]{8,17}$", id))]), false)
    error_message = "subnet_ids is not set, empty, or holds something that is not a subnet ID (subnet-...): give at least one subnet of vpc_id, e.g. -var 'backfill_subnet_ids=[\"subnet-0123456789abcdef0\"]' on the stage (aws ec2 describe-subnets --filters Name=vpc-id,Values=VPC_ID lists them)."
  }
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
