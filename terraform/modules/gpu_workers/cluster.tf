# GPU capacity for the worker: an Auto Scaling group of GPU instances on ECS's GPU-optimised
# Amazon Linux 2023 AMI, registered to the cluster as a capacity provider with managed scaling.
# The group's minimum is 0: with no task to place, ECS scales it to no instance at all. The stage
# instantiates this module only with gpu_workers on: without it nothing here is planned, so the
# VPC, the subnets and the GPU quota are needed only then.

locals {
  name = "concrexit-${var.stage}-facedetection"
}

data "aws_ssm_parameter" "gpu_ami" {
  name = "/aws/service/ecs/optimized-ami/amazon-linux-2023/gpu/recommended/image_id"
}

# The VPC and subnets are given (no default VPC is assumed: the original's account may have none,
# and the GPU instances belong in a VPC its operators chose). Each subnet is looked up to check
# that it is in that VPC and to find its availability zone.
data "aws_subnet" "gpu" {
  for_each = toset(var.subnet_ids)
  id       = each.value
}

# What the instance type is (vCPUs for the quota, memory for the task, GPUs for the device budget)
# and the availability zones of the subnets that offer it.
data "aws_ec2_instance_type" "gpu" {
  instance_type = var.instance_type
}

data "aws_ec2_instance_type_offerings" "gpu" {
  location_type = "availability-zone"

  filter {
    name   = "instance-type"
    values = [var.instance_type]
  }

  filter {
    name   = "location"
    values = distinct([for subnet in data.aws_subnet.gpu : subnet.availability_zone])
  }
}

locals {
  # The GPU instance families the worker image runs on, with their GPU's compute capability
  # (the image's kernels are PTX for var.image_compute_capability, compiled by the driver for
  # any GPU at or above it) and the EC2 vCPU quotas their instances count against.
  instance_family = split(".", var.instance_type)[0]
  gpu_families = {
    g5  = { gpu = "NVIDIA A10G", compute_capability = 86 }
    g6  = { gpu = "NVIDIA L4", compute_capability = 89 }
    g6e = { gpu = "NVIDIA L40S", compute_capability = 89 }
    gr6 = { gpu = "NVIDIA L4", compute_capability = 89 }
  }
  # Service Quotas codes: "Running On-Demand G and VT instances" and "All G and VT Spot Instance
  # Requests", both in vCPUs and 0 on a new account.
  gpu_quota_code  = var.spot ? "L-3819A6DF" : "L-DB2E81BA"
  gpu_quota_name  = var.spot ? "All G and VT Spot Instance Requests" : "Running On-Demand G and VT instances"
  gpu_vcpus_total = data.aws_ec2_instance_type.gpu.default_vcpus * var.max_tasks
  # The quota is the region's: the other stages' workers count against it as well.
  gpu_vcpus_region = local.gpu_vcpus_total + var.other_stages_gpu_vcpus
}

data "aws_servicequotas_service_quota" "gpu" {
  service_code = "ec2"
  quota_code   = local.gpu_quota_code
}

resource "aws_ecs_cluster" "this" {
  name = "${local.name}-backfill"

  setting {
    name  = "containerInsights"
    value = "enabled"
  }

  tags = var.tags
}

resource "aws_security_group" "gpu" {
  name        = "${local.name}-gpu"
  description = "GPU workers: no inbound traffic; HTTPS out to ECR, SQS, CloudWatch, the photo host and concrexit"
  vpc_id      = var.vpc_id
  tags        = var.tags
}

resource "aws_vpc_security_group_egress_rule" "https" {
  security_group_id = aws_security_group.gpu.id
  description       = "HTTPS to AWS APIs, photo downloads and concrexit callbacks"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
  cidr_ipv4         = "0.0.0.0/0"
  tags              = var.tags
}

resource "aws_launch_template" "gpu" {
  name_prefix   = "${local.name}-gpu-"
  image_id      = data.aws_ssm_parameter.gpu_ami.insecure_value
  instance_type = var.instance_type

  iam_instance_profile {
    arn = aws_iam_instance_profile.instance.arn
  }

  # checkov:skip=CKV_AWS_88:Without a NAT gateway (which would cost more than the GPU hours) the workers reach AWS's APIs and concrexit through a public address; their security group admits no inbound traffic. Set assign_public_ip = false with subnets behind a NAT.
  network_interfaces {
    associate_public_ip_address = var.assign_public_ip
    security_groups             = [aws_security_group.gpu.id]
    delete_on_termination       = true
  }

  # IMDSv2 only, and one hop: containers (bridge network) cannot reach the instance's
  # credentials; the worker gets its own from the task role.
  metadata_options {
    http_endpoint               = "enabled"
    http_tokens                 = "required"
    http_put_response_hop_limit = 1
  }

  block_device_mappings {
    device_name = "/dev/xvda"
    ebs {
      volume_size           = var.root_volume_size
      volume_type           = "gp3"
      encrypted             = true
      delete_on_termination = true
    }
  }

  dynamic "instance_market_options" {
    for_each = var.spot ? ["spot"] : []
    content {
      market_type = "spot"
    }
  }

  monitoring {
    enabled = true
  }

  user_data = base64encode(<<-EOT
    #!/bin/bash
    cat >> /etc/ecs/ecs.config <<CONFIG
    ECS_CLUSTER=${aws_ecs_cluster.this.name}
    ECS_ENABLE_GPU_SUPPORT=true
    ECS_ENABLE_SPOT_INSTANCE_DRAINING=${var.spot}
    CONFIG
  EOT
  )

  tag_specifications {
    resource_type = "instance"
    tags          = merge(var.tags, { Name = "${local.name}-gpu" })
  }

  tag_specifications {
    resource_type = "volume"
    tags          = var.tags
  }

  tags = var.tags
}

