locals {
  assume = {
    for service in ["ec2", "lambda", "codedeploy", "vpc-flow-logs"] : service => jsonencode({
      Version = "2012-10-17"
      Statement = [{
        Effect    = "Allow"
        Principal = { Service = "${service}.amazonaws.com" }
        Action    = "sts:AssumeRole"
        Condition = service == "ec2" ? null : { StringEquals = { "aws:SourceAccount" = local.account_id } }
      }]
    })
  }

  # ---- the collector's instance ----
  collector_policy = {
    Version = "2012-10-17"
    Statement = [
      {
        # Conditional writes need only PutObject; GetObject lets the collector compare the
        # checksum of an object that is already there, and read markers back.
        Sid      = "LandTrades"
        Effect   = "Allow"
        Action   = ["s3:PutObject", "s3:GetObject", "s3:GetObjectAttributes"]
        Resource = "${local.landing_arn}/Binance/*"
      },
      {
        Sid       = "ListTradesForRecovery"
        Effect    = "Allow"
        Action    = "s3:ListBucket"
        Resource  = local.landing_arn
        Condition = { StringLike = { "s3:prefix" = ["Binance/*"] } }
      },
      {
        Sid      = "ReadDeploymentBundles"
        Effect   = "Allow"
        Action   = ["s3:GetObject", "s3:GetObjectVersion"]
        Resource = "${local.artifact_arn}/bundles/*"
      },
      {
        Sid      = "ReadEnvParameter"
        Effect   = "Allow"
        Action   = "ssm:GetParameter"
        Resource = local.ssm_parameter_arn
      },
      {
        Sid      = "UseStackKey"
        Effect   = "Allow"
        Action   = ["kms:Decrypt", "kms:GenerateDataKey"]
        Resource = aws_kms_key.main.arn
      },
      {
        # PutMetricData has no resource-level permissions; the namespace condition scopes it.
        Sid       = "PublishAlarmMetrics"
        Effect    = "Allow"
        Action    = "cloudwatch:PutMetricData"
        Resource  = "*"
        Condition = { StringEquals = { "cloudwatch:namespace" = var.metrics_namespace } }
      },
      {
        Sid      = "ShipLogs"
        Effect   = "Allow"
        Action   = ["logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"]
        Resource = "${aws_cloudwatch_log_group.collector.arn}:*"
      },
    ]
  }

  # ---- `collector compact`, a daily timer on the same instance (codedeploy/collector-compact.*) ----
  # Its own statements, although the collector's overlap on the landing zone, so that what the
  # compactor needs reads in one place: the landing zone read (never written), the tables'
  # prefix read, written and pruned, and its one Glue database. pyiceberg's Glue catalog calls
  # GetDatabase (the database's location, whether it is an S3 Tables one), GetTable (load, and
  # before each commit), CreateTable (the first run) and UpdateTable (each commit, with the
  # version id as an optimistic lock). CreateDatabase is not granted: Terraform owns the
  # database, and `collector compact` asks for it only when GetDatabase says it is missing.
  glue_catalog_arn = "arn:${local.partition}:glue:${var.region}:${local.account_id}:catalog"
  compactor_policy = {
    Version = "2012-10-17"
    Statement = [
      {
        Sid      = "ReadLanding"
        Effect   = "Allow"
        Action   = "s3:GetObject"
        Resource = "${local.landing_arn}/Binance/*"
      },
      {
        Sid       = "ListLanding"
        Effect    = "Allow"
        Action    = "s3:ListBucket"
        Resource  = local.landing_arn
        Condition = { StringLike = { "s3:prefix" = ["Binance/*"] } }
      },
      {
        # pyarrow writes data and metadata files (multipart for large ones), reads them back,
        # and deletes the files of a failed day, of expired snapshots and of old metadata.
        Sid      = "WriteTables"
        Effect   = "Allow"
        Action   = ["s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload"]
        Resource = "${local.landing_arn}/Tables/*"
      },
      {
        # A missing file is told apart from a folder by a listing of its name.
        Sid       = "ListTables"
        Effect    = "Allow"
        Action    = "s3:ListBucket"
        Resource  = local.landing_arn
        Condition = { StringLike = { "s3:prefix" = ["Tables/*"] } }
      },
      {
        Sid    = "CommitTables"
        Effect = "Allow"
        Action = ["glue:GetDatabase", "glue:GetTable", "glue:CreateTable", "glue:UpdateTable"]
        Resource = [
          local.glue_catalog_arn,
          "arn:${local.partition}:glue:${var.region}:${local.account_id}:database/${local.table_namespace}",
          "arn:${local.partition}:glue:${var.region}:${local.account_id}:table/${local.table_namespace}/*",
        ]
      },
      {
        Sid      = "UseStackKey"
        Effect   = "Allow"
        Action   = ["kms:Decrypt", "kms:GenerateDataKey"]
        Resource = aws_kms_key.main.arn
      },
    ]
  }

  # ---- the heartbeat Lambda ----
  lambda_policy = {
    Version = "2012-10-17"
    Statement = [
      {
        Sid      = "WriteHeartbeats"
        Effect   = "Allow"
        Action   = "s3:PutObject"
        Resource = "${local.landing_arn}/Ext/*"
      },
      {
        Sid      = "EncryptHeartbeats"
        Effect   = "Allow"
        Action   = ["kms:GenerateDataKey", "kms:Decrypt"]
        Resource = aws_kms_key.main.arn
      },
      {
        Sid      = "Logs"
        Effect   = "Allow"
        Action   = ["logs:CreateLogStream", "logs:PutLogEvents"]
        Resource = "${aws_cloudwatch_log_group.lambda.arn}:*"
      },
      {
        Sid      = "DeadLetters"
        Effect   = "Allow"
        Action   = "sqs:SendMessage"
        Resource = aws_sqs_queue.heartbeat_dlq.arn
      },
      {
        # X-Ray's write actions have no resource-level permissions.
        Sid      = "Tracing"
        Effect   = "Allow"
        Action   = ["xray:PutTraceSegments", "xray:PutTelemetryRecords"]
        Resource = "*"
      },
    ]
  }

  # ---- GitHub Actions' deploy role: upload bundles, deploy, update the Lambda's code ----
  github_subject = "repo:${var.github_repository}:ref:refs/heads/main"
  deploy_trust = {
    Version = "2012-10-17"
    Statement = [{
      Effect    = "Allow"
      Principal = { Federated = local.github_oidc_provider_arn }
      Action    = "sts:AssumeRoleWithWebIdentity"
      Condition = {
        StringEquals = {
          "token.actions.githubusercontent.com:aud" = "sts.amazonaws.com"
          "token.actions.githubusercontent.com:sub" = local.github_subject
        }
      }
    }]
  }
  deploy_policy = {
    Version = "2012-10-17"
    Statement = [
      {
        Sid      = "UploadBundles"
        Effect   = "Allow"
        Action   = "s3:PutObject"
        Resource = "${local.artifact_arn}/bundles/*"
      },
      {
        Sid      = "EncryptBundles"
        Effect   = "Allow"
        Action   = ["kms:GenerateDataKey"]
        Resource = aws_kms_key.main.arn
      },
      {
        Sid    = "Deploy"
        Effect = "Allow"
        Action = ["codedeploy:CreateDeployment", "codedeploy:GetDeployment", "codedeploy:GetDeploymentGroup"]
        Resource = [
          "arn:${local.partition}:codedeploy:${var.region}:${local.account_id}:deploymentgroup:${aws_codedeploy_app.collector.name}/${aws_codedeploy_deployment_group.collector.deployment_group_name}",
        ]
      },
      {
        Sid      = "RegisterRevisions"
        Effect   = "Allow"
        Action   = ["codedeploy:RegisterApplicationRevision", "codedeploy:GetApplicationRevision"]
        Resource = "arn:${local.partition}:codedeploy:${var.region}:${local.account_id}:application:${aws_codedeploy_app.collector.name}"
      },
      {
        Sid      = "ReadDeploymentConfig"
        Effect   = "Allow"
        Action   = "codedeploy:GetDeploymentConfig"
        Resource = "arn:${local.partition}:codedeploy:${var.region}:${local.account_id}:deploymentconfig:*"
      },
      {
        Sid      = "UpdateHeartbeatCode"
        Effect   = "Allow"
        Action   = ["lambda:UpdateFunctionCode", "lambda:GetFunction", "lambda:GetFunctionConfiguration"]
        Resource = "arn:${local.partition}:lambda:${var.region}:${local.account_id}:function:${local.lambda_name}"
      },
    ]
  }
}

