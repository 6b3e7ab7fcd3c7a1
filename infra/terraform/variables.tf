variable "name" {
  description = "Prefix for every resource name, and the `<name>` of the `<name>-landing-zone-<account>` bucket."
  type        = string
  default     = "trade-lake"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,30}[a-z0-9]$", var.name))
    error_message = "name must be 3-32 lowercase letters, digits and hyphens, starting with a letter."
  }
}

variable "region" {
  description = "AWS region. Binance's matching engine is in Tokyo, and Binance refuses some US-region hosts."
  type        = string
  default     = "ap-northeast-1"
}

variable "tags" {
  description = "Extra tags for every resource."
  type        = map(string)
  default     = {}
}

# ---- network --------------------------------------------------------------------------------

variable "vpc_cidr" {
  description = "CIDR block of the collector's VPC."
  type        = string
  default     = "10.42.0.0/24"

  validation {
    condition     = can(cidrhost(var.vpc_cidr, 0))
    error_message = "vpc_cidr must be a valid IPv4 CIDR block."
  }
}

variable "public_subnet_cidr" {
  description = "CIDR block of the one public subnet, inside vpc_cidr."
  type        = string
  default     = "10.42.0.0/26"
}

variable "availability_zone" {
  description = "Availability zone of the subnet; empty means <region>a."
  type        = string
  default     = ""
}

variable "ssh_cidrs" {
  description = "CIDR blocks allowed to reach SSH. Empty (the default) opens no inbound port: administer through SSM Session Manager."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for c in var.ssh_cidrs : can(cidrhost(c, 0)) && !endswith(c, "/0")])
    error_message = "ssh_cidrs must be valid CIDR blocks, and never a /0: SSH is not opened to the whole internet."
  }
}

# ---- storage --------------------------------------------------------------------------------

variable "landing_encryption" {
  description = "Landing bucket encryption: \"aws:kms\" (the stack's customer-managed key) or \"AES256\" (SSE-S3)."
  type        = string
  default     = "aws:kms"

  validation {
    condition     = contains(["aws:kms", "AES256"], var.landing_encryption)
    error_message = "landing_encryption must be \"aws:kms\" or \"AES256\"."
  }
}

variable "landing_transition_days" {
  description = "Days after which landed objects move to landing_transition_storage_class. S3 skips objects under 128 KB by default, which most minute files are; the rule pays off for larger batches."
  type        = number
  default     = 90

  validation {
    condition     = var.landing_transition_days >= 30
    error_message = "landing_transition_days must be at least 30 (the minimum for infrequent-access classes)."
  }
}

variable "landing_transition_storage_class" {
  description = "Storage class landed objects move to after landing_transition_days."
  type        = string
  default     = "GLACIER_IR"

  validation {
    condition     = contains(["STANDARD_IA", "INTELLIGENT_TIERING", "GLACIER_IR"], var.landing_transition_storage_class)
    error_message = "landing_transition_storage_class must be STANDARD_IA, INTELLIGENT_TIERING or GLACIER_IR (classes Athena can still read)."
  }
}

variable "noncurrent_version_expiration_days" {
  description = "Days after which overwritten or deleted object versions are removed (the collector never overwrites; this catches manual changes)."
  type        = number
  default     = 30
}

variable "artifact_retention_days" {
  description = "Days to keep CodeDeploy bundles and Lambda packages in the artifact bucket."
  type        = number
  default     = 90
}

# ---- compute --------------------------------------------------------------------------------

variable "instance_type" {
  description = "EC2 instance type of the collector. t3.small (2 vCPU, 2 GiB) carries BTCUSDT with a wide margin."
  type        = string
  default     = "t3.small"
}

variable "ami_id" {
  description = "AMI for the collector; empty uses the latest Amazon Linux 2023 (x86_64) from the public SSM parameter."
  type        = string
  default     = ""
}

variable "root_volume_gb" {
  description = "Root volume size in GiB; the spool lives there while S3 is unreachable."
  type        = number
  default     = 30
}

variable "ssm_parameter_name" {
  description = "SSM Parameter Store name holding the collector's .env (a SecureString)."
  type        = string
  default     = "/mlops/collector/env"

  validation {
    condition     = can(regex("^/[A-Za-z0-9_.\\-/]+$", var.ssm_parameter_name))
    error_message = "ssm_parameter_name must be an absolute parameter path such as /mlops/collector/env."
  }
}

