# Offline checks of the stack's security properties, with a mocked AWS provider:
# `terraform test` plans and "applies" against mocks, so nothing is created.

mock_provider "aws" {
  mock_data "aws_caller_identity" {
    defaults = {
      account_id = "123456789012"
    }
  }
  mock_data "aws_partition" {
    defaults = {
      partition = "aws"
    }
  }
  mock_data "aws_ssm_parameter" {
    defaults = {
      value = "ami-0123456789abcdef0"
    }
  }
  mock_resource "aws_kms_key" {
    defaults = {
      arn = "arn:aws:kms:ap-northeast-1:123456789012:key/11111111-2222-3333-4444-555555555555"
    }
  }
  mock_resource "aws_iam_openid_connect_provider" {
    defaults = {
      arn = "arn:aws:iam::123456789012:oidc-provider/token.actions.githubusercontent.com"
    }
  }
  mock_resource "aws_cloudwatch_log_group" {
    defaults = {
      arn = "arn:aws:logs:ap-northeast-1:123456789012:log-group:mocked"
    }
  }
  mock_resource "aws_sqs_queue" {
    defaults = {
      arn = "arn:aws:sqs:ap-northeast-1:123456789012:mocked"
    }
  }
  mock_resource "aws_launch_template" {
    defaults = {
      id = "lt-0123456789abcdef0"
    }
  }
  mock_resource "aws_iam_instance_profile" {
    defaults = {
      arn = "arn:aws:iam::123456789012:instance-profile/mocked"
    }
  }
  mock_resource "aws_iam_role" {
    defaults = {
      arn = "arn:aws:iam::123456789012:role/mocked"
    }
  }
  mock_resource "aws_sns_topic" {
    defaults = {
      arn = "arn:aws:sns:ap-northeast-1:123456789012:mocked"
    }
  }
  mock_resource "aws_lambda_function" {
    defaults = {
      arn = "arn:aws:lambda:ap-northeast-1:123456789012:function:mocked"
    }
  }
  mock_resource "aws_cloudwatch_event_rule" {
    defaults = {
      arn = "arn:aws:events:ap-northeast-1:123456789012:rule/mocked"
    }
  }
}

variables {
  github_repository = "trade-lake/collector"
}

run "buckets_are_private_encrypted_and_tls_only" {
  command = apply

  assert {
    condition = alltrue([for b in aws_s3_bucket_public_access_block.this :
    b.block_public_acls && b.block_public_policy && b.ignore_public_acls && b.restrict_public_buckets])
    error_message = "every bucket must block all public access"
  }

  assert {
    condition     = length(aws_s3_bucket_public_access_block.this) == 4
    error_message = "landing, artifacts, Athena results and logs buckets each need a public access block"
  }

  assert {
    condition = alltrue([for k, p in aws_s3_bucket_policy.this : anytrue([for s in jsondecode(p.policy).Statement :
    s.Effect == "Deny" && s.Condition.Bool["aws:SecureTransport"] == "false" if can(s.Condition.Bool)])])
    error_message = "every bucket policy must deny requests without TLS"
  }

  assert {
    condition     = aws_s3_bucket.this["landing"].bucket == "trade-lake-landing-zone-123456789012"
    error_message = "the landing bucket is named <name>-landing-zone-<account>"
  }

  assert {
    condition = alltrue([for k, c in aws_s3_bucket_server_side_encryption_configuration.this :
    contains(["aws:kms", "AES256"], one(one(c.rule).apply_server_side_encryption_by_default).sse_algorithm)])
    error_message = "every bucket must encrypt by default"
  }

  assert {
    condition     = one(one(aws_s3_bucket_server_side_encryption_configuration.this["landing"].rule).apply_server_side_encryption_by_default).sse_algorithm == "aws:kms"
    error_message = "the landing bucket defaults to SSE-KMS with the stack's key"
  }

  assert {
    condition     = alltrue([for v in aws_s3_bucket_versioning.this : one(v.versioning_configuration).status == "Enabled"])
    error_message = "every bucket must be versioned"
  }

  assert {
    condition     = alltrue([for o in aws_s3_bucket_ownership_controls.this : one(o.rule).object_ownership == "BucketOwnerEnforced"])
    error_message = "ACLs must be disabled (BucketOwnerEnforced)"
  }
}