resource "aws_autoscaling_group" "gpu" {
  name_prefix         = "${local.name}-gpu-"
  min_size            = 0
  max_size            = var.max_tasks
  vpc_zone_identifier = var.subnet_ids
  # Required by the capacity provider's managed termination protection: ECS, not the group,
  # decides which instances may go (those with no worker on them).
  protect_from_scale_in = true

  launch_template {
    id      = aws_launch_template.gpu.id
    version = aws_launch_template.gpu.latest_version
  }

  tag {
    key                 = "AmazonECSManaged"
    value               = "true"
    propagate_at_launch = true
  }

  dynamic "tag" {
    for_each = var.tags
    content {
      key                 = tag.key
      value               = tag.value
      propagate_at_launch = true
    }
  }

  lifecycle {
    # The capacity provider sets the desired capacity.
    ignore_changes = [desired_capacity]

    precondition {
      condition     = alltrue([for subnet in data.aws_subnet.gpu : subnet.vpc_id == var.vpc_id])
      error_message = "Every subnet in subnet_ids must belong to vpc_id (${var.vpc_id}); these do not: ${join(", ", [for subnet in data.aws_subnet.gpu : subnet.id if subnet.vpc_id != var.vpc_id])}."
    }

    precondition {
      condition     = contains(keys(local.gpu_families), local.instance_family)
      error_message = "instance_type ${var.instance_type}: the worker runs on one of the GPU families ${join(", ", keys(local.gpu_families))} (NVIDIA, compute capability 8.6 or more, counted against the G and VT vCPU quota)."
    }

    precondition {
      condition     = try(local.gpu_families[local.instance_family].compute_capability, 0) >= var.image_compute_capability
      error_message = "instance_type ${var.instance_type}: its GPU's compute capability is below the ${var.image_compute_capability} the worker image is built for (Dockerfile.cuda's CUDA_COMPUTE_CAP)."
    }

    precondition {
      condition     = length(data.aws_ec2_instance_type_offerings.gpu.locations) > 0
      error_message = "instance_type ${var.instance_type} is not offered in the availability zones of subnet_ids (${join(", ", distinct([for subnet in data.aws_subnet.gpu : subnet.availability_zone]))}); give subnets in a zone that offers it (aws ec2 describe-instance-type-offerings --location-type availability-zone --filters Name=instance-type,Values=${var.instance_type})."
    }

    # A new account's G and VT vCPU quota is 0: without this check the first apply succeeds and
    # every scale-out then fails in the Auto Scaling group's activity history with "You have
    # requested more vCPU capacity than your current vCPU limit of 0 allows". The quota is
    # shared by every stage of the region.
    precondition {
      condition     = data.aws_servicequotas_service_quota.gpu.value >= local.gpu_vcpus_region
      error_message = "The EC2 quota \"${local.gpu_quota_name}\" (${local.gpu_quota_code}) in ${var.aws_region} is ${data.aws_servicequotas_service_quota.gpu.value} vCPUs; ${var.max_tasks} x ${var.instance_type} need ${local.gpu_vcpus_total}, and the region's other stages ${var.other_stages_gpu_vcpus} (other_stages_gpu_vcpus). Request an increase (README, Deployment: GPU workers): aws service-quotas request-service-quota-increase --service-code ec2 --quota-code ${local.gpu_quota_code} --desired-value ${local.gpu_vcpus_region} --region ${var.aws_region}"
    }
  }
}

resource "aws_ecs_capacity_provider" "gpu" {
  name = "${local.name}-gpu"

  auto_scaling_group_provider {
    auto_scaling_group_arn         = aws_autoscaling_group.gpu.arn
    managed_termination_protection = "ENABLED"
    managed_draining               = "ENABLED"

    managed_scaling {
      status                    = "ENABLED"
      target_capacity           = 100
      minimum_scaling_step_size = 1
      maximum_scaling_step_size = var.max_tasks
      instance_warmup_period    = 300
    }
  }

  tags = var.tags
}

resource "aws_ecs_cluster_capacity_providers" "this" {
  cluster_name       = aws_ecs_cluster.this.name
  capacity_providers = [aws_ecs_capacity_provider.gpu.name]

  default_capacity_provider_strategy {
    capacity_provider = aws_ecs_capacity_provider.gpu.name
    weight            = 1
    base              = 0
  }
}
