# Copied beside a copy of the module only by .ci/terraform-apply, never into infra/terraform.
#
# The provider talks to moto's server: every service's endpoint comes from AWS_ENDPOINT_URL,
# which the script sets to the server it started, and the fixed test credentials mean no real
# account is used, whatever credentials the environment holds.
provider "aws" {
  access_key        = "testing"
  secret_key        = "testing"
  s3_use_path_style = true # moto serves buckets as http://127.0.0.1:PORT/<bucket>

  skip_metadata_api_check = true
}

# The one change to the stack itself, for `terraform destroy`: the buckets refuse to be deleted
# while they hold objects (force_destroy = false keeps an operator's data), and the log bucket
# holds the access logs S3 delivered for the apply's own requests. Here they go with the rest.
resource "aws_s3_bucket" "this" {
  force_destroy = true
}
