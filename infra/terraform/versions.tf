terraform {
  # 1.11: write-only arguments keep the SSM parameter's value out of state;
  # `terraform test` with mock providers needs 1.7 or later.
  required_version = ">= 1.11.0"

  required_providers {
    aws = {
      source = "hashicorp/aws"
      # 5.87 added write-only `value_wo` on aws_ssm_parameter; 5.100 is what CI carries.
      version = ">= 5.87.0, < 7.0.0"
    }
  }
}

provider "aws" {
  region = var.region

  default_tags {
    tags = local.tags
  }
}
