"""Typed settings from the environment and an optional `.env` file.

Every setting is `COLLECTOR_<NAME>`; `.env.example` lists them all with defaults and meaning.
Validation collects every problem at once and names the setting and the accepted values, so
one run of `collector check-config` shows all that is wrong.
"""

from __future__ import annotations

import io
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

from collector.exceptions import ConfigError

__all__ = [
    "ENV_PREFIX",
    "S3Destination",
    "Settings",
    "env_name",
    "load_settings",
    "parse_destination",
    "parse_symbols",
]

ENV_PREFIX = "COLLECTOR_"

TimeUnit = Literal["ms", "us"]
OutputFormat = Literal["parquet", "csv.gz"]

_SYMBOL_RE = re.compile(r"^[A-Z0-9]{2,20}$")
# S3 bucket naming rules: 3-63 chars, lowercase letters, digits, dots and hyphens,
# starting and ending with a letter or digit.
_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_SSE_VALUES = ("AES256", "aws:kms")


@dataclass(frozen=True, slots=True)
class S3Destination:
    bucket: str
    prefix: str  # "" or ends with "/"

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    """The resolved configuration. Times are seconds (`_s`), sizes bytes (`_bytes`)."""

    symbols: tuple[str, ...] = ("BTCUSDT",)
    # COLLECTOR_SYMBOLS=ALL (or ALL:USDT,FDUSD): every TRADING spot symbol exchangeInfo lists
    # (of these quote assets), asked at start and again every `symbols_refresh_s`; `symbols`
    # is then empty.
    all_symbols: bool = False
    quote_assets: tuple[str, ...] = ()  # with all_symbols: only these quotes (empty: every quote)
    symbols_refresh_s: float = 300.0
    # Streams one WebSocket connection carries (Binance allows 1,024). 200 keeps the URL of 20-letter
    # symbols under Binance's ~8,000 characters and a connection's share of the market small;
    # the README's "Whole market" section says why.
    streams_per_connection: int = 200
    # COLLECTOR_WATCHED_SYMBOLS: the symbols that keep the per-symbol layout (an object and a
    # `_SUCCESS` per symbol and minute, what sensors watch). None (ALL, the default): every
    # symbol. The rest land in the market-wide layout: one object and one marker a minute.
    watched_symbols: tuple[str, ...] | None = None
    # The most rows a market-wide part holds: a minute with more is split into several parts, so
    # assembling a minute holds one part (about 7 MB at a million rows) whatever the minute
    # holds. A whole market's usual minute (about 120,000 trades) is one part.
    market_part_rows: int = 1_048_576
    ws_url: str = "wss://data-stream.binance.vision"
    time_unit: TimeUnit = "ms"
    destination: Path | S3Destination = Path("landing")
    output_format: OutputFormat = "parquet"
    # 2 MB of raw frames is about 10,000 BTCUSDT trades: one busy minute, a ~60 kB Parquet file.
    max_batch_bytes: int = 2_000_000
    # A quiet symbol still lands at least once a minute, so downstream never waits longer.
    max_batch_age_s: float = 60.0
    # Trades of a minute keep arriving for a moment after the next minute's first trade
    # (several connections, clock skew between matching engine shards): wait this long.
    minute_grace_s: float = 5.0
    # A minute's `_SUCCESS` marker waits at least this long past the minute's end, for trades the
    # exchange delivers late on a quiet stream; continuity and landing are checked as well.
    marker_grace_s: float = 10.0
    # Trades in memory between the socket and the spool (open batches, sealed batches waiting,
    # batches being encoded), counted as their raw frames: past it the stream is held back and
    # the largest open batches are sealed early (collector.landing.inflight). 24 MB keeps a
    # burst under 100 MB resident, plain ws:// on loopback included (docs/performance.md), and is
    # above what a whole market's open minutes hold at 2,000 trades/s (18 MB at their peak).
    buffer_max_bytes: int = 24_000_000
    spool_dir: Path = Path("spool")
    # Disk the spool may use while the destination is unreachable: at BTCUSDT's ~10 kB a minute
    # of Parquet, 5 GB is years; for a whole market it is days. Beyond it new batches are
    # dropped (the oldest kept) and their trade-id ranges recorded.
    spool_max_bytes: int = 5_000_000_000
    # Shorter than systemd's TimeoutStopSec so the collector, not SIGKILL, ends the shutdown.
    shutdown_timeout_s: float = 20.0
    reconnect_initial_delay_s: float = 0.5
    # Capped so a long outage still retries twice a minute, far inside Binance's
    # 300 connection attempts per 5 minutes.
    reconnect_max_delay_s: float = 30.0
    # Binance's REST API for backfill (historicalTrades is not served by data-api.binance.vision).
    rest_url: str = "https://api.binance.com"
    # Gaps larger than this are recorded, not fetched: at 1,000 trades a call and half the
    # weight budget, 5 million trades take about 40 minutes of REST calls.
    backfill_max_trades: int = 5_000_000
    # Binance's public trade archive, for `collector import` and `collector verify`.
    archive_url: str = "https://data.binance.vision"
    # A range left unfilled for a reason that passes (REST down, a ban) is tried again this long
    # after, up to 5 attempts; the minutes' markers are rewritten when it fills.
    backfill_retry_s: float = 900.0
    # Binance closes connections at 24 hours; rotate (make before break) before that.
    connection_max_age_s: float = 23.5 * 3600
    # No frame for this long and the connection is treated as dead (BTCUSDT trades every
    # second; raise it for quiet symbols).
    stream_silence_s: float = 60.0
    s3_endpoint_url: str | None = None
    s3_region: str | None = None
    s3_sse: str = "AES256"
    s3_kms_key_id: str | None = None
    log_level: str = "info"
    # json: one JSON object per line; console: coloured, aligned lines for a person; auto: console
    # when stdout is a terminal, else json (the systemd unit says json).
    log_format: str = "auto"
    # A `collector.stats` line this often: enough to see progress in the journal, not a flood.
    stats_interval_s: float = 60.0
    # /health and /metrics on 127.0.0.1; 0 turns the endpoint off.
    health_port: int = 9108
    # Publish the alarm metrics here once a minute; empty publishes nothing.
    cloudwatch_namespace: str = ""
    # Read settings from this SSM parameter at start (a .env body); empty reads none.
    ssm_parameter: str = ""
    # The lake's tables (`collector compact`, `import --into table`): their catalog (sql: a
    # sqlite file in the warehouse; glue: the AWS Glue Data Catalog), where their files go (a
    # directory or s3://bucket/prefix; empty: beside the destination, see `table_location`),
    # the namespace (the Glue database) of `trades` and `bars_1m`, and how long a replaced
    # snapshot stays readable (time travel) before its files may go.
    table_catalog: str = ""
    table_warehouse: str = ""
    table_namespace: str = "trade_lake"
    table_snapshot_days: float = 7.0

    @property
    def is_s3(self) -> bool:
        return isinstance(self.destination, S3Destination)

    def table_location(self) -> tuple[str, Path | S3Destination]:
        """(catalog kind, warehouse): as set, or `sql` in `<destination>-tables/` beside a local
        landing directory, `glue` in `s3://bucket/<prefix>Tables/` for an S3 one."""
        warehouse: Path | S3Destination
        if self.table_warehouse:
            warehouse = parse_destination(self.table_warehouse)
        elif isinstance(self.destination, S3Destination):
            warehouse = S3Destination(self.destination.bucket, f"{self.destination.prefix}Tables/")
        else:
            warehouse = self.destination.with_name(f"{self.destination.name}-tables")
        kind = self.table_catalog or ("glue" if isinstance(warehouse, S3Destination) else "sql")
        return kind, warehouse

    @property
    def combined(self) -> bool:
        """Frames come wrapped as {"stream", "data"}: every setting but one fixed symbol."""
        return self.all_symbols or len(self.symbols) > 1

    def stream_url(self, symbols: tuple[str, ...] | None = None) -> str:
        """The WebSocket URL of a connection carrying `symbols` (default: the configured ones):
        a raw stream for one fixed symbol, a combined stream otherwise."""
        base = self.ws_url.rstrip("/")
        names = [f"{s.lower()}@trade" for s in (self.symbols if symbols is None else symbols)]
        if not self.combined:
            url = f"{base}/ws/{names[0]}"
            sep = "?"
        else:
            url = f"{base}/stream?streams={'/'.join(names)}"
            sep = "&"
        if self.time_unit == "us":
            url += f"{sep}timeUnit=MICROSECOND"
        return url

    def watched(self, symbol: str) -> bool:
        """Does `symbol` land in the per-symbol layout (else in the market-wide one)?"""
        return self.watched_symbols is None or symbol in self.watched_symbols

    def describe_layout(self) -> str:
        if self.watched_symbols is None:
            return "per symbol (every symbol watched)"
        watched = ",".join(self.watched_symbols[:5]) + (
            f" and {len(self.watched_symbols) - 5} more" if len(self.watched_symbols) > 5 else ""
        )
        return f"per symbol for {watched or 'none'}; every other symbol market-wide (Binance/_market/)"

    def describe_symbols(self) -> str:
        if self.all_symbols:
            return "ALL" + (f":{','.join(self.quote_assets)}" if self.quote_assets else "")
        if len(self.symbols) > 5:
            return f"{','.join(self.symbols[:5])} and {len(self.symbols) - 5} more"
        return ",".join(self.symbols)

    def as_env(self) -> dict[str, Any]:
        """The settings under the names a user sets (`COLLECTOR_*`), credentials in URLs masked."""
        return {env_name(key): value for key, value in self.redacted().items()}

    def redacted(self) -> dict[str, Any]:
        """The settings as plain values, with credentials in URLs masked, for printing."""
        out: dict[str, Any] = {}
        for key, raw in asdict(self).items():
            value = raw
            if key in ("all_symbols", "quote_assets"):
                continue  # both are spelt in COLLECTOR_SYMBOLS (ALL, ALL:USDT,FDUSD)
            if key == "symbols" and self.all_symbols:
                value = self.describe_symbols()
            elif key == "watched_symbols":
                value = "ALL" if raw is None else (",".join(raw) or "NONE")
            elif key == "destination":
                value = str(self.destination)
            elif isinstance(raw, Path):
                value = str(raw)
            elif isinstance(raw, tuple):
                value = ",".join(raw)
            if isinstance(value, str) and "://" in value:
                value = _redact_url(value)
            out[key] = value
        return out