variable "metrics_namespace" {
  description = "CloudWatch namespace the collector publishes its alarm metrics to (COLLECTOR_CLOUDWATCH_NAMESPACE)."
  type        = string
  default     = "TradeLake/Collector"
}

# ---- lambda ---------------------------------------------------------------------------------

variable "heartbeat_data_source" {
  description = "The `{dataSource}` segment of the heartbeat keys `Ext/{dataSource}/YYYY/MM/DD/...-News.json`."
  type        = string
  default     = "TEST"

  validation {
    condition     = can(regex("^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$", var.heartbeat_data_source))
    error_message = "heartbeat_data_source must be letters, digits, '_' and '-' (at most 64)."
  }
}

variable "heartbeat_schedule" {
  description = "EventBridge schedule expression of the heartbeat."
  type        = string
  default     = "rate(5 minutes)"
}

variable "lambda_package_path" {
  description = "Path of the heartbeat's zip for the first apply (`python3 -m zipfile -c build/news_heartbeat.zip lambda/news_heartbeat.py`); later code comes from the deploy workflow."
  type        = string
  default     = "../../build/news_heartbeat.zip"
}

# ---- delivery -------------------------------------------------------------------------------

variable "github_repository" {
  description = "The GitHub repository (owner/name) whose main branch may deploy. No wildcards."
  type        = string

  validation {
    condition     = can(regex("^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$", var.github_repository))
    error_message = "github_repository must be exactly owner/name, without wildcards."
  }
}

variable "create_github_oidc_provider" {
  description = "Create the account's GitHub OIDC provider. Set false when the account already has one (there can be only one per URL)."
  type        = bool
  default     = true
}

variable "github_oidc_provider_arn" {
  description = "ARN of an existing GitHub OIDC provider, used when create_github_oidc_provider is false."
  type        = string
  default     = ""
}

# ---- monitoring -----------------------------------------------------------------------------

variable "alarm_email" {
  description = "Email address subscribed to the alarm topic; empty subscribes nobody."
  type        = string
  default     = ""
}

variable "log_retention_days" {
  description = "Retention of the stack's CloudWatch log groups, in days."
  type        = number
  default     = 365

  validation {
    condition     = contains([1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653], var.log_retention_days)
    error_message = "log_retention_days must be a value CloudWatch Logs accepts (e.g. 30, 90, 365)."
  }
}

variable "spool_alarm_bytes" {
  description = "Alarm when the collector's spool holds more than this many bytes for 15 minutes (uploads are not keeping up)."
  type        = number
  default     = 50000000
}

# ---- catalog --------------------------------------------------------------------------------

variable "catalog_symbols" {
  description = "Symbols the trades table's partition projection enumerates: the per-symbol layout's (the collector's COLLECTOR_SYMBOLS, or COLLECTOR_WATCHED_SYMBOLS when set). The market-wide table needs none."
  type        = list(string)
  default     = ["BTCUSDT"]

  validation {
    # Binance symbols are letters and digits; `_market` (the market-wide folder) is not one.
    condition     = alltrue([for s in var.catalog_symbols : can(regex("^[A-Z0-9]{2,20}$", s))])
    error_message = "catalog_symbols must be Binance symbols such as BTCUSDT (2-20 capital letters and digits)."
  }
}

variable "catalog_start" {
  description = "First minute the partition projection covers, as yyyy/MM/dd/HH/mm (UTC)."
  type        = string
  default     = "2024/01/01/00/00"
}

# ---- tables ---------------------------------------------------------------------------------

variable "athena_results_retention_days" {
  description = "Days Athena's query results are kept in the results bucket before they expire."
  type        = number
  default     = 30

  validation {
    condition     = var.athena_results_retention_days >= 1
    error_message = "athena_results_retention_days must be at least 1."
  }
}

variable "athena_bytes_scanned_cutoff" {
  description = "The Athena workgroup cancels a query once it has scanned this many bytes (Athena's minimum is 10 MB); the default is 1 TiB."
  type        = number
  default     = 1099511627776

  validation {
    condition     = var.athena_bytes_scanned_cutoff >= 10485760
    error_message = "athena_bytes_scanned_cutoff must be at least 10485760 (10 MB, Athena's minimum)."
  }
}