run "instance_is_hardened_and_closed" {
  command = apply

  assert {
    condition     = one(aws_launch_template.collector.metadata_options).http_tokens == "required"
    error_message = "IMDSv2 must be required"
  }

  assert {
    condition     = one(one(aws_launch_template.collector.block_device_mappings).ebs).encrypted == "true"
    error_message = "the root volume must be encrypted"
  }

  assert {
    condition     = length(aws_vpc_security_group_ingress_rule.ssh) == 0
    error_message = "no inbound rule by default"
  }

  assert {
    condition = (aws_vpc_security_group_egress_rule.https.from_port == 443 && aws_vpc_security_group_egress_rule.https.to_port == 443
    && aws_vpc_security_group_egress_rule.binance.from_port == 9443 && aws_vpc_security_group_egress_rule.binance.to_port == 9443)
    error_message = "egress is HTTPS and Binance's 9443"
  }

  assert {
    condition     = alltrue([for r in aws_vpc_security_group_egress_rule.dns : r.cidr_ipv4 == "10.42.0.2/32" && r.from_port == 53])
    error_message = "DNS egress goes only to the VPC resolver"
  }

  assert {
    condition     = aws_autoscaling_group.collector.min_size == 1 && aws_autoscaling_group.collector.max_size == 1
    error_message = "the collector runs as an Auto Scaling group of one"
  }
}

run "iam_is_least_privilege" {
  command = apply

  assert {
    condition     = one([for s in jsondecode(aws_iam_role_policy.collector.policy).Statement : s if s.Sid == "LandTrades"]).Resource == "arn:aws:s3:::trade-lake-landing-zone-123456789012/Binance/*"
    error_message = "the collector may write only under Binance/"
  }

  assert {
    condition     = one([for s in jsondecode(aws_iam_role_policy.lambda.policy).Statement : s if s.Sid == "WriteHeartbeats"]).Resource == "arn:aws:s3:::trade-lake-landing-zone-123456789012/Ext/*"
    error_message = "the Lambda may write only under Ext/"
  }

  assert {
    condition     = one([for s in jsondecode(aws_iam_role_policy.collector.policy).Statement : s if s.Sid == "ReadEnvParameter"]).Resource == "arn:aws:ssm:ap-northeast-1:123456789012:parameter/mlops/collector/env"
    error_message = "the collector reads exactly the one .env parameter"
  }

  assert {
    condition = alltrue(flatten([for p in [aws_iam_role.collector, aws_iam_role.lambda, aws_iam_role.codedeploy, aws_iam_role.flow_logs, aws_iam_role.deploy] :
    [for s in jsondecode(p.assume_role_policy).Statement : s.Principal != "*" && !contains(values(s.Principal), "*")]]))
    error_message = "no trust policy may name a wildcard principal"
  }

  assert {
    condition = alltrue(flatten([for p in [aws_iam_role_policy.collector, aws_iam_role_policy.lambda, aws_iam_role_policy.deploy] :
    [for s in jsondecode(p.policy).Statement : !contains(flatten([s.Action]), "*") && !contains(flatten([s.Action]), "s3:*")]]))
    error_message = "no policy may grant every action"
  }
}

run "github_oidc_trust_is_pinned_to_main_of_one_repository" {
  command = apply

  assert {
    condition     = jsondecode(aws_iam_role.deploy.assume_role_policy).Statement[0].Condition.StringEquals["token.actions.githubusercontent.com:sub"] == "repo:trade-lake/collector:ref:refs/heads/main"
    error_message = "the deploy role must trust exactly main of the one repository"
  }

  assert {
    condition     = jsondecode(aws_iam_role.deploy.assume_role_policy).Statement[0].Condition.StringEquals["token.actions.githubusercontent.com:aud"] == "sts.amazonaws.com"
    error_message = "the deploy role must pin the audience"
  }

  assert {
    condition     = !can(jsondecode(aws_iam_role.deploy.assume_role_policy).Statement[0].Condition.StringLike) && !can(jsondecode(aws_iam_role.deploy.assume_role_policy).Statement[0].Condition["ForAllValues:StringEquals"])
    error_message = "no StringLike or ForAllValues in the deploy trust"
  }

  assert {
    condition     = toset(flatten([for s in jsondecode(aws_iam_role_policy.deploy.policy).Statement : s.Action])) == toset(["s3:PutObject", "kms:GenerateDataKey", "codedeploy:CreateDeployment", "codedeploy:GetDeployment", "codedeploy:GetDeploymentGroup", "codedeploy:RegisterApplicationRevision", "codedeploy:GetApplicationRevision", "codedeploy:GetDeploymentConfig", "lambda:UpdateFunctionCode", "lambda:GetFunction", "lambda:GetFunctionConfiguration"])
    error_message = "the deploy role may only upload bundles, deploy and update the Lambda's code"
  }
}

