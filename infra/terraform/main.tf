data "aws_caller_identity" "current" {}
data "aws_partition" "current" {}

data "aws_ssm_parameter" "al2023" {
  count = var.ami_id == "" ? 1 : 0
  name  = "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64"
}

locals {
  account_id = data.aws_caller_identity.current.account_id
  partition  = data.aws_partition.current.partition

  landing_bucket  = "${var.name}-landing-zone-${local.account_id}"
  artifact_bucket = "${var.name}-artifacts-${local.account_id}"
  log_bucket      = "${var.name}-access-logs-${local.account_id}"
  results_bucket  = "${var.name}-athena-results-${local.account_id}"

  landing_arn  = "arn:${local.partition}:s3:::${local.landing_bucket}"
  artifact_arn = "arn:${local.partition}:s3:::${local.artifact_bucket}"

  # The lake's Iceberg tables (`collector compact`): the Glue database is the collector's
  # COLLECTOR_TABLE_NAMESPACE (trade_lake for the default name), the warehouse the landing
  # bucket's Tables/ prefix, which is COLLECTOR_TABLE_WAREHOUSE's default for s3://<landing>.
  table_namespace = replace(var.name, "-", "_")
  table_warehouse = "s3://${local.landing_bucket}/Tables/"

  ssm_parameter_arn = "arn:${local.partition}:ssm:${var.region}:${local.account_id}:parameter${var.ssm_parameter_name}"
  lambda_name       = "${var.name}-news-heartbeat"
  ami_id            = var.ami_id != "" ? var.ami_id : data.aws_ssm_parameter.al2023[0].value
  availability_zone = var.availability_zone != "" ? var.availability_zone : "${var.region}a"

  github_oidc_provider_arn = var.create_github_oidc_provider ? aws_iam_openid_connect_provider.github[0].arn : var.github_oidc_provider_arn

  tags = merge({ Project = var.name, ManagedBy = "terraform" }, var.tags)
}
