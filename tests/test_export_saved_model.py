"""The TF Serving SavedModel: layout, size, signatures, parity with Keras, bad input.

One tiny ANet (ResNet-18-IBN-a at base width 8, 48x32 input so height and width
cannot be swapped unnoticed; ``tiny_export_run`` of conftest.py, shared with the
other export tests) is exported once per module.
"""

import json
import os
import shutil
import subprocess

import numpy as np
import pytest
import tensorflow as tf

from anet_tf.data.decode import decode_image
from anet_tf.data.preprocessing import normalize
from anet_tf.data.preprocessing import preprocess_for_inference
from anet_tf.model import build_model_from_config
from anet_tf.model import select_test_feature

# ---------------------------------------------------------------- helpers


def keras_reference(net, cfg, names, image_bytes):
    """What evaluation computes for encoded images: decode + preprocess, the Keras
    network, the test feature, L2 normalisation."""
    images = tf.stack(
        [
            preprocess_for_inference(decode_image(tf.constant(b)), cfg.data.image_size)
            for b in image_bytes
        ]
    )
    out = net(images, training=False)
    feature = select_test_feature(out, cfg.eval.feature, names).numpy()
    embedding = feature / np.linalg.norm(feature, axis=-1, keepdims=True)
    probs = {n: tf.nn.softmax(out[f"a_{n}_logits"]).numpy() for n in names}
    return embedding, probs


# ---------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def exported(tmp_path_factory, tiny_export_run):
    from anet_tf.export.saved_model import export_saved_model

    tmp = str(tmp_path_factory.mktemp("saved_model"))
    net, cfg, dataset = tiny_export_run(tmp)
    path = export_saved_model(net, cfg, dataset, os.path.join(tmp, "export"))
    return net, cfg, dataset, path, tf.saved_model.load(path)


def test_tf_serving_layout_and_assets(exported, export_image_size):
    net, cfg, dataset, path, _ = exported
    base = os.path.dirname(path)
    assert os.path.basename(base) == cfg.export.model_name == "anet"
    assert os.path.basename(path) == str(cfg.export.version) == "1"
    assert os.listdir(base) == ["1"], "the staging folder was left behind"
    for name in ("saved_model.pb", "variables", "assets", "assets.extra"):
        assert os.path.exists(os.path.join(path, name)), name
    with open(os.path.join(path, "assets", "metadata.json")) as fh:
        meta = json.load(fh)
    assert meta["input_size"] == list(export_image_size)
    assert meta["feature"] == cfg.eval.feature == "j"
    assert meta["embedding_dim"] == 16
    assert meta["dataset"] == "synthetic"
    assert [a["name"] for a in meta["attributes"]] == ["color", "type"]
    assert meta["attributes"][0]["classes"] == dataset.attribute_classes[0]
    with open(os.path.join(path, "assets", "color_classes.txt")) as fh:
        assert fh.read().splitlines() == dataset.attribute_classes[0]
    with open(os.path.join(path, "assets", "config.yaml")) as fh:
        assert "resnet18_ibn_a" in fh.read()


def test_each_variable_is_stored_once(exported):
    net, _, _, path, _ = exported
    weights = sum(v.numpy().nbytes for v in net.variables)
    stored = sum(
        os.path.getsize(os.path.join(path, "variables", f))
        for f in os.listdir(os.path.join(path, "variables"))
    )
    # model.export writes about 2x the weights; the index and headers add little.
    assert stored < 1.1 * weights + 64 * 1024, (stored, weights)


