"""Image files to pixels: :func:`decode_image` and :func:`read_image` turn an encoded
JPEG, PNG, GIF, BMP or WebP file into uint8 [H, W, 3], after checks whose errors name
the file (:func:`check_image_bytes`: empty, unknown format, cut short; with
``max_pixels``, the size its header announces, read without decoding by
:func:`header_pixels`)."""

from __future__ import annotations

import tensorflow as tf

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# A truncated file lacks its end marker; it is looked for in this many last bytes
# (JPEG entropy data never contains FF D9, so a match there is the real marker).
_TAIL_BYTES = 256


def _tail_contains(tail: tf.Tensor, marker: bytes) -> tf.Tensor:
    n = len(marker)
    hit = tf.ones_like(tail[: tf.size(tail) - n + 1], tf.bool)
    for i, byte in enumerate(marker):
        part = tail[i : tf.size(tail) - n + 1 + i]
        hit &= tf.equal(part, byte)
    return tf.reduce_any(hit)


def check_image_bytes(contents: tf.Tensor, source: tf.Tensor | str) -> tf.Operation:
    """An assertion that ``contents`` is a complete JPEG, PNG, GIF, BMP or WebP file.

    The decoders' own errors do not say which file failed; this check runs first and
    fails with ``cannot decode image <source>: <reason>`` for an empty file, an
    unknown format, and a JPEG or PNG cut short (no end-of-image marker / IEND
    chunk). Damage inside a complete-looking file is left to the decoder, whose
    error does not name the file: a check that decodes every file of a dataset
    before training names those by path,
    :func:`~anet_tf.data.preprocessing.preprocess_image_bytes` by their index in a
    served batch.
    """
    problem = image_bytes_problem(contents)
    message = tf.strings.join(["cannot decode image ", source, ": ", problem])
    return tf.debugging.Assert(tf.equal(problem, ""), [message])


def image_bytes_problem(contents: tf.Tensor) -> tf.Tensor:
    """What :func:`check_image_bytes` finds wrong with ``contents`` (a scalar
    string: "" when nothing), computed with string operations that cannot fail."""
    size = tf.strings.length(contents)
    head = tf.strings.join([tf.strings.substr(contents, 0, 12), b"\0" * 12])
    is_jpeg = tf.strings.substr(head, 0, 3) == b"\xff\xd8\xff"
    is_png = tf.strings.substr(head, 0, 8) == _PNG_SIGNATURE
    is_gif = tf.strings.substr(head, 0, 3) == b"GIF"
    is_bmp = tf.strings.substr(head, 0, 2) == b"BM"
    is_webp = (tf.strings.substr(head, 0, 4) == b"RIFF") & (
        tf.strings.substr(head, 8, 4) == b"WEBP"
    )
    start = tf.maximum(size - _TAIL_BYTES, 0)
    tail = tf.io.decode_raw(tf.strings.substr(contents, start, _TAIL_BYTES), tf.uint8)
    known = is_jpeg | is_png | is_gif | is_bmp | is_webp
    reason = tf.where(
        size == 0,
        "the file is empty",
        tf.where(
            ~known,
            "not a JPEG, PNG, GIF, BMP or WebP file",
            tf.where(
                is_jpeg & ~_tail_contains(tail, b"\xff\xd9"),
                "truncated JPEG (no end-of-image marker)",
                tf.where(
                    is_png & ~_tail_contains(tail, b"IEND"),
                    "truncated PNG (no IEND chunk)",
                    "",
                ),
            ),
        ),
    )
    return reason


def _header_int(header: tf.Tensor, offset: int, size: int, big_endian: bool) -> tf.Tensor:
    raw = tf.cast(tf.io.decode_raw(tf.strings.substr(header, offset, size), tf.uint8), tf.int64)
    weights = [256 ** (size - 1 - i) if big_endian else 256**i for i in range(size)]
    return tf.reduce_sum(raw * tf.constant(weights, tf.int64))


