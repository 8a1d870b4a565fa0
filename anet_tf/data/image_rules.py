"""What an image file must be before it is decoded, written once for every check.

Three places judge an image file: ``anet-tf data check`` and ``fit``'s pre-flight
(in Python: :func:`file_problem`, used by :mod:`anet_tf.data.generic`), the
dataset readers and the serving signature that takes image bytes (in the graph:
:mod:`anet_tf.data.decode`, which builds its TensorFlow check from the tables
here). So that they give one verdict on one file, the rules live in this module
alone, as data both sides read:

- the formats ``tf.io.decode_image`` reads and their magic bytes (:data:`MAGIC`);
- where an end marker must be: a JPEG's end-of-image marker and a PNG's IEND
  chunk among the last :data:`TAIL_BYTES` bytes (:data:`END_MARKERS`);
- where width and height are in each header (:data:`SIZE_FIELDS`, WebP by its
  first chunk in :data:`WEBP_SIZE_FIELDS`; a JPEG's in its SOF segment);
- the default pixel limit :data:`MAX_IMAGE_PIXELS` (``data.max_image_pixels``);
- the reasons, in the order they are tried: :data:`EMPTY`, :data:`NOT_AN_IMAGE`,
  :func:`truncated`, :data:`NO_PIXELS`, :func:`too_many_pixels`; :data:`DAMAGED`
  when a decoder refuses a file that passed them all.

This module imports nothing from anet_tf (the config reads the pixel limit's
default from it), nor TensorFlow or PIL.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import BinaryIO

# The default of data.max_image_pixels: decoding 14000 x 14000 pixels costs 2 GB.
MAX_IMAGE_PIXELS = 40_000_000
# A truncated JPEG or PNG lacks its end marker; it is looked for in this many last
# bytes (JPEG entropy data never holds FF D9, so a match there is the real marker),
# which also bounds the junk a file may carry after its end.
TAIL_BYTES = 1024
# The bytes of the start of a file that :data:`MAGIC` and the size fields read.
HEADER_BYTES = 32

# format -> ((offset, bytes), ...): the file is of that format when every part
# matches; the formats tf.io.decode_image reads.
MAGIC: dict[str, tuple[tuple[int, bytes], ...]] = {
    "JPEG": ((0, b"\xff\xd8\xff"),),
    "PNG": ((0, b"\x89PNG\r\n\x1a\n"),),
    "GIF": ((0, b"GIF"),),
    "BMP": ((0, b"BM"),),
    "WebP": ((0, b"RIFF"), (8, b"WEBP")),
}
FORMATS = tuple(MAGIC)
# format -> (marker, its name): the marker must be among the last TAIL_BYTES bytes.
END_MARKERS: dict[str, tuple[bytes, str]] = {
    "JPEG": (b"\xff\xd9", "end-of-image marker"),
    "PNG": (b"IEND", "IEND chunk"),
}


@dataclass(frozen=True)
class Field:
    """An unsigned integer of ``size`` bytes at ``offset`` of a header, read as
    ``(raw >> shift) % 2**bits + add``.

    Args:
        offset: its first byte.
        size: its length in bytes.
        big_endian: byte order (little-endian unless set).
        shift: low bits to drop (a field packed behind another).
        bits: bits kept after the shift; None = all.
        add: added at the end (WebP stores width - 1).
        magnitude: a signed value whose size counts (a top-down BMP's negative
            height).
    """

    offset: int
    size: int
    big_endian: bool = False
    shift: int = 0
    bits: int | None = None
    add: int = 0
    magnitude: bool = False

    def read(self, header: bytes) -> int:
        """The field's value in ``header`` (zero-padded when short)."""
        raw = header[self.offset : self.offset + self.size].ljust(self.size, b"\0")
        value = int.from_bytes(raw, "big" if self.big_endian else "little")
        if self.magnitude and value >= 2 ** (8 * self.size - 1):
            value = 2 ** (8 * self.size) - value
        value >>= self.shift
        if self.bits is not None:
            value %= 2**self.bits
        return value + self.add


# format -> (width, height), for headers that hold them at fixed offsets.
SIZE_FIELDS: dict[str, tuple[Field, Field]] = {
    "PNG": (Field(16, 4, big_endian=True), Field(20, 4, big_endian=True)),  # IHDR
    "GIF": (Field(6, 2), Field(8, 2)),  # logical screen
    "BMP": (Field(18, 4), Field(22, 4, magnitude=True)),  # BITMAPINFOHEADER
}
# A WebP file's first chunk (its name at WEBP_CHUNK_OFFSET) -> (width, height):
# 'VP8 ' (lossy: 14-bit sizes after the 9d 01 2a start code), 'VP8L' (lossless:
# 14-bit width-1, height-1 packed after the 0x2f signature), 'VP8X' (extended:
# 24-bit canvas width-1, height-1).
WEBP_CHUNK_OFFSET = 12
WEBP_SIZE_FIELDS: dict[bytes, tuple[Field, Field]] = {
    b"VP8 ": (Field(26, 2, bits=14), Field(28, 2, bits=14)),
    b"VP8L": (Field(21, 4, bits=14, add=1), Field(21, 4, shift=14, bits=14, add=1)),
    b"VP8X": (Field(24, 3, add=1), Field(27, 3, add=1)),
}
# A JPEG's size is in its frame header: the first SOFn segment (n = 0..15 except
# 4, 8 and 12, which are DHT, JPG and DAC), height then width, big-endian, after
# the segment length and the sample precision.
JPEG_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}

