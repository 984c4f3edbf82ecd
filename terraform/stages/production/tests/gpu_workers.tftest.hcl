# Plans of this stage against the real AWS provider with its API mocked (terraform test, 1.7 or
# later; no credentials): what the GPU workers need only when they are on (their module's own
# tests, modules/gpu_workers/tests, check that the quota stops a plan). A mocked provider
# imports nothing, so this runs on a copy without imports.tf, as on an account without the
# original deployment (tests/it/deployment.rs and CI make that copy).

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

# Day one: the function and the backfill queue, with no VPC, no subnets and a quota of 0.
run "gpu_workers_off_needs_no_vpc_and_no_quota" {
  command = plan

  variables {
    gpu_workers         = false
    backfill_vpc_id     = null
    backfill_subnet_ids = null
  }

  assert {
    condition     = length(module.gpu_workers) == 0
    error_message = "GPU workers planned with gpu_workers off"
  }

  assert {
    condition     = output.backfill_cluster == null
    error_message = "a cluster output with gpu_workers off"
  }

  assert {
    condition     = module.backfill.queue_visibility_timeout == 900
    error_message = "the backfill queue's visibility timeout"
  }
}

# A backfill on the function, still without GPU: the queue's visibility follows the function's
# timeout (6 x 300 s).
run "backfill_on_lambda_without_gpu" {
  command = plan

  variables {
    gpu_workers        = false
    backfill_on_lambda = true
  }

  assert {
    condition     = module.backfill.queue_visibility_timeout == 1800
    error_message = "the visibility timeout is not 6 x the function's timeout"
  }

  assert {
    condition     = length(module.gpu_workers) == 0
    error_message = "GPU workers planned with gpu_workers off"
  }
}

# On, with the quota for every stage of the region: every check passes.
run "gpu_workers_on_with_the_quota" {
  command = plan

  variables {
    gpu_workers         = true
    backfill_vpc_id     = "vpc-0123456789abcdef0"
    backfill_subnet_ids = ["subnet-0123456789abcdef0"]
  }

  override_data {
    target = module.gpu_workers[0].data.aws_servicequotas_service_quota.gpu
    values = { value = 12 }
  }

  assert {
    condition     = length(module.gpu_workers) == 1
    error_message = "no GPU workers with gpu_workers on"
  }
}
