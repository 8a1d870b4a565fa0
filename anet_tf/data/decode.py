"""Image files to pixels: :func:`decode_image` and :func:`read_image` turn an encoded
JPEG, PNG, GIF, BMP or WebP file into uint8 [H, W, 3], after checks whose errors name
the file (:func:`check_image_bytes`: the rules of :mod:`anet_tf.data.image_rules`,
which ``data check`` applies in Python, built into the graph by
:func:`image_bytes_problem`; with ``max_pixels``, the size its header announces,
read without decoding by :func:`header_size`)."""

from __future__ import annotations

import tensorflow as tf

from anet_tf.data import image_rules as rules


def _tail_contains(tail: tf.Tensor, marker: bytes) -> tf.Tensor:
    n = len(marker)
    hit = tf.ones_like(tail[: tf.size(tail) - n + 1], tf.bool)
    for i, byte in enumerate(marker):
        part = tail[i : tf.size(tail) - n + 1 + i]
        hit &= tf.equal(part, byte)
    return tf.reduce_any(hit)


def check_image_bytes(
    contents: tf.Tensor, source: tf.Tensor | str, max_pixels: int | None = None
) -> tf.Operation:
    """An assertion that ``contents`` is a complete JPEG, PNG, GIF, BMP or WebP file
    (with ``max_pixels``, of at most that many pixels).

    The decoders' own errors do not say which file failed; this check runs first and
    fails with ``cannot decode image <source>: <reason>``, the reason of
    :func:`image_bytes_problem`. Damage inside a complete-looking file is left to
    the decoder, whose error does not name the file: a check that decodes every
    file of a dataset before training names those by path,
    :func:`~anet_tf.data.preprocessing.preprocess_image_bytes` by their index in a
    served batch.
    """
    problem = image_bytes_problem(contents, max_pixels)
    message = tf.strings.join(["cannot decode image ", source, ": ", problem])
    return tf.debugging.Assert(tf.equal(problem, ""), [message])


def image_bytes_problem(
    contents: tf.Tensor, max_pixels: int | None = None
) -> tf.Tensor:
    """What the rules of :mod:`anet_tf.data.image_rules` find wrong with
    ``contents`` (a scalar string: "" when nothing), in their order and words, as
    :func:`~anet_tf.data.image_rules.file_problem` does in Python: an empty file,
    an unknown format, a JPEG or PNG cut short (no end marker in the last
    ``TAIL_BYTES``), a PNG, GIF, BMP or WebP header announcing no pixels, and with
    ``max_pixels`` an announced size over it. Computed with string operations that
    cannot fail, except a JPEG's size (``tf.image.extract_jpeg_shape``), read only
    with ``max_pixels`` and only when the rest passed."""
    header = _header(contents)
    is_format = {fmt: _is_format(header, fmt) for fmt in rules.FORMATS}
    start = tf.maximum(tf.strings.length(contents) - rules.TAIL_BYTES, 0)
    tail = tf.io.decode_raw(
        tf.strings.substr(contents, start, rules.TAIL_BYTES), tf.uint8
    )
    no_pixels = tf.constant(False)
    for fmt, (known, width, height) in _fixed_sizes(header).items():
        no_pixels |= is_format[fmt] & known & (width * height == 0)
    # The rules from the last to the first, so that the first that holds wins.
    reason = tf.where(no_pixels, rules.NO_PIXELS, "")
    for fmt, (marker, _) in reversed(rules.END_MARKERS.items()):
        cut = is_format[fmt] & ~_tail_contains(tail, marker)
        reason = tf.where(cut, rules.truncated(fmt), reason)
    known = tf.reduce_any(tf.stack(list(is_format.values())))
    reason = tf.where(known, reason, rules.NOT_AN_IMAGE)
    reason = tf.where(tf.strings.length(contents) == 0, rules.EMPTY, reason)
    if max_pixels is None:
        return reason
    size = tf.cond(
        reason == "",
        lambda: header_size(contents),
        lambda: tf.zeros([2], tf.int64),
    )
    too_large = tf.strings.format(
        rules.too_many_pixels("{}", "{}", max_pixels), [size[0], size[1]]
    )
    return tf.where(
        (reason == "") & (size[0] * size[1] > max_pixels), too_large, reason
    )


def _is_format(header: tf.Tensor, fmt: str) -> tf.Tensor:
    """Whether ``header`` starts with the magic bytes of ``fmt``."""
    match = tf.constant(True)
    for offset, magic in rules.MAGIC[fmt]:
        match &= tf.strings.substr(header, offset, len(magic)) == magic
    return match