run "delivery_and_monitoring_are_wired" {
  command = apply

  assert {
    condition     = one(aws_codedeploy_deployment_group.collector.auto_rollback_configuration).enabled
    error_message = "failed deployments must roll back"
  }

  assert {
    condition     = aws_ssm_parameter.collector_env.type == "SecureString" && aws_ssm_parameter.collector_env.name == "/mlops/collector/env"
    error_message = "the .env lives in one SecureString parameter"
  }

  assert {
    condition     = toset(keys(aws_cloudwatch_metric_alarm.collector)) == toset(["no-batch-landed", "spool-growing", "unfilled-gaps"])
    error_message = "the collector's alarms exist"
  }

  assert {
    condition     = alltrue([for a in concat(values(aws_cloudwatch_metric_alarm.collector), [aws_cloudwatch_metric_alarm.lambda_errors, aws_cloudwatch_metric_alarm.instance_unhealthy]) : contains(a.alarm_actions, aws_sns_topic.alarms.arn)])
    error_message = "every alarm notifies the SNS topic"
  }

  assert {
    condition     = aws_glue_catalog_table.trades.parameters["storage.location.template"] == "s3://trade-lake-landing-zone-123456789012/Binance/$${pair}/$${minute}/"
    error_message = "partition projection follows the landing layout"
  }

  assert {
    condition     = aws_cloudwatch_log_group.lambda.retention_in_days == 365
    error_message = "the Lambda's logs have a retention"
  }
}

run "catalog_covers_both_layouts" {
  command = apply

  assert {
    condition     = aws_glue_catalog_table.trades_market.parameters["storage.location.template"] == "s3://trade-lake-landing-zone-123456789012/Binance/_market/$${minute}/"
    error_message = "the market table's projection follows the market-wide layout Binance/_market/YYYY/MM/DD/HH/mm/"
  }

  assert {
    condition     = one(aws_glue_catalog_table.trades_market.storage_descriptor).location == "s3://trade-lake-landing-zone-123456789012/Binance/_market/"
    error_message = "the market table lives under Binance/_market/"
  }

  assert {
    condition = ({ for k, v in aws_glue_catalog_table.trades_market.parameters : k => v if startswith(k, "projection.") } == {
      "projection.enabled"              = "true"
      "projection.minute.type"          = "date"
      "projection.minute.format"        = "yyyy/MM/dd/HH/mm"
      "projection.minute.range"         = "2024/01/01/00/00,NOW"
      "projection.minute.interval"      = "1"
      "projection.minute.interval.unit" = "MINUTES"
    })
    error_message = "the market table projects the minute only, every minute from catalog_start to now"
  }

  assert {
    condition     = [for k in aws_glue_catalog_table.trades_market.partition_keys : k.name] == ["minute"]
    error_message = "the market table's only partition is the minute (readers filter on the symbol column)"
  }

  assert {
    condition = ([for c in one(aws_glue_catalog_table.trades_market.storage_descriptor).columns : [c.name, c.type, c.comment]]
    == [for c in one(aws_glue_catalog_table.trades.storage_descriptor).columns : [c.name, c.type, c.comment]])
    error_message = "the market table has the trades table's columns, in the same order"
  }

  assert {
    condition     = length(one(aws_glue_catalog_table.trades_market.storage_descriptor).columns) == 8 && one(aws_glue_catalog_table.trades_market.storage_descriptor).columns[0].name == "symbol"
    error_message = "the market table carries every column, the symbol first"
  }

  assert {
    condition = (one(aws_glue_catalog_table.trades_market.storage_descriptor).input_format == one(aws_glue_catalog_table.trades.storage_descriptor).input_format
      && one(one(aws_glue_catalog_table.trades_market.storage_descriptor).ser_de_info).serialization_library == one(one(aws_glue_catalog_table.trades.storage_descriptor).ser_de_info).serialization_library
    && aws_glue_catalog_table.trades_market.parameters["classification"] == "parquet")
    error_message = "the market table reads Parquet like the trades table"
  }

  assert {
    condition     = output.glue_market_table == "trade_lake_lake.trades_market" && output.glue_table == "trade_lake_lake.trades"
    error_message = "both tables are outputs, as database.table"
  }
}

