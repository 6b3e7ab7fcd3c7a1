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
