# The GPU workers' plan-time checks against the real AWS provider with its API mocked (terraform
# test, 1.7 or later; no credentials): the region's G and VT quota, every stage counted, and the
# VPC and subnets required.

mock_provider "aws" {
  # What a new account answers: a G and VT quota of 0.
  mock_data "aws_servicequotas_service_quota" {
    defaults = { value = 0 }
  }
  mock_data "aws_ec2_instance_type" {
    defaults = {
      default_vcpus = 4
      memory_size   = 16384
      gpus          = [{ count = 1, manufacturer = "NVIDIA", memory_size = 23034, name = "L4" }]
    }
  }
  mock_data "aws_ec2_instance_type_offerings" {
    defaults = { locations = ["eu-west-1a"] }
  }
  mock_data "aws_subnet" {
    defaults = { vpc_id = "vpc-0123456789abcdef0", availability_zone = "eu-west-1a" }
  }
  mock_data "aws_caller_identity" {
    defaults = { account_id = "123456789012" }
  }
  mock_data "aws_partition" {
    defaults = { partition = "aws" }
  }
  mock_data "aws_iam_policy_document" {
    defaults = { json = "{}" }
  }
}

variables {
  stage           = "staging"
  aws_region      = "eu-west-1"
  queue           = { url = "https://sqs.eu-west-1.amazonaws.com/123456789012/q", arn = "arn:aws:sqs:eu-west-1:123456789012:q", name = "q" }
  repository_name = "concrexit/facedetection-worker"
  image_tag       = "latest"
  vpc_id          = "vpc-0123456789abcdef0"
  subnet_ids      = ["subnet-0123456789abcdef0"]
  alarm_topic_arn = "arn:aws:sns:eu-west-1:123456789012:alarms"
  tags            = {}
}

# A new account's quota of 0 stops the plan.
run "a_quota_of_zero_stops_the_plan" {
  command         = plan
  expect_failures = [aws_autoscaling_group.gpu]
}

# Enough for this stage, not for the other stage's workers as well: the quota is the region's.
run "the_other_stages_count" {
  command = plan

  variables {
    other_stages_gpu_vcpus = 8
  }

  override_data {
    target = data.aws_servicequotas_service_quota.gpu
    values = { value = 4 }
  }

  expect_failures = [aws_autoscaling_group.gpu]
}

run "a_quota_for_every_stage_passes" {
  command = plan

  variables {
    other_stages_gpu_vcpus = 8
  }

  override_data {
    target = data.aws_servicequotas_service_quota.gpu
    values = { value = 12 }
  }

  assert {
    condition     = aws_autoscaling_group.gpu.max_size == 1
    error_message = "max_tasks instances at most"
  }
}

# On, the VPC and subnets are required: no default VPC is assumed.
run "no_vpc_stops_the_plan" {
  command = plan

  variables {
    vpc_id     = null
    subnet_ids = null
  }

  expect_failures = [var.vpc_id, var.subnet_ids]
}
