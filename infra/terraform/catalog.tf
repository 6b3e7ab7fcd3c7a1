# Athena reads new minutes the moment they land: partition projection computes the
# partitions from the layouts, no crawler, no MSCK REPAIR. Two tables, one per layout:
# `trades` over the per-symbol `Binance/{SYMBOL}/YYYY/MM/DD/HH/mm/` (COLLECTOR_WATCHED_SYMBOLS)
# and `trades_market` over the market-wide `Binance/_market/YYYY/MM/DD/HH/mm/` (every other
# captured symbol).
#
# `_SUCCESS` (a JSON manifest) sits in every minute's folder, next to the data, and neither
# table has a setting for it: the `trades` table has always relied on the reader skipping hidden
# names. In Trino's Hive connector, which Athena engine version 3 is built on, the listing skips
# every name beginning with `_` or `.` below the partition's location, and only there, never in
# the location itself (HiveFileIterator, TestHiveFileIterator: `root/_hidden.txt` is skipped, a
# listing root inside `root/.hidden/` is not); Hive and Spark skip the same names. So `_SUCCESS`
# is never read as Parquet, and `_market` in the market table's location is an ordinary segment.
# The rule was not found stated in Athena's own documentation (its table-location page only
# advises against underscores in LOCATION): check it once with a query on a landed minute.
resource "aws_glue_catalog_database" "lake" {
  name        = replace("${var.name}_lake", "-", "_")
  description = "Trade Lake landing zone"
}

locals {
  # Must match the Parquet schema the collector writes (collector/parquet.py) and the README's
  # schema table; tests/test_schema_parity.py checks all three.
  trade_columns = [
    { name = "symbol", type = "string", comment = "e.g. BTCUSDT" },
    { name = "trade_id", type = "bigint", comment = "Binance trade id, consecutive per symbol" },
    { name = "price", type = "decimal(18,8)", comment = "exact price" },
    { name = "quantity", type = "decimal(18,8)", comment = "exact base quantity" },
    { name = "trade_time", type = "timestamp", comment = "trade time, UTC" },
    { name = "event_time", type = "timestamp", comment = "event time, UTC; null in archive objects (the archive has none)" },
    { name = "is_buyer_maker", type = "boolean", comment = "the buyer was the maker" },
    { name = "received_at", type = "timestamp", comment = "collector clock at arrival, UTC; null in archive objects" },
  ]
}

resource "aws_glue_catalog_table" "trades" {
  name          = "trades"
  database_name = aws_glue_catalog_database.lake.name
  description   = "Binance spot trades, one row per trade, minute-partitioned by trade time"
  table_type    = "EXTERNAL_TABLE"

  parameters = {
    EXTERNAL                          = "TRUE"
    classification                    = "parquet"
    "projection.enabled"              = "true"
    "projection.pair.type"            = "enum"
    "projection.pair.values"          = join(",", var.catalog_symbols)
    "projection.minute.type"          = "date"
    "projection.minute.format"        = "yyyy/MM/dd/HH/mm"
    "projection.minute.range"         = "${var.catalog_start},NOW"
    "projection.minute.interval"      = "1"
    "projection.minute.interval.unit" = "MINUTES"
    "storage.location.template"       = "s3://${local.landing_bucket}/Binance/$${pair}/$${minute}/"
  }

  # Partition keys cannot share a name with a column: `pair` is the symbol in the path,
  # `minute` the path's yyyy/MM/dd/HH/mm.
  partition_keys {
    name    = "pair"
    type    = "string"
    comment = "symbol segment of the path"
  }

  partition_keys {
    name    = "minute"
    type    = "string"
    comment = "yyyy/MM/dd/HH/mm segment of the path (UTC)"
  }

  storage_descriptor {
    location      = "s3://${local.landing_bucket}/Binance/"
    input_format  = "org.apache.hadoop.hive.ql.io.parquet.MapredParquetInputFormat"
    output_format = "org.apache.hadoop.hive.ql.io.parquet.MapredParquetOutputFormat"

    ser_de_info {
      serialization_library = "org.apache.hadoop.hive.ql.io.parquet.serde.ParquetHiveSerDe"
    }

    dynamic "columns" {
      for_each = local.trade_columns
      content {
        name    = columns.value.name
        type    = columns.value.type
        comment = columns.value.comment
      }
    }
  }
}

# The market-wide layout: one Parquet part a minute (more only when late trades arrive) for all
# the symbols COLLECTOR_WATCHED_SYMBOLS leaves out, so the only partition is the minute. The part
# holds the same columns as a per-symbol object, the `symbol` column included: readers filter on
# `symbol`, and since a part is sorted by symbol then trade_id, in row groups with min/max
# statistics on `symbol`, a reader that uses row-group statistics skips the other symbols' row
# groups. A symbol's trades are in `trades` for the minutes it was watched and in
# `trades_market` for the others.
resource "aws_glue_catalog_table" "trades_market" {
  name          = "trades_market"
  database_name = aws_glue_catalog_database.lake.name
  description   = "Binance spot trades of the unwatched symbols, one row per trade, one part a minute by trade time; filter on symbol"
  table_type    = "EXTERNAL_TABLE"

  parameters = {
    EXTERNAL                          = "TRUE"
    classification                    = "parquet"
    "projection.enabled"              = "true"
    "projection.minute.type"          = "date"
    "projection.minute.format"        = "yyyy/MM/dd/HH/mm"
    "projection.minute.range"         = "${var.catalog_start},NOW"
    "projection.minute.interval"      = "1"
    "projection.minute.interval.unit" = "MINUTES"
    "storage.location.template"       = "s3://${local.landing_bucket}/Binance/_market/$${minute}/"
  }

  partition_keys {
    name    = "minute"
    type    = "string"
    comment = "yyyy/MM/dd/HH/mm segment of the path (UTC)"
  }

  storage_descriptor {
    location      = "s3://${local.landing_bucket}/Binance/_market/"
    input_format  = "org.apache.hadoop.hive.ql.io.parquet.MapredParquetInputFormat"
    output_format = "org.apache.hadoop.hive.ql.io.parquet.MapredParquetOutputFormat"

    ser_de_info {
      serialization_library = "org.apache.hadoop.hive.ql.io.parquet.serde.ParquetHiveSerDe"
    }

    dynamic "columns" {
      for_each = local.trade_columns
      content {
        name    = columns.value.name
        type    = columns.value.type
        comment = columns.value.comment
      }
    }
  }
}
