# tflint for terraform/ (.github/workflows/ci.yaml): Terraform's recommended rules, and the AWS
# ruleset (instance types, regions and other values the provider accepts but AWS refuses).
plugin "terraform" {
  enabled = true
  preset  = "recommended"
}

plugin "aws" {
  enabled = true
  version = "0.40.0"
  source  = "github.com/terraform-linters/tflint-ruleset-aws"
}
