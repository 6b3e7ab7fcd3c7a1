resource "aws_codedeploy_app" "collector" {
  name             = "${var.name}-collector"
  compute_platform = "Server"
}

resource "aws_codedeploy_deployment_group" "collector" {
  app_name               = aws_codedeploy_app.collector.name
  deployment_group_name  = "${var.name}-collector"
  service_role_arn       = aws_iam_role.codedeploy.arn
  autoscaling_groups     = [aws_autoscaling_group.collector.name]
  deployment_config_name = "CodeDeployDefault.AllAtOnce" # a group of one

  auto_rollback_configuration {
    enabled = true
    events  = ["DEPLOYMENT_FAILURE", "DEPLOYMENT_STOP_ON_ALARM"]
  }

  alarm_configuration {
    enabled = true
    alarms  = [aws_cloudwatch_metric_alarm.instance_unhealthy.alarm_name]
  }

  # CodeDeploy puts its launch hook on the Auto Scaling group as the service role, so the role
  # needs its managed policy attached first, not only to exist.
  depends_on = [aws_iam_role_policy_attachment.codedeploy]
}

# The collector's .env. Terraform creates it with a placeholder that is write-only, so no
# value is ever kept in state; operators set the real one with `aws ssm put-parameter --overwrite`.
# A new line in the placeholder reaches new stacks only: value_wo_version stays 1, since a new
# version would overwrite the operator's real .env.
resource "aws_ssm_parameter" "collector_env" {
  name             = var.ssm_parameter_name
  description      = "The collector's .env (COLLECTOR_* settings); see .env.example"
  type             = "SecureString"
  key_id           = aws_kms_key.main.arn
  value_wo         = "COLLECTOR_DESTINATION=s3://${local.landing_bucket}\nCOLLECTOR_S3_SSE=${var.landing_encryption}\nCOLLECTOR_TABLE_NAMESPACE=${local.table_namespace}\n"
  value_wo_version = 1
}
