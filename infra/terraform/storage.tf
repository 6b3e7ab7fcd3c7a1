# One customer-managed key for the stack's data at rest: the landing zone (when
# landing_encryption is aws:kms), bundles, Athena's query results, the .env parameter, logs, alarms
# and the root volume.
resource "aws_kms_key" "main" {
  description             = "${var.name}: landing zone, artifacts, .env parameter, logs, alarms, EBS"
  enable_key_rotation     = true
  deletion_window_in_days = 30
  policy                  = jsonencode(local.kms_policy)
}

resource "aws_kms_alias" "main" {
  name          = "alias/${var.name}"
  target_key_id = aws_kms_key.main.key_id
}

locals {
  kms_policy = {
    Version = "2012-10-17"
    Statement = [
      {
        Sid       = "AccountAdministers"
        Effect    = "Allow"
        Principal = { AWS = "arn:${local.partition}:iam::${local.account_id}:root" }
        Action    = "kms:*"
        Resource  = "*"
      },
      {
        Sid       = "CloudWatchLogsEncrypt"
        Effect    = "Allow"
        Principal = { Service = "logs.${var.region}.amazonaws.com" }
        Action    = ["kms:Encrypt", "kms:Decrypt", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:Describe*"]
        Resource  = "*"
        Condition = {
          ArnLike = { "kms:EncryptionContext:aws:logs:arn" = "arn:${local.partition}:logs:${var.region}:${local.account_id}:log-group:*" }
        }
      },
      {
        Sid       = "CloudWatchAlarmsPublishToEncryptedTopic"
        Effect    = "Allow"
        Principal = { Service = "cloudwatch.amazonaws.com" }
        Action    = ["kms:Decrypt", "kms:GenerateDataKey*"]
        Resource  = "*"
        Condition = { StringEquals = { "aws:SourceAccount" = local.account_id } }
      },
      {
        # Auto Scaling launches the instance, so its service-linked role must use the key of
        # the encrypted root volume.
        Sid    = "AutoScalingUsesKeyForEbs"
        Effect = "Allow"
        Principal = {
          AWS = "arn:${local.partition}:iam::${local.account_id}:role/aws-service-role/autoscaling.amazonaws.com/AWSServiceRoleForAutoScaling"
        }
        Action   = ["kms:Encrypt", "kms:Decrypt", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:DescribeKey", "kms:CreateGrant"]
        Resource = "*"
      },
    ]
  }

  # Every bucket gets versioning, encryption, a public access block, owner-enforced ownership
  # and a TLS-only policy; these are what differ.
  buckets = {
    landing = {
      name      = local.landing_bucket
      sse       = var.landing_encryption
      log       = true
      lifecycle = "landing"
    }
    artifacts = {
      name      = local.artifact_bucket
      sse       = "aws:kms"
      log       = true
      lifecycle = "artifacts"
    }
    # Athena's query results (the workgroup in tables.tf writes them here, encrypted with the
    # stack's key); kept athena_results_retention_days.
    athena_results = {
      name      = local.results_bucket
      sse       = "aws:kms"
      log       = true
      lifecycle = "athena-results"
    }
    # S3 server access logs can only be delivered to an SSE-S3 bucket.
    logs = {
      name      = local.log_bucket
      sse       = "AES256"
      log       = false
      lifecycle = "logs"
    }
  }
}

resource "aws_s3_bucket" "this" {
  #checkov:skip=CKV_AWS_144:single-region landing zone by design; the spool and REST backfill are the recovery path, and a cross-region copy is a cost the operator may add
  #checkov:skip=CKV_AWS_18:the access-log bucket does not log to itself; the others log to it (aws_s3_bucket_logging.this)
  #checkov:skip=CKV2_AWS_62:event notifications go to EventBridge for the landing bucket (aws_s3_bucket_notification.landing); bundles and logs need none
  #checkov:skip=CKV_AWS_145:the access-log bucket must be SSE-S3 (S3 log delivery cannot use KMS); the others use the stack's KMS key
  for_each      = local.buckets
  bucket        = each.value.name
  force_destroy = false
}

resource "aws_s3_bucket_versioning" "this" {
  for_each = local.buckets
  bucket   = aws_s3_bucket.this[each.key].id

  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "this" {
  for_each = local.buckets
  bucket   = aws_s3_bucket.this[each.key].id

  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm     = each.value.sse
      kms_master_key_id = each.value.sse == "aws:kms" ? aws_kms_key.main.arn : null
    }
    bucket_key_enabled = each.value.sse == "aws:kms"
  }
}

resource "aws_s3_bucket_public_access_block" "this" {
  for_each                = local.buckets
  bucket                  = aws_s3_bucket.this[each.key].id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_ownership_controls" "this" {
  for_each = local.buckets
  bucket   = aws_s3_bucket.this[each.key].id

  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

resource "aws_s3_bucket_logging" "this" {
  for_each      = { for k, v in local.buckets : k => v if v.log }
  bucket        = aws_s3_bucket.this[each.key].id
  target_bucket = aws_s3_bucket.this["logs"].id
  target_prefix = "${each.key}/"

  # S3 refuses to turn logging on until the target's policy grants logging.s3.amazonaws.com
  # (InvalidTargetBucketForLogging): the id above orders this after the bucket, not its policy.
  depends_on = [aws_s3_bucket_policy.this]
}

locals {
  deny_insecure_transport = {
    for k, v in local.buckets : k => {
      Sid       = "DenyInsecureTransport"
      Effect    = "Deny"
      Principal = "*"
      Action    = "s3:*"
      Resource  = ["arn:${local.partition}:s3:::${v.name}", "arn:${local.partition}:s3:::${v.name}/*"]
      Condition = { Bool = { "aws:SecureTransport" = "false" } }
    }
  }

  bucket_policies = {
    landing        = [local.deny_insecure_transport["landing"]]
    artifacts      = [local.deny_insecure_transport["artifacts"]]
    athena_results = [local.deny_insecure_transport["athena_results"]]
    logs = [
      local.deny_insecure_transport["logs"],
      {
        Sid       = "S3ServerAccessLogDelivery"
        Effect    = "Allow"
        Principal = { Service = "logging.s3.amazonaws.com" }
        Action    = "s3:PutObject"
        Resource  = "arn:${local.partition}:s3:::${local.log_bucket}/*"
        Condition = {
          StringEquals = { "aws:SourceAccount" = local.account_id }
          ArnLike      = { "aws:SourceArn" = [for k, v in local.buckets : "arn:${local.partition}:s3:::${v.name}" if v.log] }
        }
      },
    ]
  }
}

resource "aws_s3_bucket_policy" "this" {
  for_each = local.buckets
  bucket   = aws_s3_bucket.this[each.key].id
  policy   = jsonencode({ Version = "2012-10-17", Statement = local.bucket_policies[each.key] })

  depends_on = [aws_s3_bucket_public_access_block.this]
}

resource "aws_s3_bucket_lifecycle_configuration" "this" {
  for_each = local.buckets
  bucket   = aws_s3_bucket.this[each.key].id

  rule {
    id     = "abort-incomplete-uploads"
    status = "Enabled"
    filter {}
    abort_incomplete_multipart_upload {
      days_after_initiation = 7
    }
  }

  rule {
    id     = "expire-noncurrent-versions"
    status = "Enabled"
    filter {}
    noncurrent_version_expiration {
      noncurrent_days = var.noncurrent_version_expiration_days
    }
  }

  dynamic "rule" {
    for_each = each.value.lifecycle == "landing" ? [1] : []
    content {
      id     = "transition-landed-objects"
      status = "Enabled"
      filter {
        prefix = "Binance/"
      }
      transition {
        days          = var.landing_transition_days
        storage_class = var.landing_transition_storage_class
      }
    }
  }

  dynamic "rule" {
    for_each = each.value.lifecycle == "artifacts" ? [1] : []
    content {
      id     = "expire-old-bundles"
      status = "Enabled"
      filter {}
      expiration {
        days = var.artifact_retention_days
      }
    }
  }

  dynamic "rule" {
    for_each = each.value.lifecycle == "athena-results" ? [1] : []
    content {
      id     = "expire-query-results"
      status = "Enabled"
      filter {}
      expiration {
        days = var.athena_results_retention_days
      }
    }
  }

  dynamic "rule" {
    for_each = each.value.lifecycle == "logs" ? [1] : []
    content {
      id     = "expire-access-logs"
      status = "Enabled"
      filter {}
      expiration {
        days = var.log_retention_days
      }
    }
  }

  depends_on = [aws_s3_bucket_versioning.this]
}

# New objects are announced on EventBridge, for consumers that prefer events to sensors.
resource "aws_s3_bucket_notification" "landing" {
  bucket      = aws_s3_bucket.this["landing"].id
  eventbridge = true
}