def env_name(field: str) -> str:
    """The variable that sets a Settings field: output_format is COLLECTOR_FORMAT, the rest by name."""
    return f"{ENV_PREFIX}{'FORMAT' if field == 'output_format' else field.upper()}"


def _redact_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.username or parts.password:
        host = parts.hostname or ""
        if parts.port:
            host += f":{parts.port}"
        parts = parts._replace(netloc=f"***@{host}")
    return urlunsplit(parts)


def parse_destination(value: str) -> Path | S3Destination:
    """`s3://bucket[/prefix]` or a local directory path. Raises ValueError with the reason."""
    if value.startswith("s3://"):
        rest = value[len("s3://") :]
        bucket, _, prefix = rest.partition("/")
        if not _BUCKET_RE.fullmatch(bucket) or ".." in bucket:
            raise ValueError(
                f"{bucket!r} is not a valid S3 bucket name (3-63 lowercase letters, digits, dots "
                "and hyphens, starting and ending with a letter or digit)"
            )
        prefix = prefix.strip("/")
        return S3Destination(bucket=bucket, prefix=f"{prefix}/" if prefix else "")
    if "://" in value:
        raise ValueError(f"{value!r}: only s3:// URLs or local directory paths are accepted")
    if value.lower().startswith("s3:") or value.lower().startswith("s3a:"):
        raise ValueError(f"{value!r} looks like an S3 URL but is not one; write s3://bucket/prefix")
    if not value.strip():
        raise ValueError("empty; give a directory path or an s3://bucket/prefix URL")
    return Path(value)


