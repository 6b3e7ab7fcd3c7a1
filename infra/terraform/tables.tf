# The lake's Iceberg tables, `trades` and `bars_1m`, which `collector compact` (a daily systemd
# timer on the collector's instance, codedeploy/collector-compact.timer) writes through pyiceberg's
# Glue catalog: Terraform owns their database, the compactor creates and commits the tables in it.
#
# The database's location is the warehouse prefix, so pyiceberg puts each table at
# s3://<landing bucket>/Tables/<table>/ (a database location wins over the catalog's warehouse).
# The compactor's permissions (iam.tf, local.compactor_policy) reach this one database and this
# one prefix.
resource "aws_glue_catalog_database" "tables" {
  name         = local.table_namespace
  description  = "Trade Lake's Iceberg tables (trades, bars_1m), written by collector compact"
  location_uri = local.table_warehouse
}

# Athena for the tables (and the landing zone's projected tables in catalog.tf): engine version 3
# reads Iceberg; the workgroup's settings override the client's, so every query's results are
# written encrypted with the stack's key into the results bucket (storage.tf), which expires them.
resource "aws_athena_workgroup" "lake" {
  name          = var.name
  description   = "Queries over Trade Lake: results encrypted in ${local.results_bucket}"
  state         = "ENABLED"
  force_destroy = false

  configuration {
    enforce_workgroup_configuration    = true
    publish_cloudwatch_metrics_enabled = true
    bytes_scanned_cutoff_per_query     = var.athena_bytes_scanned_cutoff

    engine_version {
      selected_engine_version = "Athena engine version 3"
    }

    result_configuration {
      output_location       = "s3://${local.results_bucket}/"
      expected_bucket_owner = local.account_id

      encryption_configuration {
        encryption_option = "SSE_KMS"
        kms_key_arn       = aws_kms_key.main.arn
      }
    }
  }
}