run "iceberg_tables_have_their_database_and_warehouse" {
  command = apply

  assert {
    condition     = aws_glue_catalog_database.tables.name == "trade_lake" && output.table_namespace == "trade_lake"
    error_message = "the tables' Glue database is the collector's default COLLECTOR_TABLE_NAMESPACE, trade_lake"
  }

  assert {
    condition     = aws_glue_catalog_database.tables.location_uri == "s3://trade-lake-landing-zone-123456789012/Tables/" && output.table_warehouse == aws_glue_catalog_database.tables.location_uri
    error_message = "the database's location is the warehouse prefix Tables/ of the landing bucket (COLLECTOR_TABLE_WAREHOUSE's default)"
  }

  assert {
    condition     = output.iceberg_trades_table == "trade_lake.trades" && output.iceberg_bars_table == "trade_lake.bars_1m"
    error_message = "both Iceberg tables are outputs, as database.table"
  }
}

run "athena_results_are_encrypted_and_the_workgroup_enforces_it" {
  command = apply

  assert {
    condition     = one(aws_athena_workgroup.lake.configuration).enforce_workgroup_configuration == true
    error_message = "clients must not override the workgroup's result location and encryption"
  }

  assert {
    condition = (one(one(one(aws_athena_workgroup.lake.configuration).result_configuration).encryption_configuration).encryption_option == "SSE_KMS"
    && one(one(one(aws_athena_workgroup.lake.configuration).result_configuration).encryption_configuration).kms_key_arn == aws_kms_key.main.arn)
    error_message = "query results are encrypted with the stack's KMS key"
  }

  assert {
    condition     = one(one(aws_athena_workgroup.lake.configuration).result_configuration).output_location == "s3://trade-lake-athena-results-123456789012/" && output.athena_results_bucket == "trade-lake-athena-results-123456789012"
    error_message = "results go to the dedicated results bucket"
  }

  assert {
    condition = (one(one(aws_athena_workgroup.lake.configuration).engine_version).selected_engine_version == "Athena engine version 3"
    && one(aws_athena_workgroup.lake.configuration).publish_cloudwatch_metrics_enabled == true)
    error_message = "engine version 3 (Iceberg), with CloudWatch metrics"
  }

  assert {
    condition     = output.athena_workgroup == "trade-lake"
    error_message = "the workgroup is an output"
  }

  assert {
    condition = (one(one(aws_s3_bucket_server_side_encryption_configuration.this["athena_results"].rule).apply_server_side_encryption_by_default).sse_algorithm == "aws:kms"
    && one(one(aws_s3_bucket_server_side_encryption_configuration.this["athena_results"].rule).apply_server_side_encryption_by_default).kms_master_key_id == aws_kms_key.main.arn)
    error_message = "the results bucket encrypts by default with the stack's key"
  }

  assert {
    condition     = one([for r in aws_s3_bucket_lifecycle_configuration.this["athena_results"].rule : r if r.id == "expire-query-results"]).expiration[0].days == 30
    error_message = "query results expire after athena_results_retention_days"
  }

  assert {
    condition     = length(aws_s3_bucket_logging.this["athena_results"].target_bucket) > 0 && contains(jsondecode(aws_s3_bucket_policy.this["logs"].policy).Statement[1].Condition.ArnLike["aws:SourceArn"], "arn:aws:s3:::trade-lake-athena-results-123456789012")
    error_message = "the results bucket's access is logged, and the log bucket accepts its logs"
  }
}

