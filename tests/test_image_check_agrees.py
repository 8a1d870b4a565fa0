"""One image check: ``data check`` / ``fit``'s pre-flight (Python), the dataset
readers and the serving signature (TensorFlow, in the graph) give the same verdict
and the same reason on the same file, from the rules of ``anet_tf.data.image_rules``."""

import io
import os
import re
import struct
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import anet_tf
from anet_tf.data import image_rules
from anet_tf.data.decode import decode_image
from anet_tf.data.decode import image_bytes_problem
from anet_tf.data.decode import read_image
from anet_tf.data.generic import image_header_problem
from anet_tf.data.generic import image_problem
from anet_tf.data.preprocessing import preprocess_image_bytes

LIMIT = 100  # pixels: the good images are 8 x 6, the big one 12 x 10


def _encode(fmt, size=(8, 6), mode="RGB", **options) -> bytes:
    pixels = np.random.default_rng(0).integers(0, 255, (size[1], size[0], len(mode)))
    buf = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint8), mode).save(buf, fmt, **options)
    return buf.getvalue()


def _png_with_size(width, height) -> bytes:
    """A good 8 x 6 PNG whose IHDR announces ``width`` x ``height``."""
    png = bytearray(_encode("PNG"))
    png[16:24] = struct.pack(">II", width, height)
    return bytes(png)


