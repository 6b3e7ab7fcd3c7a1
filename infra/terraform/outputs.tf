output "landing_bucket" {
  description = "The landing bucket; the collector's COLLECTOR_DESTINATION is s3://<this>."
  value       = aws_s3_bucket.this["landing"].bucket
}

output "artifact_bucket" {
  description = "Bucket for CodeDeploy bundles (the workflow's ARTIFACT_BUCKET)."
  value       = aws_s3_bucket.this["artifacts"].bucket
}

output "kms_key_arn" {
  description = "The stack's KMS key (COLLECTOR_S3_KMS_KEY_ID when landing_encryption is aws:kms)."
  value       = aws_kms_key.main.arn
}

output "deploy_role_arn" {
  description = "Role GitHub Actions assumes through OIDC (the workflow's AWS_DEPLOY_ROLE_ARN)."
  value       = aws_iam_role.deploy.arn
}

output "codedeploy_application" {
  description = "CodeDeploy application name (CODEDEPLOY_APP)."
  value       = aws_codedeploy_app.collector.name
}

output "codedeploy_deployment_group" {
  description = "CodeDeploy deployment group name (CODEDEPLOY_GROUP)."
  value       = aws_codedeploy_deployment_group.collector.deployment_group_name
}

output "autoscaling_group" {
  description = "The collector's Auto Scaling group."
  value       = aws_autoscaling_group.collector.name
}

output "lambda_function" {
  description = "The heartbeat Lambda's name (LAMBDA_FUNCTION)."
  value       = aws_lambda_function.heartbeat.function_name
}

output "ssm_parameter_name" {
  description = "SSM parameter holding the collector's .env."
  value       = aws_ssm_parameter.collector_env.name
}

output "alarm_topic_arn" {
  description = "SNS topic the alarms notify."
  value       = aws_sns_topic.alarms.arn
}

output "glue_table" {
  description = "Athena table over the per-symbol layout (the watched symbols), as database.table."
  value       = "${aws_glue_catalog_database.lake.name}.${aws_glue_catalog_table.trades.name}"
}

output "glue_market_table" {
  description = "Athena table over the market-wide layout (Binance/_market/, the unwatched symbols), as database.table."
  value       = "${aws_glue_catalog_database.lake.name}.${aws_glue_catalog_table.trades_market.name}"
}

output "table_namespace" {
  description = "Glue database of the Iceberg tables (the collector's COLLECTOR_TABLE_NAMESPACE; Athena's database)."
  value       = aws_glue_catalog_database.tables.name
}

output "table_warehouse" {
  description = "Where the Iceberg tables' files live (COLLECTOR_TABLE_WAREHOUSE; the default for COLLECTOR_DESTINATION=s3://<landing_bucket>)."
  value       = local.table_warehouse
}

output "iceberg_trades_table" {
  description = "Iceberg table of every trade, as database.table; collector compact creates it in table_namespace on its first run."
  value       = "${aws_glue_catalog_database.tables.name}.trades"
}

output "iceberg_bars_table" {
  description = "Iceberg table of one-minute bars, as database.table; collector compact creates it in table_namespace on its first run."
  value       = "${aws_glue_catalog_database.tables.name}.bars_1m"
}

output "athena_workgroup" {
  description = "Athena workgroup for the lake (engine v3, results encrypted in athena_results_bucket): aws athena start-query-execution --work-group <this>."
  value       = aws_athena_workgroup.lake.name
}

output "athena_results_bucket" {
  description = "Bucket of the workgroup's query results, encrypted with the stack's key and expired after athena_results_retention_days."
  value       = aws_s3_bucket.this["athena_results"].bucket
}
