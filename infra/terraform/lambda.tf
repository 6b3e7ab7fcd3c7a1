resource "aws_cloudwatch_log_group" "lambda" {
  name              = "/aws/lambda/${local.lambda_name}"
  retention_in_days = var.log_retention_days
  kms_key_id        = aws_kms_key.main.arn
}

resource "aws_sqs_queue" "heartbeat_dlq" {
  name                      = "${local.lambda_name}-dlq"
  message_retention_seconds = 1209600 # 14 days, the maximum: time to look at what failed
  kms_master_key_id         = aws_kms_key.main.arn
}

resource "aws_lambda_function" "heartbeat" {
  #checkov:skip=CKV_AWS_117:the function reaches only S3 and CloudWatch through AWS endpoints; a VPC would add a NAT or endpoints for nothing
  #checkov:skip=CKV_AWS_272:code signing needs a signing profile and signed uploads; the package is built and deployed only by the OIDC-restricted workflow
  function_name                  = local.lambda_name
  description                    = "Writes Ext/{dataSource}/YYYY/MM/DD/{timestamp}-News.json heartbeats to the landing bucket"
  role                           = aws_iam_role.lambda.arn
  runtime                        = "python3.12"
  handler                        = "news_heartbeat.handler"
  filename                       = var.lambda_package_path
  timeout                        = 30
  memory_size                    = 128
  reserved_concurrent_executions = 2 # a scheduled heartbeat never needs more
  kms_key_arn                    = aws_kms_key.main.arn

  environment {
    variables = {
      LANDING_BUCKET = local.landing_bucket
      DATA_SOURCE    = var.heartbeat_data_source
      KMS_KEY_ID     = var.landing_encryption == "aws:kms" ? aws_kms_key.main.arn : ""
    }
  }

  dead_letter_config {
    target_arn = aws_sqs_queue.heartbeat_dlq.arn
  }

  tracing_config {
    mode = "Active"
  }

  # The deploy workflow updates the code; Terraform owns the configuration.
  lifecycle {
    ignore_changes = [filename, source_code_hash]
  }

  depends_on = [aws_cloudwatch_log_group.lambda, aws_iam_role_policy.lambda]
}

resource "aws_cloudwatch_event_rule" "heartbeat" {
  name                = local.lambda_name
  description         = "Schedules the news heartbeat"
  schedule_expression = var.heartbeat_schedule
}

resource "aws_cloudwatch_event_target" "heartbeat" {
  rule = aws_cloudwatch_event_rule.heartbeat.name
  arn  = aws_lambda_function.heartbeat.arn

  retry_policy {
    maximum_retry_attempts       = 3
    maximum_event_age_in_seconds = 3600
  }
}

resource "aws_lambda_permission" "events" {
  statement_id  = "AllowEventBridgeSchedule"
  action        = "lambda:InvokeFunction"
  function_name = aws_lambda_function.heartbeat.function_name
  principal     = "events.amazonaws.com"
  source_arn    = aws_cloudwatch_event_rule.heartbeat.arn
}