JPEG = _encode("JPEG")
PNG = _encode("PNG")
# name -> (bytes, the reason both checks give; None = accepted)
CORPUS = {
    "good.jpg": (JPEG, None),
    "good.png": (PNG, None),
    "good.gif": (_encode("GIF"), None),
    "good.bmp": (_encode("BMP"), None),
    "lossy.webp": (_encode("WEBP"), None),  # 'VP8 '
    "lossless.webp": (_encode("WEBP", lossless=True), None),  # 'VP8L'
    "alpha.webp": (_encode("WEBP", mode="RGBA"), None),  # 'VP8X'
    "junk_in_tail.jpg": (JPEG + b"\0junk" * 40, None),  # 200 bytes after FF D9
    "truncated.jpg": (
        JPEG[: len(JPEG) // 2],
        "truncated JPEG (no end-of-image marker)",
    ),
    "truncated.png": (PNG[:-20], "truncated PNG (no IEND chunk)"),
    "junk_past_tail.jpg": (
        JPEG + b"j" * image_rules.TAIL_BYTES,
        "truncated JPEG (no end-of-image marker)",
    ),
    "text.jpg": (b"this is not an image\n", "not a JPEG, PNG, GIF, BMP or WebP file"),
    "empty.jpg": (b"", "the file is empty"),
    "big.png": (
        _encode("PNG", size=(12, 10)),
        "12 x 10 pixels, more than data.max_image_pixels=100",
    ),
    "huge_header.png": (
        _png_with_size(10000, 10000),
        "10000 x 10000 pixels, more than data.max_image_pixels=100",
    ),
    "zero.png": (
        _png_with_size(0, 6),
        "its header announces no pixels (width or height 0)",
    ),
}


def _tf_reason(contents: bytes, source: str) -> str | None:
    """The reason decode.py's check gives, run eagerly (None: decoded)."""
    try:
        decode_image(tf.constant(contents), source, max_pixels=LIMIT)
    except tf.errors.InvalidArgumentError as exc:
        match = re.search(
            rf"cannot decode image {re.escape(source)}: ([^\n\]']+)", exc.message
        )
        assert match, exc.message
        return match.group(1).strip()
    return None


def _serving_reason(contents: bytes) -> str | None:
    """The reason the serving signature's batch decode gives (None: decoded)."""
    try:
        preprocess_image_bytes(tf.constant([contents]), (8, 8), max_pixels=LIMIT)
    except tf.errors.InvalidArgumentError as exc:
        match = re.search(
            r"cannot decode image image_bytes\[0\]: ([^\n\]']+)", exc.message
        )
        assert match, exc.message
        return match.group(1).strip()
    return None


@pytest.mark.parametrize("name", list(CORPUS))
def test_python_and_graph_checks_give_one_verdict(tmp_path, name):
    contents, expected = CORPUS[name]
    path = tmp_path / name
    path.write_bytes(contents)
    python_full = image_problem(str(path), max_pixels=LIMIT)
    python_header = image_header_problem(str(path), max_pixels=LIMIT)
    wanted = None if expected is None else f"cannot be decoded: {expected}"
    assert python_full == wanted
    assert python_header == wanted
    assert image_rules.bytes_problem(contents, LIMIT) == expected
    assert _tf_reason(contents, str(path)) == expected
    assert _serving_reason(contents) == expected


def test_without_a_limit_both_accept_the_big_image_and_still_refuse_the_rest():
    for name in ("big.png", "huge_header.png", "truncated.png", "text.jpg"):
        contents, expected = CORPUS[name]
        big = name in ("big.png", "huge_header.png")
        assert image_rules.bytes_problem(contents) == (None if big else expected)
        graph = image_bytes_problem(tf.constant(contents)).numpy().decode()
        assert graph == ("" if big else expected)


def test_the_readers_check_in_a_graph_gives_the_same_reason(tmp_path):
    """Inside tf.data (as the readers run it), not only eagerly."""
    names = ["good.png", "lossless.webp", "truncated.png", "text.jpg"]
    paths = []
    for name in names:
        (tmp_path / name).write_bytes(CORPUS[name][0])
        paths.append(str(tmp_path / name))
    for path, name in zip(paths, names, strict=True):
        ds = tf.data.Dataset.from_tensors(path).map(read_image)
        expected = CORPUS[name][1]
        if expected is None:
            assert next(iter(ds)).shape[-1] == 3
        else:
            with pytest.raises(
                tf.errors.InvalidArgumentError, match=re.escape(expected)
            ):
                next(iter(ds))


def test_data_check_accepts_a_webp_in_a_folder_dataset(tmp_path, capsys):
    from anet_tf.cli import main
    from anet_tf.data.synthetic import generate

    root = Path(
        generate(
            str(tmp_path / "s"),
            ids=6,
            test_ids=2,
            cameras=2,
            images_per_id=3,
            image_size=32,
        )
    )
    manifest = (root / "manifest.csv").read_text()
    first = manifest.splitlines()[1].split(",")[0]
    webp = first.rsplit(".", 1)[0] + ".webp"
    Image.open(root / first).save(root / webp, "WEBP")
    os.remove(root / first)
    (root / "manifest.csv").write_text(manifest.replace(first, webp))
    assert main(["data", "check", str(root)]) == 0
    out = capsys.readouterr().out
    assert out.rstrip().splitlines()[-1] == "OK"
    # ... and the same folder with a truncated PNG saved as that WebP is refused.
    (root / webp).write_bytes(CORPUS["truncated.png"][0])
    assert main(["data", "check", str(root)]) == 1
    out = capsys.readouterr().out
    assert (
        f"{root / webp}: train image cannot be decoded: truncated PNG (no IEND chunk)"
    ) in out


def test_checking_a_folder_applies_the_given_pixel_limit(tmp_path):
    """`check(folder, max_pixels=N)` decodes with the limit it is given (the
    folder reader used to apply the default whatever it was given)."""
    from anet_tf.data.check import check
    from anet_tf.data.synthetic import generate

    root = generate(str(tmp_path / "s"), ids=6, test_ids=2, cameras=2, images_per_id=3,
                    image_size=32)
    assert check(root, verify_images=True)["ok"]
    report = check(root, verify_images=True, max_pixels=100)  # 32 x 32 = 1024 pixels
    assert not report["ok"]
    assert any("32 x 32 pixels, more than data.max_image_pixels=100" in p
               for p in report["problems"])


def test_pixel_limit_and_tail_size_are_defined_once():
    """The rules' constants are written in image_rules.py alone; the config's
    default of data.max_image_pixels is that constant."""
    from anet_tf.config.schema import DataConfig

    package = Path(anet_tf.__file__).parent
    definition = re.compile(
        r"^\s*(_?TAIL_BYTES|MAX_IMAGE_PIXELS|max_image_pixels: int)\s*=\s*(.+)$", re.M
    )
    found = {}
    for source in package.rglob("*.py"):
        for match in definition.finditer(source.read_text(encoding="utf-8")):
            found.setdefault(match.group(1), []).append(
                (str(source.relative_to(package)), match.group(2).strip())
            )
    rules = os.path.join("data", "image_rules.py")
    assert found["TAIL_BYTES"] == [(rules, "1024")]
    assert found["MAX_IMAGE_PIXELS"] == [(rules, "40_000_000")]
    assert "_TAIL_BYTES" not in found
    assert found["max_image_pixels: int"] == [
        (os.path.join("config", "schema.py"), "MAX_IMAGE_PIXELS")
    ]
    assert DataConfig().max_image_pixels == image_rules.MAX_IMAGE_PIXELS
    literal = re.compile(r"40_?000_?000")
    assert [
        str(s.relative_to(package))
        for s in package.rglob("*.py")
        if literal.search(s.read_text(encoding="utf-8"))
    ] == [rules]