resource "aws_iam_role" "collector" {
  name               = "${var.name}-collector"
  assume_role_policy = local.assume["ec2"]
}

resource "aws_iam_role_policy" "collector" {
  name   = "collector"
  role   = aws_iam_role.collector.id
  policy = jsonencode(local.collector_policy)
}

resource "aws_iam_role_policy" "compactor" {
  name   = "compactor"
  role   = aws_iam_role.collector.id
  policy = jsonencode(local.compactor_policy)
}

# Session Manager instead of SSH, and the agent's own needs.
resource "aws_iam_role_policy_attachment" "collector_ssm" {
  role       = aws_iam_role.collector.name
  policy_arn = "arn:${local.partition}:iam::aws:policy/AmazonSSMManagedInstanceCore"
}

resource "aws_iam_instance_profile" "collector" {
  name = "${var.name}-collector"
  role = aws_iam_role.collector.name
}

resource "aws_iam_role" "lambda" {
  name               = "${var.name}-news-heartbeat"
  assume_role_policy = local.assume["lambda"]
}

resource "aws_iam_role_policy" "lambda" {
  name   = "news-heartbeat"
  role   = aws_iam_role.lambda.id
  policy = jsonencode(local.lambda_policy)
}

resource "aws_iam_role" "codedeploy" {
  name               = "${var.name}-codedeploy"
  assume_role_policy = local.assume["codedeploy"]
}

resource "aws_iam_role_policy_attachment" "codedeploy" {
  role       = aws_iam_role.codedeploy.name
  policy_arn = "arn:${local.partition}:iam::aws:policy/service-role/AWSCodeDeployRole"
}

resource "aws_iam_role" "flow_logs" {
  name               = "${var.name}-flow-logs"
  assume_role_policy = local.assume["vpc-flow-logs"]
}

resource "aws_iam_role_policy" "flow_logs" {
  name = "flow-logs"
  role = aws_iam_role.flow_logs.id
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Effect   = "Allow"
      Action   = ["logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"]
      Resource = "${aws_cloudwatch_log_group.flow_logs.arn}:*"
    }]
  })
}

resource "aws_iam_openid_connect_provider" "github" {
  count          = var.create_github_oidc_provider ? 1 : 0
  url            = "https://token.actions.githubusercontent.com"
  client_id_list = ["sts.amazonaws.com"]
}

resource "aws_iam_role" "deploy" {
  name                 = "${var.name}-github-deploy"
  description          = "Assumed by GitHub Actions on ${var.github_repository}@main to deploy"
  assume_role_policy   = jsonencode(local.deploy_trust)
  max_session_duration = 3600
}

resource "aws_iam_role_policy" "deploy" {
  name   = "deploy"
  role   = aws_iam_role.deploy.id
  policy = jsonencode(local.deploy_policy)
}