EMPTY = "the file is empty"
NOT_AN_IMAGE = f"not a {', '.join(FORMATS[:-1])} or {FORMATS[-1]} file"
NO_PIXELS = "its header announces no pixels (width or height 0)"
DAMAGED = "the decoder refused the data after a valid header (damaged inside the file)"


def truncated(fmt: str) -> str:
    """The reason for a JPEG or PNG without its end marker in the last bytes."""
    return f"truncated {fmt} (no {END_MARKERS[fmt][1]})"


def too_many_pixels(width, height, limit) -> str:
    """The reason for an image whose header announces more than ``limit`` pixels.
    The graph check passes ``"{}"`` for width and height to fill them in with
    ``tf.strings.format``."""
    return f"{width} x {height} pixels, more than data.max_image_pixels={limit}"


def image_format(header: bytes) -> str | None:
    """The format :data:`MAGIC` recognises at the start of a file, or None."""
    for fmt, parts in MAGIC.items():
        if all(header[o : o + len(m)] == m for o, m in parts):
            return fmt
    return None


def fixed_size(fmt: str, header: bytes) -> tuple[int, int] | None:
    """(width, height) from the first :data:`HEADER_BYTES` of a PNG, GIF, BMP or
    WebP file; None for a JPEG (its size is not at a fixed offset) and a WebP whose
    first chunk is none of the three (the decoder will refuse it)."""
    if fmt == "WebP":
        fields = WEBP_SIZE_FIELDS.get(header[WEBP_CHUNK_OFFSET : WEBP_CHUNK_OFFSET + 4])
    else:
        fields = SIZE_FIELDS.get(fmt)
    return (fields[0].read(header), fields[1].read(header)) if fields else None


def jpeg_size(fh: BinaryIO) -> tuple[int, int] | None:
    """(width, height) from the SOF segment of the JPEG open in ``fh`` (read from
    its start, skipping segments by their length), or None when the file ends or
    its markers break before one."""
    fh.seek(2)
    while True:
        marker = fh.read(2)
        while marker[:1] == b"\xff" and marker[1:] == b"\xff":  # fill bytes
            marker = marker[1:] + fh.read(1)
        if len(marker) < 2 or marker[0] != 0xFF:
            return None
        kind = marker[1]
        if kind == 0x01 or 0xD0 <= kind <= 0xD7:  # markers without a segment
            continue
        if kind in (0xD9, 0xDA):  # end of image, start of scan: no frame header
            return None
        length = fh.read(2)
        if len(length) < 2:
            return None
        n = int.from_bytes(length, "big")
        if kind in JPEG_SOF_MARKERS:
            body = fh.read(5)
            if len(body) < 5:
                return None
            return int.from_bytes(body[3:5], "big"), int.from_bytes(body[1:3], "big")
        if n < 2:
            return None
        fh.seek(n - 2, io.SEEK_CUR)


def file_problem(fh: BinaryIO, size: int, max_pixels: int | None) -> str | None:
    """What the rules find wrong with the image file open in ``fh`` (``size``
    bytes), reading its header, last bytes and, for a JPEG, its segment headers
    only (no decoding); None when nothing. The graph check
    :func:`anet_tf.data.decode.image_bytes_problem` applies the same rules in the
    same order, so both give the same reason.

    Args:
        fh: the file, open for binary reading and seekable.
        size: its length in bytes.
        max_pixels: refuse a larger announced size (width x height); None = no
            limit.
    """
    if size == 0:
        return EMPTY
    fh.seek(0)
    header = fh.read(HEADER_BYTES)
    fmt = image_format(header)
    if fmt is None:
        return NOT_AN_IMAGE
    if fmt in END_MARKERS:
        fh.seek(max(0, size - TAIL_BYTES))
        if END_MARKERS[fmt][0] not in fh.read(TAIL_BYTES):
            return truncated(fmt)
    width_height = fixed_size(fmt, header)
    if width_height is not None and width_height[0] * width_height[1] == 0:
        return NO_PIXELS
    if max_pixels is None:
        return None
    if fmt == "JPEG":
        width_height = jpeg_size(fh)
        if width_height is None:
            return DAMAGED
    width, height = width_height or (0, 0)
    if width * height > max_pixels:
        return too_many_pixels(width, height, max_pixels)
    return None


def bytes_problem(contents: bytes, max_pixels: int | None = None) -> str | None:
    """:func:`file_problem` of an image held in memory."""
    return file_problem(io.BytesIO(contents), len(contents), max_pixels)
