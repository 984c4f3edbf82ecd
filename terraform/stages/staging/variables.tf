variable "aws_profile" {
  description = "AWS CLI profile with the credentials to deploy"
  type        = string
  default     = "thalia"
}

variable "aws_region" {
  description = "AWS region to deploy to"
  type        = string
  default     = "eu-west-1"
}

variable "lambda_image_tag" {
  description = "Tag of the Lambda image (Dockerfile.cpu) to deploy: latest, or sha-<commit> to pin a build"
  type        = string
  default     = "latest"
}

variable "worker_image_tag" {
  description = "Tag of the GPU worker image (Dockerfile.cuda) to deploy: latest, or sha-<commit> to pin a build"
  type        = string
  default     = "latest"
}

variable "alarm_email" {
  description = "Address that receives the alarms; null for none (the SNS topic can be subscribed to later)"
  type        = string
  default     = null
}

variable "sentry_dsn" {
  description = "Sentry DSN for error reporting (the original's variable); null to report nothing"
  type        = string
  default     = null
  sensitive   = true
}

variable "gpu_workers" {
  description = "Run the backfill's GPU workers (ECS on GPU instances): needs the G and VT vCPU quota, backfill_vpc_id and backfill_subnet_ids. Off, the stage has the function and the backfill queue only"
  type        = bool
  default     = false
}

variable "other_stages_gpu_vcpus" {
  description = "vCPUs of the region's G and VT quota that the other stages' GPU workers may take: 8 for production (2 x g6.xlarge); 0 where its gpu_workers is off"
  type        = number
  default     = 8
}

variable "worker_read_only_root_filesystem" {
  description = "Run the GPU worker's container with a read-only root file system; false only if the NVIDIA container hooks fail on it"
  type        = bool
  default     = true
}

variable "spot_workers" {
  description = "Run the GPU workers on spot instances"
  type        = bool
  default     = false
}

variable "backfill_on_lambda" {
  description = "Let the Lambda function consume the backfill queue as well (a backfill without GPU instances: gpu_workers off)"
  type        = bool
  default     = false
}

variable "backfill_vpc_id" {
  description = "VPC of the GPU workers (required with gpu_workers; no default VPC is assumed)"
  type        = string
  default     = null
}

variable "backfill_subnet_ids" {
  description = "Subnets of the GPU workers in backfill_vpc_id (required with gpu_workers): public ones (the instances get a public address), or private ones behind a NAT gateway"
  type        = list(string)
  default     = null
}

variable "backfill_assign_public_ip" {
  description = "Give the GPU instances a public address: true in public subnets; false in private subnets behind a NAT gateway"
  type        = bool
  default     = true
}
