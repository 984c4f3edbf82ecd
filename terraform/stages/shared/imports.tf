# The original deployment (svthalia/concrexit-facedetection-lambda) had its operators create the
# Lambda image's repository by hand, and its workflow pushes there: the first apply adopts it
# (with its images) instead of failing to create it. Once imported, this block does nothing. On an
# account without the original deployment, delete this file before the first apply.
#
# New here: the worker's repository (concrexit/facedetection-worker) and the push role
# (concrexit-facedetection-github-push; the original's workflow used a role made by hand, which
# this one replaces in the AWS_ROLE_ARN variable). The account's GitHub OIDC provider is used, not
# created.

import {
  to = module.registry.aws_ecr_repository.this["lambda"]
  id = "concrexit/facedetection-lambda"
}

# ECS's service-linked role (AWSServiceRoleForECS) exists on every account that ever ran ECS, and
# only one may exist. Where it does, adopt it before the first apply (an import block would fail
# the plan on an account without it, and its ID holds the account number):
#
#   aws iam get-role --role-name AWSServiceRoleForECS --query Role.Arn --output text
#   terraform import aws_iam_service_linked_role.ecs ARN_PRINTED_ABOVE