run "the_compactor_reaches_one_database_and_one_prefix" {
  command = apply

  assert {
    condition     = one([for s in jsondecode(aws_iam_role_policy.compactor.policy).Statement : s if s.Sid == "WriteTables"]).Resource == "arn:aws:s3:::trade-lake-landing-zone-123456789012/Tables/*"
    error_message = "the compactor writes and deletes only under Tables/"
  }

  assert {
    condition = alltrue([for s in jsondecode(aws_iam_role_policy.compactor.policy).Statement :
      alltrue([for r in flatten([s.Resource]) : startswith(r, "arn:aws:s3:::trade-lake-landing-zone-123456789012/Tables/")])
    if length(setintersection(toset(flatten([s.Action])), ["s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload"])) > 0])
    error_message = "no compactor statement writes or deletes outside Tables/ (the landing zone is only read)"
  }

  assert {
    condition = (one([for s in jsondecode(aws_iam_role_policy.compactor.policy).Statement : s if s.Sid == "ReadLanding"]).Resource == "arn:aws:s3:::trade-lake-landing-zone-123456789012/Binance/*"
      && one([for s in jsondecode(aws_iam_role_policy.compactor.policy).Statement : s if s.Sid == "ListLanding"]).Condition.StringLike["s3:prefix"] == ["Binance/*"]
    && one([for s in jsondecode(aws_iam_role_policy.compactor.policy).Statement : s if s.Sid == "ListTables"]).Condition.StringLike["s3:prefix"] == ["Tables/*"])
    error_message = "the compactor reads Binance/*, and lists only Binance/ and Tables/"
  }

  assert {
    condition = one([for s in jsondecode(aws_iam_role_policy.compactor.policy).Statement : s if s.Sid == "CommitTables"]).Resource == [
      "arn:aws:glue:ap-northeast-1:123456789012:catalog",
      "arn:aws:glue:ap-northeast-1:123456789012:database/trade_lake",
      "arn:aws:glue:ap-northeast-1:123456789012:table/trade_lake/*",
    ]
    error_message = "the compactor's Glue permissions reach the catalog, the one database and its tables"
  }

  assert {
    condition     = toset(one([for s in jsondecode(aws_iam_role_policy.compactor.policy).Statement : s if s.Sid == "CommitTables"]).Action) == toset(["glue:GetDatabase", "glue:GetTable", "glue:CreateTable", "glue:UpdateTable"])
    error_message = "the compactor reads the database and creates and commits tables: no CreateDatabase, no deletes"
  }

  assert {
    condition     = toset(flatten([for s in jsondecode(aws_iam_role_policy.compactor.policy).Statement : s.Action if startswith(flatten([s.Action])[0], "glue:")])) == toset(["glue:GetDatabase", "glue:GetTable", "glue:CreateTable", "glue:UpdateTable"])
    error_message = "no other statement grants Glue actions"
  }

  assert {
    condition     = aws_iam_role_policy.compactor.role == aws_iam_role.collector.id
    error_message = "the compactor runs on the collector's instance, with its role"
  }

  assert {
    condition = alltrue([for s in jsondecode(aws_iam_role_policy.compactor.policy).Statement :
    !contains(flatten([s.Action]), "*") && !contains(flatten([s.Action]), "s3:*") && !contains(flatten([s.Action]), "glue:*") && !contains(flatten([s.Resource]), "*")])
    error_message = "no wildcard action or resource in the compactor's policy"
  }
}

run "the_tables_follow_the_stack_name" {
  command = apply

  variables {
    name = "my-lake"
  }

  assert {
    condition     = aws_glue_catalog_database.tables.name == "my_lake" && aws_athena_workgroup.lake.name == "my-lake"
    error_message = "the database is the name with underscores (a Glue database name); the workgroup the name"
  }

  assert {
    condition     = contains(one([for s in jsondecode(aws_iam_role_policy.compactor.policy).Statement : s if s.Sid == "CommitTables"]).Resource, "arn:aws:glue:ap-northeast-1:123456789012:table/my_lake/*")
    error_message = "the compactor's Glue permissions follow the database"
  }
}

run "ssh_is_never_open_to_the_world" {
  command = plan

  variables {
    ssh_cidrs = ["0.0.0.0/0"]
  }

  expect_failures = [var.ssh_cidrs]
}

run "repository_wildcards_are_refused" {
  command = plan

  variables {
    github_repository = "trade-lake/*"
  }

  expect_failures = [var.github_repository]
}

run "ssh_from_an_operator_network_opens_only_port_22" {
  command = apply

  variables {
    ssh_cidrs = ["203.0.113.0/24"]
  }

  assert {
    condition     = length(aws_vpc_security_group_ingress_rule.ssh) == 1 && aws_vpc_security_group_ingress_rule.ssh["203.0.113.0/24"].from_port == 22
    error_message = "an SSH CIDR opens port 22 to that network only"
  }
}