def test_saved_model_cli_lists_the_signatures(exported):
    path = exported[3]
    if shutil.which("saved_model_cli") is None:
        pytest.skip("saved_model_cli is not on PATH")
    out = subprocess.run(
        ["saved_model_cli", "show", "--dir", path, "--all"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    assert out.returncode == 0, out.stderr
    for text in (
        "signature_def['serving_default']",
        "signature_def['serve_images']",
        "signature_def['serve_images_uint8']",
        "inputs['image_bytes']",
        "outputs['embedding']",
        "outputs['color_label']",
        "outputs['type_probs']",
    ):
        assert text in out.stdout, text


def test_every_signature_matches_keras(exported, encode_image, random_pixels):
    net, cfg, dataset, _, loaded = exported
    names = ["color", "type"]
    pixels = [random_pixels(60, 40, seed=1), random_pixels(48, 32, seed=2)]
    files = [encode_image(p) for p in pixels]
    embedding, probs = keras_reference(net, cfg, names, files)

    by_bytes = loaded.signatures["serving_default"](image_bytes=tf.constant(files))
    results = [by_bytes]
    for p in pixels:  # decoded images of different sizes go one at a time
        for dtype, signature in (
            (tf.float32, "serve_images"),
            (tf.uint8, "serve_images_uint8"),
        ):
            out = loaded.signatures[signature](images=tf.constant(p[None], dtype))
            results.append({k: v for k, v in out.items()})
    for i, out in enumerate(results):
        rows = slice(None) if i == 0 else slice((i - 1) // 2, (i - 1) // 2 + 1)
        np.testing.assert_allclose(out["embedding"].numpy(), embedding[rows], atol=1e-5)
        for n in names:
            np.testing.assert_allclose(
                out[f"{n}_probs"].numpy(), probs[n][rows], atol=1e-5
            )
            classes = dataset.attribute_classes[names.index(n)]
            expected = [classes[k].encode() for k in probs[n][rows].argmax(-1)]
            assert list(out[f"{n}_label"].numpy()) == expected
    assert by_bytes["embedding"].shape == (2, 16)
    np.testing.assert_allclose(
        np.linalg.norm(by_bytes["embedding"], axis=-1), 1, atol=1e-6
    )


def test_not_an_image_is_invalid_argument_and_the_model_keeps_serving(exported, encode_image, random_pixels):
    _, _, _, _, loaded = exported
    serve = loaded.signatures["serving_default"]
    good = encode_image(random_pixels(20, 20))
    jpeg = encode_image(random_pixels(20, 20), "JPEG")
    for bad, reason in (
        (b"hello, not an image", "not a JPEG, PNG, GIF, BMP or WebP file"),
        (b"", "the file is empty"),
        (jpeg[: len(jpeg) // 2], "truncated JPEG"),
    ):
        with pytest.raises(
            tf.errors.InvalidArgumentError, match=r"cannot decode image image_bytes\[1\]"
        ) as info:
            serve(image_bytes=tf.constant([good, bad, good, bad]))  # the first bad one
        assert reason in str(info.value)
    assert serve(image_bytes=tf.constant([good]))["embedding"].shape == (1, 16)


def _png(width: int, height: int, data: bytes) -> bytes:
    """A PNG file (8-bit RGB) with the given IHDR size and IDAT payload."""
    import struct
    import zlib

    def chunk(kind, payload):
        crc = zlib.crc32(kind + payload) & 0xFFFFFFFF
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", data)
        + chunk(b"IEND", b"")
    )


def test_damage_behind_a_valid_header_is_named_by_its_index(exported, encode_image, random_pixels):
    """Files whose header and end marker are intact pass the checks before decoding;
    the decoder's own error names no image. The request still fails naming the
    image's index in the batch, and the model keeps serving."""
    import zlib

    _, _, _, _, loaded = exported
    serve = loaded.signatures["serving_default"]
    good = encode_image(random_pixels(20, 20))
    jpeg = encode_image(random_pixels(20, 20), "JPEG")
    sos = jpeg.find(b"\xff\xda")
    damaged = "the decoder refused the data after a valid header (damaged inside the file)"
    cases = [
        ("its header announces no pixels", _png(0, 0, zlib.compress(b""))),
        (damaged, _png(20, 20, b"\x00" * 40)),  # IDAT not a zlib stream
        (damaged, jpeg[:sos] + b"\xff\xd9"),  # header, tables, frame, end: no scan
    ]
    for reason, bad in cases:
        with pytest.raises(tf.errors.InvalidArgumentError) as info:
            serve(image_bytes=tf.constant([good, good, bad, good]))
        assert f"cannot decode image image_bytes[2]: {reason}" in str(info.value)
    # The first bad image of the batch, whichever check finds the other one.
    with pytest.raises(tf.errors.InvalidArgumentError) as info:
        serve(image_bytes=tf.constant([good, cases[1][1], good, b"not an image"]))
    assert f"cannot decode image image_bytes[1]: {damaged}" in str(info.value)
    assert serve(image_bytes=tf.constant([good]))["embedding"].shape == (1, 16)


def test_nonfinite_pixels_are_invalid_argument(exported, export_image_size):
    _, _, _, _, loaded = exported
    h, w = export_image_size
    images = np.full([2, h, w, 3], 100.0, np.float32)
    for bad in (np.nan, np.inf):
        images[1, 3, 4, 0] = bad
        with pytest.raises(tf.errors.InvalidArgumentError, match="pixels contain NaN or Inf"):
            loaded.signatures["serve_images"](images=tf.constant(images))
    images[1, 3, 4, 0] = 100.0
    out = loaded.signatures["serve_images"](images=tf.constant(images))
    assert np.isfinite(out["embedding"].numpy()).all()


def test_grayscale_rgba_and_large_images(exported, encode_image, random_pixels):
    net, cfg, _, _, loaded = exported
    files = [
        encode_image(random_pixels(30, 20, seed=3, channels=1), "PNG", "L"),
        encode_image(random_pixels(30, 20, seed=4, channels=4), "PNG", "RGBA"),
        encode_image(random_pixels(1200, 1600, seed=5), "JPEG"),
    ]
    embedding, _ = keras_reference(net, cfg, ["color", "type"], files)
    out = loaded.signatures["serving_default"](image_bytes=tf.constant(files))
    assert np.isfinite(out["embedding"].numpy()).all()
    np.testing.assert_allclose(out["embedding"].numpy(), embedding, atol=1e-5)


def test_empty_batch_gives_empty_outputs(exported, export_image_size):
    _, _, _, _, loaded = exported
    h, w = export_image_size
    calls = {
        "serving_default": {"image_bytes": tf.constant([], tf.string)},
        "serve_images": {"images": tf.zeros([0, h, w, 3], tf.float32)},
        "serve_images_uint8": {"images": tf.zeros([0, 100, 80, 3], tf.uint8)},
    }
    for signature, inputs in calls.items():
        out = loaded.signatures[signature](**inputs)
        assert out["embedding"].shape == (0, 16), signature
        assert out["color_probs"].shape[0] == 0
        assert out["type_label"].shape == (0,)


def test_load_embedder_takes_normalised_images(exported, export_image_size, random_pixels):
    from anet_tf.export.saved_model import load_embedder

    net, cfg, _, path, _ = exported
    embed = load_embedder(path)
    pixels = np.stack([random_pixels(*export_image_size, seed=s) for s in (6, 7)])
    images = normalize(tf.constant(pixels, tf.float32))
    out = embed(images)
    feature = select_test_feature(net(images, training=False), "j", ["color", "type"]).numpy()
    expected = feature / np.linalg.norm(feature, axis=-1, keepdims=True)
    assert isinstance(out, np.ndarray)
    np.testing.assert_allclose(out, expected, atol=1e-5)
    with pytest.raises(FileNotFoundError, match="saved_model.pb"):
        load_embedder(os.path.dirname(path))


def test_load_predictor_maps_served_labels_to_class_indices(exported, export_image_size, random_pixels):
    """`evaluate --model` measures the served `<name>_label` outputs: they come
    back as indices into the model's class lists, equal to the Keras argmax."""
    from anet_tf.export.saved_model import load_predictor

    net, cfg, dataset, path, _ = exported
    predict = load_predictor(path)
    assert predict.attribute_classes == {
        n: list(c)
        for n, c in zip(dataset.attribute_names, dataset.attribute_classes, strict=True)
    }
    pixels = np.stack([random_pixels(*export_image_size, seed=s) for s in (8, 9, 10)])
    images = normalize(tf.constant(pixels, tf.float32))
    embedding, classes = predict(images)
    out = net(images, training=False)
    assert embedding.shape == (3, 16) and sorted(classes) == ["color", "type"]
    for name, predicted in classes.items():
        assert predicted.dtype == np.int64
        np.testing.assert_array_equal(
            predicted, np.argmax(out[f"a_{name}_logits"].numpy(), axis=-1)
        )


def test_baseline_has_only_the_embedding(exported, tiny_export_config):
    from anet_tf.export.saved_model import build_serving_module

    _, _, dataset, _, _ = exported
    cfg = tiny_export_config(dataset.root, ["model.variant=baseline", "eval.feature=f"])
    assert cfg.data.attributes == []  # the baseline reads none
    net = build_model_from_config(cfg, len(dataset.train_pids()), [])
    module = build_serving_module(net, cfg, dataset)
    out = module.serve_images(tf.zeros([2, 10, 10, 3]))
    assert sorted(out) == ["embedding"]
    assert out["embedding"].shape == (2, 16)


def test_wrong_class_names_are_refused(exported, export_image_size):
    from anet_tf.export.saved_model import AnetServing

    net = exported[0]
    with pytest.raises(ValueError, match="class names"):
        AnetServing(
            net,
            feature="j",
            attribute_names=["color", "type"],
            attribute_classes=[["red", "blue"], ["a", "b"]],
            image_size=export_image_size,
        )


def test_images_announcing_too_many_pixels_are_refused_before_decoding(exported, encode_image, random_pixels):
    """A file whose header claims 10000 x 10000 pixels (over data.max_image_pixels,
    40 M by default) is refused from its header, before 300 MB are decoded."""
    import struct

    _, cfg, _, path, loaded = exported
    serve = loaded.signatures["serving_default"]
    png = bytearray(encode_image(random_pixels(20, 20)))
    png[16:24] = struct.pack(">II", 10000, 10000)  # IHDR width, height
    jpeg = bytearray(encode_image(random_pixels(20, 20), "JPEG"))
    sof = jpeg.find(b"\xff\xc0")
    jpeg[sof + 5 : sof + 9] = struct.pack(">HH", 10000, 10000)  # SOF0 height, width
    webp = bytearray(encode_image(random_pixels(20, 20), "WEBP", lossless=True))
    assert webp[12:16] == b"VP8L"
    bits = struct.unpack("<I", webp[21:25])[0] & ~((1 << 28) - 1)  # keep alpha/version bits
    webp[21:25] = struct.pack("<I", bits | 9999 | 9999 << 14)  # width-1, height-1
    good = encode_image(random_pixels(20, 20))
    for big in (png, jpeg, webp):
        with pytest.raises(tf.errors.InvalidArgumentError) as info:
            serve(image_bytes=tf.constant([good, bytes(big)]))
        assert (
            "cannot decode image image_bytes[1]: 10000 x 10000 pixels, more than "
            f"data.max_image_pixels={cfg.data.max_image_pixels}"
        ) in str(info.value)
    with open(os.path.join(path, "assets", "metadata.json")) as fh:
        assert json.load(fh)["max_image_pixels"] == cfg.data.max_image_pixels == 40_000_000
