"""A zip's one member, read as a file: its deflate stream inflated by ISA-L.

The archive's daily files are deflated CSV, a quarter of a gigabyte for a busy day. Inflating
it was the slowest part of reading one: zlib (through `zipfile`) took 0.53 s of CPU for a
3.3 million-trade day, ISA-L (the `isal` package) 0.13 s, with the same bytes out. Reading the
zip's local header ourselves is what lets ISA-L do it: `zipfile` always uses zlib.

The member's CRC-32 and size are checked when its end is read, as `zipfile` does: a short or
damaged member raises `zipfile.BadZipFile`. A member that is not deflated (stored, or another
method) or is encrypted is read by `zipfile` itself.
"""

from __future__ import annotations

import io
import struct
import zipfile
from pathlib import Path
from typing import IO, BinaryIO, cast

from isal import isal_zlib

__all__ = ["open_member"]

_LOCAL_HEADER = struct.Struct("<4sHHHHHIIIHH")  # zip's local file header, 30 bytes
_LOCAL_SIGNATURE = b"PK\x03\x04"
_READ_BYTES = 1 << 20  # compressed bytes read at a time
_ENCRYPTED = 0x1
_INFLATE_ERROR = cast("type[Exception]", isal_zlib.error)  # its stubs declare an instance


def open_member(archive: zipfile.ZipFile, path: Path, name: str) -> IO[bytes]:
    """`name` of `archive` (opened from `path`) as a buffered binary file."""
    info = archive.getinfo(name)
    if info.compress_type != zipfile.ZIP_DEFLATED or info.flag_bits & _ENCRYPTED:
        return archive.open(info)
    return io.BufferedReader(_Inflated(path, info), _READ_BYTES)


class _Inflated(io.RawIOBase):
    """The member's bytes, inflated as they are read."""

    def __init__(self, path: Path, info: zipfile.ZipInfo) -> None:
        self._file: BinaryIO = open(path, "rb")  # noqa: SIM115 (closed with this reader)
        try:
            self._file.seek(info.header_offset)
            header = self._file.read(_LOCAL_HEADER.size)
            if len(header) != _LOCAL_HEADER.size or header[:4] != _LOCAL_SIGNATURE:
                raise zipfile.BadZipFile(f"{info.filename}: bad local file header")
            fields = _LOCAL_HEADER.unpack(header)
            self._file.seek(info.header_offset + _LOCAL_HEADER.size + fields[9] + fields[10])
        except BaseException:
            self._file.close()
            raise
        self._info = info
        self._left = info.compress_size  # compressed bytes not yet read
        self._inflater = isal_zlib.decompressobj(-15)  # raw deflate, as in a zip
        self._pending = b""  # inflated, not yet handed out
        self._crc = 0
        self._size = 0
        self._ended = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        while not self._pending and not self._ended:
            self._inflate(len(buffer))
        count = min(len(buffer), len(self._pending))
        buffer[:count] = self._pending[:count]
        self._pending = self._pending[count:]
        return count

    def _inflate(self, most: int) -> None:
        try:
            if self._inflater.unconsumed_tail:
                data = self._inflater.decompress(self._inflater.unconsumed_tail, most)
            elif self._left:
                raw = self._file.read(min(self._left, _READ_BYTES))
                if not raw:
                    raise zipfile.BadZipFile(f"{self._info.filename}: the file ends inside it")
                self._left -= len(raw)
                data = self._inflater.decompress(raw, most)
            else:
                data = self._inflater.flush()
                self._ended = not data
        except _INFLATE_ERROR as exc:
            raise zipfile.BadZipFile(f"{self._info.filename}: {exc}") from exc
        self._crc = isal_zlib.crc32(data, self._crc)
        self._size += len(data)
        self._pending = data
        if self._ended:
            self._check()

    def _check(self) -> None:
        if self._size != self._info.file_size or self._crc != self._info.CRC:
            raise zipfile.BadZipFile(
                f"{self._info.filename}: inflated to {self._size} bytes with CRC-32 {self._crc:08x}, "
                f"not {self._info.file_size} bytes with {self._info.CRC:08x}"
            )

    def close(self) -> None:
        if not self.closed:
            self._file.close()
        super().close()