def _webp_pixels(header: tf.Tensor) -> tf.Tensor:
    """Width x height of a WebP file from its first chunk: 'VP8 ' (lossy: 14-bit sizes
    after the 9d 01 2a start code), 'VP8L' (lossless: 14-bit width-1, height-1 packed
    after the 0x2f signature) or 'VP8X' (extended: 24-bit canvas width-1, height-1)."""
    chunk = tf.strings.substr(header, 12, 4)
    lossy = (_header_int(header, 26, 2, False) % 16384) * (_header_int(header, 28, 2, False) % 16384)
    bits = _header_int(header, 21, 4, False)
    lossless = (bits % 16384 + 1) * ((bits // 16384) % 16384 + 1)
    extended = (_header_int(header, 24, 3, False) + 1) * (_header_int(header, 27, 3, False) + 1)
    return tf.case(
        [(chunk == b"VP8 ", lambda: lossy), (chunk == b"VP8L", lambda: lossless), (chunk == b"VP8X", lambda: extended)],
        default=lambda: tf.constant(0, tf.int64),
    )


def _header(contents: tf.Tensor) -> tf.Tensor:
    """The first 32 bytes of a file, zero-padded to 32."""
    return tf.strings.join([tf.strings.substr(contents, 0, 32), b"\0" * 32])


def _fixed_header_pixels(header: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Width x height as PNG (IHDR), GIF and BMP headers give it, at fixed offsets
    (string ops only: nothing here can fail)."""
    png = _header_int(header, 16, 4, True) * _header_int(header, 20, 4, True)
    gif = _header_int(header, 6, 2, False) * _header_int(header, 8, 2, False)
    bmp_h = _header_int(header, 22, 4, False)
    bmp_h = tf.where(bmp_h >= 2**31, 2**32 - bmp_h, bmp_h)  # top-down BMPs: negative
    bmp = _header_int(header, 18, 4, False) * bmp_h
    return png, gif, bmp


def header_pixels(contents: tf.Tensor) -> tf.Tensor:
    """Width x height (int64) from an image file's header, without decoding it: JPEG
    (its SOF), PNG (IHDR), GIF, BMP and WebP (VP8, VP8L, VP8X); 0 where the header
    says nothing usable. Call after :func:`check_image_bytes` has passed."""
    header = _header(contents)
    head3, head8 = tf.strings.substr(header, 0, 3), tf.strings.substr(header, 0, 8)
    png, gif, bmp = _fixed_header_pixels(header)
    webp = (tf.strings.substr(header, 0, 4) == b"RIFF") & (tf.strings.substr(header, 8, 4) == b"WEBP")
    return tf.case(
        [
            (head3 == b"\xff\xd8\xff",
             lambda: tf.reduce_prod(tf.cast(tf.image.extract_jpeg_shape(contents)[:2], tf.int64))),
            (head8 == _PNG_SIGNATURE, lambda: png),
            (head3 == b"GIF", lambda: gif),
            (tf.strings.substr(header, 0, 2) == b"BM", lambda: bmp),
            (webp, lambda: _webp_pixels(header)),
        ],
        default=lambda: tf.constant(0, tf.int64),
    )


def decode_image(
    contents: tf.Tensor,
    source: tf.Tensor | str = "<bytes>",
    max_pixels: int | None = None,
) -> tf.Tensor:
    """Encoded JPEG/PNG/GIF/BMP/WebP bytes (scalar string) -> uint8 [H, W, 3].

    Args:
        contents: the encoded file.
        source: what to call the image in an error message (its path).
        max_pixels: refuse an image whose header announces more pixels, before any
            decoding (a 10000 x 10000 JPEG costs 300 MB decoded); None = no limit.
    """
    with tf.control_dependencies([check_image_bytes(contents, source)]):
        contents = tf.identity(contents)
    if max_pixels is not None:
        pixels = header_pixels(contents)
        too_large = tf.debugging.Assert(
            pixels <= max_pixels,
            [tf.strings.join([
                "cannot decode image ", source, ": ", tf.strings.as_string(pixels),
                f" pixels, more than the limit of {max_pixels} (data.max_image_pixels)",
            ])],
        )
        with tf.control_dependencies([too_large]):
            contents = tf.identity(contents)
    return decode_pixels(contents)


def decode_pixels(contents: tf.Tensor) -> tf.Tensor:
    """The decoder alone: encoded bytes -> uint8 [H, W, 3]."""
    image = tf.io.decode_image(contents, channels=3, expand_animations=False)
    image.set_shape([None, None, 3])
    return image


def read_image(path: tf.Tensor | str) -> tf.Tensor:
    """Read and decode one image file -> uint8 [H, W, 3]; errors name the path."""
    return decode_image(tf.io.read_file(path), path)


def decoder_failure(contents: tf.Tensor) -> tf.Tensor:
    """Why a decoder (or a JPEG's size reader) may have refused ``contents``, which
    passed :func:`image_bytes_problem`: a PNG, GIF or BMP header that announces no
    pixels, or else damage inside the file."""
    header = _header(contents)
    png, gif, bmp = _fixed_header_pixels(header)
    empty = (
        ((tf.strings.substr(header, 0, 8) == _PNG_SIGNATURE) & (png == 0))
        | ((tf.strings.substr(header, 0, 3) == b"GIF") & (gif == 0))
        | ((tf.strings.substr(header, 0, 2) == b"BM") & (bmp == 0))
    )
    return tf.where(
        empty,
        "its header announces no pixels (width or height 0)",
        "the decoder refused the data after a valid header (damaged inside the file)",
    )