def _field(header: tf.Tensor, field: rules.Field) -> tf.Tensor:
    """:meth:`~anet_tf.data.image_rules.Field.read` in the graph (int64)."""
    raw = tf.io.decode_raw(
        tf.strings.substr(header, field.offset, field.size), tf.uint8
    )
    weights = [256**i for i in range(field.size)]
    if field.big_endian:
        weights.reverse()
    value = tf.reduce_sum(tf.cast(raw, tf.int64) * tf.constant(weights, tf.int64))
    if field.magnitude:
        value = tf.where(
            value >= 2 ** (8 * field.size - 1), 2 ** (8 * field.size) - value, value
        )
    value //= 2**field.shift
    if field.bits is not None:
        value %= 2**field.bits
    return value + field.add


def _header(contents: tf.Tensor) -> tf.Tensor:
    """The first ``HEADER_BYTES`` of a file, zero-padded to that length."""
    n = rules.HEADER_BYTES
    return tf.strings.join([tf.strings.substr(contents, 0, n), b"\0" * n])


def _fixed_sizes(
    header: tf.Tensor,
) -> dict[str, tuple[tf.Tensor, tf.Tensor, tf.Tensor]]:
    """format -> (known, width, height) as the PNG, GIF, BMP and WebP headers give
    them (:func:`~anet_tf.data.image_rules.fixed_size`); ``known`` is False for a
    WebP whose first chunk has no size there. String ops only: nothing here can
    fail."""
    sizes = {
        fmt: (tf.constant(True), _field(header, w), _field(header, h))
        for fmt, (w, h) in rules.SIZE_FIELDS.items()
    }
    chunk = tf.strings.substr(header, rules.WEBP_CHUNK_OFFSET, 4)
    known = tf.constant(False)
    width = height = tf.constant(0, tf.int64)
    for name, (w, h) in rules.WEBP_SIZE_FIELDS.items():
        this = chunk == name
        known |= this
        width = tf.where(this, _field(header, w), width)
        height = tf.where(this, _field(header, h), height)
    sizes["WebP"] = (known, width, height)
    return sizes


def header_size(contents: tf.Tensor) -> tf.Tensor:
    """(width, height) (int64 [2]) from an image file's header, without decoding
    it: JPEG (its SOF, by ``tf.image.extract_jpeg_shape``), PNG (IHDR), GIF, BMP
    and WebP (VP8, VP8L, VP8X); zeros where the header says nothing usable. Call
    after :func:`image_bytes_problem` found nothing."""
    header = _header(contents)
    branches = [
        (
            _is_format(header, "JPEG"),
            lambda: tf.reverse(
                tf.cast(tf.image.extract_jpeg_shape(contents)[:2], tf.int64), [0]
            ),
        )
    ]
    for fmt, (_, width, height) in _fixed_sizes(header).items():
        branches.append(
            (_is_format(header, fmt), lambda w=width, h=height: tf.stack([w, h]))
        )
    return tf.case(branches, default=lambda: tf.zeros([2], tf.int64))


def header_pixels(contents: tf.Tensor) -> tf.Tensor:
    """Width x height (int64) from an image file's header (:func:`header_size`);
    0 where the header says nothing usable."""
    return tf.reduce_prod(header_size(contents))


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
    with tf.control_dependencies([check_image_bytes(contents, source, max_pixels)]):
        contents = tf.identity(contents)
    return decode_pixels(contents)


def decode_pixels(contents: tf.Tensor) -> tf.Tensor:
    """The decoder alone: encoded bytes -> uint8 [H, W, 3].

    Grayscale and alpha become RGB (the alpha channel is dropped, as PIL's
    ``convert("RGB")`` does). TensorFlow's WebP decoder refuses ``channels=3`` for
    a WebP with alpha, so a WebP is decoded with its own channels and cut to 3.
    """
    is_webp = _is_format(_header(contents), "WebP")
    image = tf.cond(
        is_webp,
        lambda: tf.io.decode_image(contents, expand_animations=False)[..., :3],
        lambda: tf.io.decode_image(contents, channels=3, expand_animations=False),
    )
    image.set_shape([None, None, 3])
    return image


def read_image(path: tf.Tensor | str) -> tf.Tensor:
    """Read and decode one image file -> uint8 [H, W, 3]; errors name the path."""
    return decode_image(tf.io.read_file(path), path)
