"""Settings: defaults, the .env file, and a clear message naming every bad setting."""

from __future__ import annotations

from pathlib import Path

import pytest

from collector.config import S3Destination, Settings, load_settings
from collector.exceptions import ConfigError


def test_defaults_land_locally_from_live_binance() -> None:
    s = load_settings({})
    assert s == Settings()
    assert s.destination == Path("landing")
    assert s.stream_url() == "wss://data-stream.binance.vision/ws/btcusdt@trade"


def test_several_symbols_use_one_combined_stream() -> None:
    s = load_settings({"COLLECTOR_SYMBOLS": "btcusdt, ETHUSDT,btcusdt", "COLLECTOR_TIME_UNIT": "us"})
    assert s.symbols == ("BTCUSDT", "ETHUSDT")
    assert s.stream_url() == (
        "wss://data-stream.binance.vision/stream?streams=btcusdt@trade/ethusdt@trade&timeUnit=MICROSECOND"
    )


def test_one_symbol_in_microseconds_uses_the_raw_stream() -> None:
    s = load_settings({"COLLECTOR_TIME_UNIT": "US"})
    assert s.stream_url() == "wss://data-stream.binance.vision/ws/btcusdt@trade?timeUnit=MICROSECOND"


def test_s3_destination_splits_bucket_and_prefix() -> None:
    s = load_settings({"COLLECTOR_DESTINATION": "s3://my-landing-zone/raw/trades/"})
    assert s.destination == S3Destination("my-landing-zone", "raw/trades/")
    assert load_settings({"COLLECTOR_DESTINATION": "s3://my-landing-zone"}).destination == S3Destination(
        "my-landing-zone", ""
    )


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("FORMAT", "xml", "COLLECTOR_FORMAT='xml' is invalid: unknown value; accepted: parquet | csv.gz"),
        ("MAX_BATCH_BYTES", "-5", "COLLECTOR_MAX_BATCH_BYTES='-5' is invalid: must be between 65,536"),
        ("MAX_BATCH_BYTES", "lots", "COLLECTOR_MAX_BATCH_BYTES='lots' is invalid"),
        ("MAX_BATCH_AGE_S", "-1", "COLLECTOR_MAX_BATCH_AGE_S='-1' is invalid: must be a positive number"),
        ("MAX_BATCH_AGE_S", "nan", "COLLECTOR_MAX_BATCH_AGE_S='nan' is invalid"),
        ("DESTINATION", "s3://Bad_Bucket/x", "'Bad_Bucket' is not a valid S3 bucket name"),
        ("DESTINATION", "s3://", "'' is not a valid S3 bucket name"),
        ("DESTINATION", "gs://bucket/x", "only s3:// URLs or local directory paths"),
        ("SYMBOLS", "BTC-USDT", "BTC-USDT not a Binance symbol"),
        ("WS_URL", "https://stream.binance.com", "must be a ws:// or wss:// URL"),
        ("WS_URL", "wss://x/ws?streams=a", "give the base URL only"),
        ("TIME_UNIT", "ns", "accepted: ms | us"),
        ("S3_SSE", "DES", "accepted: AES256 | aws:kms"),
        ("S3_REGION", "tokyo", "not an AWS region name"),
        ("LOG_LEVEL", "loud", "accepted: debug | info | warning | error"),
        ("SPOOLDIR", "/tmp/x", "COLLECTOR_SPOOLDIR is not a setting of this collector"),
        ("REST_URL", "ftp://api.binance.com", "must be an http:// or https:// URL"),
        ("BACKFILL_MAX_TRADES", "-1", "must be between 0 and 1,000,000,000"),
        ("STREAM_SILENCE_S", "0", "must be a positive number of seconds"),
        ("CONNECTION_MAX_AGE_S", "forever", "COLLECTOR_CONNECTION_MAX_AGE_S='forever' is invalid"),
        ("SPOOL_MAX_BYTES", "5", "must be between 10,000"),
        ("HEALTH_PORT", "70000", "must be between 0 and 65,535"),
        ("CLOUDWATCH_NAMESPACE", "AWS/EC2", "not a custom CloudWatch namespace"),
        ("SSM_PARAMETER", "bad name!", "not an SSM parameter name"),
        ("MARKER_GRACE_S", "soon", "COLLECTOR_MARKER_GRACE_S='soon' is invalid"),
        ("MARKER_GRACE_S", "-10", "must be a positive number of seconds"),
        ("BACKFILL_RETRY_S", "0", "COLLECTOR_BACKFILL_RETRY_S='0' is invalid"),
        ("WATCHED_SYMBOLS", "BTC/USDT", "accepted: ALL, NONE, or comma-separated symbols"),
        ("WATCHED_SYMBOLS", "ETHUSDT", "WATCHED_SYMBOLS names ETHUSDT, not in COLLECTOR_SYMBOLS"),
    ],
)
def test_a_bad_setting_is_named_with_the_accepted_values(name: str, value: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings({f"COLLECTOR_{name}": value})
    assert message in str(info.value)


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(
            {"COLLECTOR_FORMAT": "xml", "COLLECTOR_MAX_BATCH_BYTES": "0", "COLLECTOR_TIME_UNIT": "ns"}
        )
    assert len(info.value.problems) == 3


def test_kms_key_without_kms_encryption_is_refused() -> None:
    with pytest.raises(ConfigError, match="set COLLECTOR_S3_SSE=aws:kms"):
        load_settings({"COLLECTOR_S3_KMS_KEY_ID": "alias/landing"})


def test_env_file_is_read_and_the_environment_wins(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("COLLECTOR_SYMBOLS=ETHUSDT\nCOLLECTOR_FORMAT=csv.gz\n")
    s = load_settings({"COLLECTOR_FORMAT": "parquet"}, env_file=env_file)
    assert (s.symbols, s.output_format) == (("ETHUSDT",), "parquet")


def test_missing_env_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings({}, env_file=tmp_path / "nope.env")


def test_redaction_masks_credentials_in_urls() -> None:
    s = load_settings({"COLLECTOR_WS_URL": "wss://user:secret@example.com:9443"})
    printed = s.redacted()
    assert "secret" not in str(printed)
    assert printed["ws_url"] == "wss://***@example.com:9443"


def test_example_env_file_lists_every_setting_with_its_default() -> None:
    example = Path(__file__).resolve().parent.parent / ".env.example"
    names = {
        line.split("=")[0].lstrip("# ").strip() for line in example.read_text().splitlines() if "=" in line
    }
    from collector.config import _KNOWN

    assert {f"COLLECTOR_{k.upper()}" for k in _KNOWN} <= names
    settings = load_settings({}, env_file=example)  # the example itself is valid
    assert settings == Settings()


def test_watched_symbols_all_none_or_a_list() -> None:
    assert load_settings({"COLLECTOR_SYMBOLS": "ALL"}).watched("XUSDT")
    none = load_settings({"COLLECTOR_SYMBOLS": "ALL", "COLLECTOR_WATCHED_SYMBOLS": "none"})
    assert none.watched_symbols == () and not none.watched("BTCUSDT")
    some = load_settings({"COLLECTOR_SYMBOLS": "BTCUSDT,ETHUSDT", "COLLECTOR_WATCHED_SYMBOLS": "btcusdt"})
    assert some.watched("BTCUSDT") and not some.watched("ETHUSDT")
    assert some.as_env()["COLLECTOR_WATCHED_SYMBOLS"] == "BTCUSDT"


# ---- the .env file itself: its encoding, lines that are not settings, a directory -----------------


@pytest.mark.parametrize(
    ("encoding", "said"),
    [
        ("utf-16", "is UTF-16 text (as some Windows editors save it); it must be UTF-8"),
        ("utf-16-le", "holds NUL bytes: UTF-16 text without a byte-order mark?"),
        ("utf-32", "is UTF-32 text"),
        ("latin-1", "is not UTF-8 text (byte 0xe9 on line 2)"),
    ],
)
def test_an_env_file_not_in_utf8_is_named_with_the_encoding_it_needs(
    tmp_path: Path, encoding: str, said: str
) -> None:
    env_file = tmp_path / ".env"
    env_file.write_bytes("COLLECTOR_SYMBOLS=ETHUSDT\n# café\n".encode(encoding))
    with pytest.raises(ConfigError) as info:
        load_settings({}, env_file=env_file)
    assert f"env file {str(env_file)!r} {said}" in str(info.value)
    assert "UTF-8" in str(info.value)


def test_a_line_that_is_not_a_setting_is_refused_naming_the_file_and_line(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text(
        "# a comment\nthis is not a setting\nCOLLECTOR_SYMBOLS=ETHUSDT\n"
        'COLLECTOR_DESTINATION="unterminated\nCOLLECTOR_LOG_LEVEL\nexport COLLECTOR_FORMAT=csv.gz\n'
    )
    with pytest.raises(ConfigError) as info:
        load_settings({}, env_file=env_file)
    where = f"env file {str(env_file)!r}"
    assert info.value.problems == [
        f"{where}, line 2: 'this is not a setting' is not NAME=value; fix it, or make it a comment with #",
        f"{where}, line 4: 'COLLECTOR_DESTINATION=\"unterminated' has a quote that is not closed; close it",
        f"{where}, line 5: COLLECTOR_LOG_LEVEL has no '='; write COLLECTOR_LOG_LEVEL=value",
    ]


def test_an_ssm_parameter_with_a_broken_line_is_refused_too() -> None:
    with pytest.raises(ConfigError, match="the SSM parameter's text, line 1: 'not a line' is not NAME=value"):
        load_settings({}, ssm_text="not a line\nCOLLECTOR_SYMBOLS=ETHUSDT\n")


def test_an_env_file_that_is_a_directory_is_called_a_directory(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings({}, env_file=tmp_path)
    assert "is a directory; give the settings file itself" in str(info.value)
    assert "does not exist" not in str(info.value)
