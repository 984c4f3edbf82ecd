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

variable "spot_workers" {
  description = "Run the GPU workers on spot instances"
  type        = bool
  default     = false
}

variable "backfill_on_lambda" {
  description = "Let the Lambda function consume the backfill queue as well (for a backfill without GPU instances)"
  type        = bool
  default     = false
}

variable "backfill_vpc_id" {
  description = "VPC of the GPU workers (required; no default VPC is assumed)"
  type        = string
  default     = null
}

variable "backfill_subnet_ids" {
  description = "Subnets of the GPU workers in backfill_vpc_id (required): public ones (the instances get a public address), or private ones behind a NAT gateway"
  type        = list(string)
  default     = null
}

variable "backfill_assign_public_ip" {
  description = "Give the GPU instances a public address: true in public subnets; false in private subnets behind a NAT gateway"
  type        = bool
  default     = true
}