class _Reader:
    """Reads settings from a mapping, collecting every problem instead of stopping at the first."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env
        self.problems: list[str] = []

    def raw(self, name: str) -> str | None:
        value = self.env.get(ENV_PREFIX + name)
        if value is None:
            return None
        value = value.strip()
        return value or None

    def convert(self, name: str, default: Any, parse: Callable[[str], Any], accepted: str) -> Any:
        value = self.raw(name)
        if value is None:
            return default
        try:
            return parse(value)
        except (ValueError, TypeError) as exc:
            self.problems.append(f"{ENV_PREFIX}{name}={value!r} is invalid: {exc}; accepted: {accepted}")
            return default

    def positive_float(self, name: str, default: float) -> float:
        def parse(text: str) -> float:
            try:
                number = float(text)
            except ValueError:
                raise ValueError("not a number") from None
            if not number > 0 or number == float("inf"):
                raise ValueError("must be a positive number of seconds")
            return number

        return float(self.convert(name, default, parse, "a positive number of seconds"))

    def bounded_int(self, name: str, default: int, low: int, high: int) -> int:
        def parse(text: str) -> int:
            try:
                number = int(text.replace("_", ""))
            except ValueError:
                raise ValueError("not a whole number") from None
            if not low <= number <= high:
                raise ValueError(f"must be between {low:,} and {high:,}")
            return number

        return int(self.convert(name, default, parse, f"an integer from {low} to {high}"))

    def choice(self, name: str, default: str, choices: tuple[str, ...]) -> str:
        def parse(text: str) -> str:
            for choice in choices:
                if text.lower() == choice.lower():
                    return choice
            raise ValueError("unknown value")

        return str(self.convert(name, default, parse, " | ".join(choices)))


def parse_symbols(text: str) -> tuple[str, ...]:
    symbols = tuple(dict.fromkeys(s.strip().upper() for s in text.split(",") if s.strip()))
    if not symbols:
        raise ValueError("no symbol given")
    bad = [s for s in symbols if not _SYMBOL_RE.fullmatch(s)]
    if bad:
        raise ValueError(f"{', '.join(bad)} not a Binance symbol (2-20 letters and digits)")
    return symbols


_QUOTE_RE = re.compile(r"^[A-Z0-9]{2,10}$")


def parse_symbol_setting(text: str) -> tuple[bool, tuple[str, ...], tuple[str, ...]]:
    """COLLECTOR_SYMBOLS: (all, quote assets, symbols). `ALL`, `ALL:USDT,FDUSD`, or a list."""
    head, colon, rest = text.strip().partition(":")
    if head.strip().upper() != "ALL":
        return False, (), parse_symbols(text)
    quotes = tuple(dict.fromkeys(q.strip().upper() for q in rest.split(",") if q.strip()))
    if colon and not quotes:
        raise ValueError("ALL: names no quote asset; write ALL, or ALL:USDT,FDUSD")
    bad = [q for q in quotes if not _QUOTE_RE.fullmatch(q)]
    if bad:
        raise ValueError(f"{', '.join(bad)} not a quote asset (2-10 letters and digits)")
    return True, quotes, ()


def parse_watched(text: str) -> tuple[str, ...] | None:
    """COLLECTOR_WATCHED_SYMBOLS: None for ALL (every symbol per symbol), () for NONE, or a list."""
    word = text.strip().upper()
    if word == "ALL":
        return None
    if word == "NONE":
        return ()
    return parse_symbols(text)


def _parse_ws_url(text: str) -> str:
    parts = urlsplit(text)
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise ValueError("must be a ws:// or wss:// URL with a host")
    if parts.query or parts.fragment:
        raise ValueError("give the base URL only; the stream path is built from COLLECTOR_SYMBOLS")
    return text.rstrip("/")


def _parse_http_url(text: str) -> str:
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an http:// or https:// URL")
    return text


def _parse_region(text: str) -> str:
    if not re.fullmatch(r"[a-z]{2}(-[a-z]+)+-\d", text):
        raise ValueError("not an AWS region name such as ap-northeast-1")
    return text


def _parse_namespace(text: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9.\-_/#:]{1,255}", text) or text.startswith("AWS/"):
        raise ValueError("not a custom CloudWatch namespace")
    return text


def _parse_parameter_name(text: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9_.\-/]{1,2048}", text):
        raise ValueError("not an SSM parameter name")
    return text


def _parse_log_level(text: str) -> str:
    level = text.lower()
    if level not in ("debug", "info", "warning", "error"):
        raise ValueError("unknown level")
    return level


def load_settings(
    env: Mapping[str, str] | None = None,
    env_file: Path | None = None,
    ssm_text: str | None = None,
) -> Settings:
    """Resolve settings: the environment (default: the process's) over an SSM parameter's
    `.env` body (`ssm_text`) over an optional `.env` file.

    Raises ConfigError listing every invalid setting.
    """
    merged = _sources(env, env_file, ssm_text)
    r = _Reader(merged)
    known = {f"{ENV_PREFIX}{name.upper()}" for name in _KNOWN}
    unknown = sorted(k for k in merged if k.startswith(ENV_PREFIX) and k not in known)
    for key in unknown:
        r.problems.append(
            f"{key} is not a setting of this collector (see .env.example); remove it or fix its name"
        )
    settings = _read(r)
    if r.problems:
        raise ConfigError(r.problems)
    return settings


def _sources(env: Mapping[str, str] | None, env_file: Path | None, ssm_text: str | None) -> dict[str, str]:
    """The `.env` file, under the SSM parameter's body, under the environment."""
    merged: dict[str, str] = {}
    if env_file is not None:
        merged.update(_dotenv(_env_file_text(env_file), f"env file {str(env_file)!r}"))
    if ssm_text is not None:
        merged.update(_dotenv(ssm_text, "the SSM parameter's text"))
    merged.update(os.environ if env is None else env)
    return merged


def _env_file_text(path: Path) -> str:
    """A `.env` file's text: UTF-8 (with or without a byte-order mark), or a ConfigError that
    names the file and says what to do."""
    import codecs

    name = repr(str(path))
    if path.is_dir():
        raise ConfigError(
            [f"env file {name} is a directory; give the settings file itself (e.g. {str(path / '.env')!r})"]
        )
    if not path.exists():
        raise ConfigError([f"env file {name} does not exist; create it or drop --env-file"])
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError([f"env file {name} cannot be read: {exc.strerror}; fix its permissions"]) from None
    convert = f"convert it with: iconv -f {{0}} -t UTF-8 {path} > {path}.utf8 && mv {path}.utf8 {path}"
    for boms, encoding in (((codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE), "UTF-32"),
                           ((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE), "UTF-16")):  # fmt: skip
        if data.startswith(boms):
            raise ConfigError(
                [
                    f"env file {name} is {encoding} text (as some Windows editors save it); it must be "
                    f"UTF-8: save it as UTF-8, or {convert.format(encoding)}"
                ]
            )
    if b"\x00" in data:  # UTF-16 without a byte-order mark: every other byte is 0
        raise ConfigError(
            [
                f"env file {name} holds NUL bytes: UTF-16 text without a byte-order mark? It must be "
                f"UTF-8: save it as UTF-8, or {convert.format('UTF-16LE')}"
            ]
        )
    try:
        return data.decode("utf-8")  # python-dotenv drops a UTF-8 byte-order mark itself
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ConfigError(
            [
                f"env file {name} is not UTF-8 text (byte 0x{data[exc.start]:02x} on line {line}); it "
                "must be UTF-8: save it as UTF-8"
            ]
        ) from None


def _dotenv(text: str, where: str) -> dict[str, str]:
    """The values a `.env` body sets. A line python-dotenv cannot parse, or a setting with no
    `=`, is a ConfigError naming `where` and the line (python-dotenv would skip it, and the
    setting would silently keep its default)."""
    from dotenv import dotenv_values
    from dotenv.parser import parse_stream

    problems = []
    for binding in parse_stream(io.StringIO(text)):
        line, raw = binding.original.line, binding.original.string.strip()
        shown = repr(raw if len(raw) <= 60 else raw[:57] + "...")
        if binding.error and any(quote in raw for quote in "\"'"):
            problems.append(f"{where}, line {line}: {shown} has a quote that is not closed; close it")
        elif binding.error:
            problems.append(
                f"{where}, line {line}: {shown} is not NAME=value; fix it, or make it a comment with #"
            )
        elif binding.value is None and (binding.key or "").startswith(ENV_PREFIX):
            problems.append(f"{where}, line {line}: {binding.key} has no '='; write {binding.key}=value")
    if problems:
        raise ConfigError(problems)
    return {k: v for k, v in dotenv_values(stream=io.StringIO(text)).items() if v is not None}


def _read(r: _Reader) -> Settings:
    """Every setting from `r`, its problems collected in `r.problems`."""
    defaults = Settings()
    return Settings(
        **_read_symbols(r, defaults),
        **_read_landing(r, defaults),
        **_read_exchange(r, defaults),
        **_read_operations(r, defaults),
        **_read_table(r, defaults),
    )


def _read_symbols(r: _Reader, defaults: Settings) -> dict[str, Any]:
    """What is captured, and which symbols keep the per-symbol layout."""
    every, quotes, symbols = r.convert(
        "SYMBOLS",
        (False, (), defaults.symbols),
        parse_symbol_setting,
        "comma-separated symbols (BTCUSDT,ETHUSDT), ALL, or ALL:USDT,FDUSD",
    )
    watched = r.convert(
        "WATCHED_SYMBOLS", None, parse_watched, "ALL, NONE, or comma-separated symbols (BTCUSDT,ETHUSDT)"
    )
    if watched and not every and (strangers := [w for w in watched if w not in symbols]):
        r.problems.append(
            f"{ENV_PREFIX}WATCHED_SYMBOLS names {', '.join(strangers)}, not in {ENV_PREFIX}SYMBOLS; "
            "add them there or remove them here"
        )
    return {
        "symbols": symbols,
        "all_symbols": every,
        "quote_assets": quotes,
        "symbols_refresh_s": r.positive_float("SYMBOLS_REFRESH_S", defaults.symbols_refresh_s),
        # At most 1,024: Binance's limit per connection.
        "streams_per_connection": r.bounded_int(
            "STREAMS_PER_CONNECTION", defaults.streams_per_connection, 1, 1024
        ),
        "watched_symbols": watched,
        "market_part_rows": r.bounded_int("MARKET_PART_ROWS", defaults.market_part_rows, 10, 100_000_000),
    }


def _read_landing(r: _Reader, defaults: Settings) -> dict[str, Any]:
    """Where and how batches land: the destination, the format, batching, the spool, S3."""
    sse = r.choice("S3_SSE", defaults.s3_sse, _SSE_VALUES)
    kms_key = r.raw("S3_KMS_KEY_ID")
    if kms_key and sse != "aws:kms":
        r.problems.append(
            f"{ENV_PREFIX}S3_KMS_KEY_ID is set but {ENV_PREFIX}S3_SSE={sse}; set {ENV_PREFIX}S3_SSE=aws:kms "
            "to use the key, or remove the key id"
        )
    # At least 64 kB: smaller batches make more objects than data. At most 64 MB: a batch is
    # held in memory, encoded in one piece and uploaded in one PUT.
    batch = r.bounded_int("MAX_BATCH_BYTES", defaults.max_batch_bytes, 65_536, 64_000_000)
    buffer = r.bounded_int("BUFFER_MAX_BYTES", defaults.buffer_max_bytes, 1_000_000, 10**12)
    if buffer < 2 * batch:
        r.problems.append(
            f"{ENV_PREFIX}BUFFER_MAX_BYTES ({buffer:,}) is less than twice {ENV_PREFIX}MAX_BATCH_BYTES "
            f"({batch:,}): a batch fills up to that in memory while the one before is encoded; raise "
            f"it to at least {2 * batch:,} or lower {ENV_PREFIX}MAX_BATCH_BYTES"
        )
    return {
        "time_unit": r.choice("TIME_UNIT", defaults.time_unit, ("ms", "us")),
        "destination": r.convert(
            "DESTINATION", defaults.destination, parse_destination, "a directory path or s3://bucket/prefix"
        ),
        "output_format": r.choice("FORMAT", defaults.output_format, ("parquet", "csv.gz")),
        "max_batch_bytes": batch,
        "buffer_max_bytes": buffer,
        "max_batch_age_s": r.positive_float("MAX_BATCH_AGE_S", defaults.max_batch_age_s),
        "minute_grace_s": r.positive_float("MINUTE_GRACE_S", defaults.minute_grace_s),
        "marker_grace_s": r.positive_float("MARKER_GRACE_S", defaults.marker_grace_s),
        "spool_dir": Path(r.raw("SPOOL_DIR") or defaults.spool_dir),
        "spool_max_bytes": r.bounded_int("SPOOL_MAX_BYTES", defaults.spool_max_bytes, 10_000, 10**15),
        "shutdown_timeout_s": r.positive_float("SHUTDOWN_TIMEOUT_S", defaults.shutdown_timeout_s),
        "s3_endpoint_url": r.convert("S3_ENDPOINT_URL", None, _parse_http_url, "http(s):// URL"),
        "s3_region": r.convert("S3_REGION", None, _parse_region, "an AWS region such as ap-northeast-1"),
        "s3_sse": sse,
        "s3_kms_key_id": kms_key,
    }


def _read_exchange(r: _Reader, defaults: Settings) -> dict[str, Any]:
    """Binance's doors: the stream, its reconnects and rotations, the REST API, the archive."""
    initial = r.positive_float("RECONNECT_INITIAL_DELAY_S", defaults.reconnect_initial_delay_s)
    maximum = r.positive_float("RECONNECT_MAX_DELAY_S", defaults.reconnect_max_delay_s)
    if initial > maximum:
        r.problems.append(
            f"{ENV_PREFIX}RECONNECT_INITIAL_DELAY_S ({initial}) exceeds "
            f"{ENV_PREFIX}RECONNECT_MAX_DELAY_S ({maximum}); lower the first or raise the second"
        )
    url = "http(s):// URL"
    return {
        "ws_url": r.convert("WS_URL", defaults.ws_url, _parse_ws_url, "ws:// or wss:// base URL"),
        "reconnect_initial_delay_s": initial,
        "reconnect_max_delay_s": maximum,
        "rest_url": r.convert("REST_URL", defaults.rest_url, _parse_http_url, url).rstrip("/"),
        "archive_url": r.convert("ARCHIVE_URL", defaults.archive_url, _parse_http_url, url).rstrip("/"),
        "backfill_max_trades": r.bounded_int("BACKFILL_MAX_TRADES", defaults.backfill_max_trades, 0, 10**9),
        "backfill_retry_s": r.positive_float("BACKFILL_RETRY_S", defaults.backfill_retry_s),
        "connection_max_age_s": r.positive_float("CONNECTION_MAX_AGE_S", defaults.connection_max_age_s),
        "stream_silence_s": r.positive_float("STREAM_SILENCE_S", defaults.stream_silence_s),
    }


def _read_operations(r: _Reader, defaults: Settings) -> dict[str, Any]:
    """What operates the process: stats, health, CloudWatch, SSM, logs."""
    return {
        "stats_interval_s": r.positive_float("STATS_INTERVAL_S", defaults.stats_interval_s),
        "health_port": r.bounded_int("HEALTH_PORT", defaults.health_port, 0, 65535),
        "cloudwatch_namespace": r.convert(
            "CLOUDWATCH_NAMESPACE", "", _parse_namespace, "letters, digits and . - _ / # : (at most 255)"
        ),
        "ssm_parameter": r.convert(
            "SSM_PARAMETER", "", _parse_parameter_name, "a parameter name such as /mlops/collector/env"
        ),
        "log_level": r.convert(
            "LOG_LEVEL", defaults.log_level, _parse_log_level, "debug | info | warning | error"
        ),
        "log_format": r.choice("LOG_FORMAT", defaults.log_format, ("auto", "json", "console")),
    }


def _read_table(r: _Reader, defaults: Settings) -> dict[str, Any]:
    """The lake's tables: catalog, warehouse, namespace, snapshot age."""
    catalog = r.choice("TABLE_CATALOG", defaults.table_catalog, ("sql", "glue"))
    warehouse = r.raw("TABLE_WAREHOUSE") or ""
    if warehouse:
        parsed = r.convert(
            "TABLE_WAREHOUSE", None, parse_destination, "a directory path or s3://bucket/prefix"
        )
        if catalog == "glue" and parsed is not None and not isinstance(parsed, S3Destination):
            r.problems.append(
                f"{ENV_PREFIX}TABLE_CATALOG=glue needs an s3:// {ENV_PREFIX}TABLE_WAREHOUSE (Athena and Glue "
                f"read tables on S3); set one, or {ENV_PREFIX}TABLE_CATALOG=sql for a local table"
            )
    return {
        "table_catalog": catalog,
        "table_warehouse": warehouse,
        "table_namespace": r.convert(
            "TABLE_NAMESPACE",
            defaults.table_namespace,
            _parse_namespace_name,
            "lowercase letters, digits and _ (a Glue database name), e.g. trade_lake",
        ),
        "table_snapshot_days": r.positive_float("TABLE_SNAPSHOT_DAYS", defaults.table_snapshot_days),
    }


def _parse_namespace_name(text: str) -> str:
    if not re.fullmatch(r"[a-z_][a-z0-9_]{0,254}", text):
        raise ValueError("not a namespace name")
    return text


_KNOWN = (
    "symbols",
    "symbols_refresh_s",
    "streams_per_connection",
    "watched_symbols",
    "market_part_rows",
    "ws_url",
    "time_unit",
    "destination",
    "format",
    "max_batch_bytes",
    "buffer_max_bytes",
    "max_batch_age_s",
    "minute_grace_s",
    "marker_grace_s",
    "spool_dir",
    "spool_max_bytes",
    "shutdown_timeout_s",
    "reconnect_initial_delay_s",
    "reconnect_max_delay_s",
    "rest_url",
    "backfill_max_trades",
    "archive_url",
    "backfill_retry_s",
    "connection_max_age_s",
    "stream_silence_s",
    "s3_endpoint_url",
    "s3_region",
    "s3_sse",
    "s3_kms_key_id",
    "log_level",
    "log_format",
    "stats_interval_s",
    "health_port",
    "cloudwatch_namespace",
    "ssm_parameter",
    "table_catalog",
    "table_warehouse",
    "table_namespace",
    "table_snapshot_days",
)
