# The original deployment (svthalia/concrexit-facedetection-lambda) already owns these in this
# account, under the same names: the first apply adopts them instead of failing to create them,
# and updates the function in place (new image, role and settings; same name, so the same ARN for
# concrexit). Once imported, these blocks do nothing. On an account without the original
# deployment, delete this file before the first apply: there is nothing to adopt.
#
# Not shared with the original: its role (concrexit-production-facedetection-lambda-iam-role) and
# logging policy (concrexit-production-facedetection-lambda-logging-policy) keep their names and are
# removed by the original's `terraform destroy`; this stage's role is
# concrexit-production-facedetection-lambda-role. Everything else here is new.

import {
  to = module.lambda.aws_lambda_function.this
  id = "concrexit-production-facedetection-lambda"
}

import {
  to = module.lambda.aws_cloudwatch_log_group.this
  id = "/aws/lambda/concrexit-production-facedetection-lambda"
}
