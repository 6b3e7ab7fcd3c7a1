"""A zip's deflated member read through ISA-L: the same bytes as zipfile reads, its size and
CRC-32 checked at the end, damage refused as zipfile refuses it."""

from __future__ import annotations

import random
import zipfile
from pathlib import Path

import pytest

from collector.binance.zipped import open_member

NAME = "BTCUSDT-trades-2024-12-31.csv"


def _csv(rows: int) -> bytes:
    rng = random.Random(7)
    lines = (f"{i},{rng.randint(1, 10**7) / 100:.8f},{rng.random():.8f},0,{1_735_603_200_000 + i},True,True\n"
             for i in range(rows))  # fmt: skip
    return "".join(lines).encode()


def _zip(tmp_path: Path, data: bytes, method: int = zipfile.ZIP_DEFLATED) -> Path:
    path = tmp_path / "day.zip"
    with zipfile.ZipFile(path, "w", compression=method) as archive:
        archive.writestr(NAME, data)
    return path


@pytest.mark.parametrize("method", [zipfile.ZIP_DEFLATED, zipfile.ZIP_STORED])
def test_a_member_reads_as_zipfile_reads_it_in_lines_pieces_and_whole(tmp_path: Path, method: int) -> None:
    data = _csv(120_000)  # about 7 MB: many reads of compressed input, output cut to the reads asked
    path = _zip(tmp_path, data, method)
    with zipfile.ZipFile(path) as archive:
        with open_member(archive, path, NAME) as handle:
            assert handle.read() == data
        with open_member(archive, path, NAME) as handle:
            first = handle.readline()
            pieces = [first]
            while piece := handle.read(65_537):
                pieces.append(piece)
        assert first == data[: data.index(b"\n") + 1] and b"".join(pieces) == data


def test_an_empty_member_reads_as_nothing(tmp_path: Path) -> None:
    path = _zip(tmp_path, b"")
    with zipfile.ZipFile(path) as archive, open_member(archive, path, NAME) as handle:
        assert handle.read() == b""


def test_damaged_data_is_refused_naming_the_member(tmp_path: Path) -> None:
    path = _zip(tmp_path, _csv(20_000))
    damaged = bytearray(path.read_bytes())
    damaged[5_000:5_010] = b"\xff" * 10  # inside the deflate stream
    path.write_bytes(bytes(damaged))
    with (
        zipfile.ZipFile(path) as archive,
        open_member(archive, path, NAME) as handle,
        pytest.raises(zipfile.BadZipFile, match=NAME),
    ):
        handle.read()


def test_a_crc_or_size_that_differs_is_found_at_the_end(tmp_path: Path) -> None:
    path = _zip(tmp_path, _csv(5_000))
    with zipfile.ZipFile(path) as archive:
        archive.getinfo(NAME).CRC ^= 1
        with open_member(archive, path, NAME) as handle, pytest.raises(zipfile.BadZipFile, match="CRC-32"):
            handle.read()
    with zipfile.ZipFile(path) as archive:
        archive.getinfo(NAME).file_size += 1
        with open_member(archive, path, NAME) as handle, pytest.raises(zipfile.BadZipFile, match="bytes"):
            handle.read()


def test_a_member_cut_short_is_refused(tmp_path: Path) -> None:
    path = _zip(tmp_path, _csv(5_000))
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo(NAME)
        info.compress_size //= 2  # the stream stops half way: no end of the deflate stream
        with open_member(archive, path, NAME) as handle, pytest.raises(zipfile.BadZipFile, match=NAME):
            handle.read()


def test_a_local_header_that_is_not_one_is_refused(tmp_path: Path) -> None:
    path = _zip(tmp_path, _csv(100))
    with zipfile.ZipFile(path) as archive:
        archive.getinfo(NAME).header_offset += 1
        with pytest.raises(zipfile.BadZipFile, match="local file header"):
            open_member(archive, path, NAME)
