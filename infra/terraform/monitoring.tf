resource "aws_sns_topic" "alarms" {
  name              = "${var.name}-alarms"
  kms_master_key_id = aws_kms_key.main.arn
}

resource "aws_sns_topic_subscription" "email" {
  count     = var.alarm_email == "" ? 0 : 1
  topic_arn = aws_sns_topic.alarms.arn
  protocol  = "email"
  endpoint  = var.alarm_email
}

locals {
  # Metrics the collector publishes (no dimensions) to var.metrics_namespace once a minute.
  collector_alarms = {
    no-batch-landed = {
      description = "No batch has landed for 5 minutes, or the collector stopped reporting: check `journalctl -u collector` on the instance."
      metric      = "LastLandedBatchAgeSeconds"
      statistic   = "Maximum"
      threshold   = 300
      periods     = 1
      missing     = "breaching" # silence is the failure this alarm exists for
    }
    spool-growing = {
      description = "The local spool has held more than ${var.spool_alarm_bytes} bytes for 15 minutes: uploads are failing (look for collector.upload_blocked)."
      metric      = "SpoolBytes"
      statistic   = "Maximum"
      threshold   = var.spool_alarm_bytes
      periods     = 3
      missing     = "notBreaching"
    }
    unfilled-gaps = {
      description = "Trade ids are missing that backfill could not recover; the gap record names the ranges."
      metric      = "UnfilledGaps"
      statistic   = "Maximum"
      threshold   = 0
      periods     = 1
      missing     = "notBreaching"
    }
  }
}

resource "aws_cloudwatch_metric_alarm" "collector" {
  for_each            = local.collector_alarms
  alarm_name          = "${var.name}-${each.key}"
  alarm_description   = each.value.description
  namespace           = var.metrics_namespace
  metric_name         = each.value.metric
  statistic           = each.value.statistic
  period              = 300
  evaluation_periods  = each.value.periods
  threshold           = each.value.threshold
  comparison_operator = "GreaterThanThreshold"
  treat_missing_data  = each.value.missing
  alarm_actions       = [aws_sns_topic.alarms.arn]
  ok_actions          = [aws_sns_topic.alarms.arn]
}

resource "aws_cloudwatch_metric_alarm" "lambda_errors" {
  alarm_name          = "${var.name}-heartbeat-errors"
  alarm_description   = "The news heartbeat Lambda failed: read its log group /aws/lambda/${local.lambda_name} and the DLQ."
  namespace           = "AWS/Lambda"
  metric_name         = "Errors"
  dimensions          = { FunctionName = local.lambda_name }
  statistic           = "Sum"
  period              = 300
  evaluation_periods  = 1
  threshold           = 0
  comparison_operator = "GreaterThanThreshold"
  treat_missing_data  = "notBreaching"
  alarm_actions       = [aws_sns_topic.alarms.arn]
  ok_actions          = [aws_sns_topic.alarms.arn]
}

resource "aws_cloudwatch_metric_alarm" "instance_unhealthy" {
  alarm_name          = "${var.name}-instance-unhealthy"
  alarm_description   = "The collector's Auto Scaling group has no healthy instance in service; the group replaces it."
  namespace           = "AWS/AutoScaling"
  metric_name         = "GroupInServiceInstances"
  dimensions          = { AutoScalingGroupName = "${var.name}-collector" }
  statistic           = "Minimum"
  period              = 60
  evaluation_periods  = 5
  threshold           = 1
  comparison_operator = "LessThanThreshold"
  treat_missing_data  = "breaching"
  alarm_actions       = [aws_sns_topic.alarms.arn]
  ok_actions          = [aws_sns_topic.alarms.arn]
}
