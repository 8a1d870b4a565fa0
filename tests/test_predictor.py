"""anet_tf.load: the Python API gives what `anet-tf embed` gives, from a run folder,
a checkpoint or a SavedModel, for paths, bytes and arrays; bad images are named as
the command names them.

The model is conftest.py's ``search_assets``: a tiny ANet, its run folder and the
SavedModel exported from the same weights.
"""

import os
import re

import numpy as np
import pytest
from PIL import Image

import anet_tf
from anet_tf.cli import main
from anet_tf.config import Config
from anet_tf.predictor import ImageError


@pytest.fixture(scope="module")
def images(tmp_path_factory, write_images):
    return write_images(tmp_path_factory.mktemp("predictor") / "imgs", 5)


@pytest.fixture(scope="module")
def cli_embeddings(search_assets, images, tmp_path_factory):
    """What `anet-tf embed` writes for ``images`` (a text list of them)."""
    tmp = tmp_path_factory.mktemp("predictor_cli")
    listing = tmp / "list.txt"
    listing.write_text("\n".join(images) + "\n")
    out = tmp / "emb.npz"
    code = main(
        [
            "embed",
            str(listing),
            "--model",
            search_assets.model,
            "-o",
            str(out),
            "--quiet",
        ]
    )
    assert code == 0
    from anet_tf.search.embeddings import load_embeddings

    return load_embeddings(str(out))


@pytest.fixture(scope="module")
def saved(search_assets):
    return anet_tf.load(search_assets.model)


@pytest.fixture(scope="module")
def run(search_assets):
    return anet_tf.load(search_assets.run)


def test_saved_model_gives_the_embed_command_vectors_and_labels(
    saved, images, cli_embeddings
):
    assert list(cli_embeddings.paths) == images
    vectors = saved.embed(images, batch_size=2)  # batches of 2, 2 and 1
    assert vectors.dtype == np.float32 and vectors.shape == (5, saved.embedding_dim)
    np.testing.assert_allclose(vectors, cli_embeddings.embedding, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    attrs = saved.predict_attributes(images)
    assert list(attrs) == saved.attribute_names == ["color", "type"]
    for i, name in enumerate(saved.attribute_names):
        prediction = attrs[name]
        assert prediction.classes == saved.attribute_classes[i]
        assert prediction.probs.shape == (5, len(prediction.classes))
        np.testing.assert_allclose(prediction.probs.sum(axis=1), 1.0, atol=1e-5)
        expected = np.asarray(prediction.classes)[prediction.probs.argmax(axis=1)]
        np.testing.assert_array_equal(prediction.labels, expected)
    _assert_same_as_file(attrs, cli_embeddings)


def _assert_same_as_file(attrs, emb):
    """Labels and probabilities against the embeddings file of `anet-tf embed`."""
    for name, prediction in attrs.items():
        np.testing.assert_array_equal(prediction.labels, emb.predicted[name])
        np.testing.assert_allclose(prediction.probs, emb.probs[name], atol=1e-5)


@pytest.mark.parametrize("which", ["run", "checkpoint", "weights file"])
def test_run_folder_and_checkpoint_give_the_embed_command_vectors(
    which, search_assets, images, cli_embeddings
):
    path = {
        "run": search_assets.run,
        "checkpoint": os.path.join(search_assets.run, "checkpoints", "best"),
        "weights file": os.path.join(
            search_assets.run, "checkpoints", "best", "net.weights.h5"
        ),
    }[which]
    model = anet_tf.load(path)
    import keras

    assert isinstance(model.model, keras.Model)
    assert isinstance(model.config, Config)
    assert model.config.model.base_width == search_assets.cfg.model.base_width
    np.testing.assert_allclose(model.embed(images), cli_embeddings.embedding, atol=1e-5)
    _assert_same_as_file(model.predict_attributes(images), cli_embeddings)


def test_bytes_arrays_and_single_images(saved, images, write_images, tmp_path):
    by_path = saved.embed(images)
    contents = [open(p, "rb").read() for p in images]
    np.testing.assert_allclose(saved.embed(contents), by_path, atol=1e-6)
    np.testing.assert_allclose(saved.embed(images[1]), by_path[1:2], atol=1e-6)
    # PNG files: the array holds exactly the pixels TensorFlow decodes.
    pngs = [p for p in images if p.endswith(".png")]
    arrays = [np.asarray(Image.open(p).convert("RGB")) for p in pngs]
    expected = saved.embed(pngs)
    np.testing.assert_allclose(saved.embed(arrays), expected, atol=1e-5)
    np.testing.assert_allclose(
        saved.embed([a.astype(np.float32) for a in arrays]), expected, atol=1e-5
    )
    np.testing.assert_allclose(saved.embed(np.stack(arrays)), expected, atol=1e-5)
    mixed = saved.embed([pngs[0], arrays[1], contents[0]])
    np.testing.assert_allclose(
        mixed, np.stack([expected[0], expected[1], by_path[0]]), atol=1e-5
    )
    small = np.asarray(Image.open(pngs[0]).convert("RGB").resize((20, 24)))
    assert saved.embed([small, arrays[0]]).shape == (
        2,
        saved.embedding_dim,
    )  # two sizes
    assert saved.embed([]).shape == (0, saved.embedding_dim)
    assert saved.predict_attributes([])["color"].labels.shape == (0,)


def test_bad_images_are_named_as_the_embed_command_names_them(
    search_assets, saved, images, tmp_path, capsys
):
    missing = str(tmp_path / "missing.jpg")
    garbage = tmp_path / "garbage.jpg"
    garbage.write_bytes(b"not an image at all")
    listing = tmp_path / "list.txt"
    listing.write_text(f"{images[0]}\n{missing}\n{garbage}\n")
    code = main(
        [
            "embed",
            str(listing),
            "--model",
            search_assets.model,
            "-o",
            str(tmp_path / "e.npz"),
            "--quiet",
        ]
    )
    assert code == 0
    skipped = [
        line[len("anet-tf embed: skipped ") :]
        for line in capsys.readouterr().err.splitlines()
        if line.startswith("anet-tf embed: skipped ")
    ]
    assert len(skipped) == 2
    with pytest.raises(ImageError) as info:
        saved.embed([images[0], missing, str(garbage)])
    assert [f"{image}: {reason}" for image, reason in info.value.failed] == skipped
    assert str(info.value) == "; ".join(skipped)
    assert info.value.failed[0] == (missing, "No such file or directory")
    with pytest.raises(ImageError, match=r"^images\[1\]: "):
        saved.predict_attributes([images[0], b"not an image"])
    with pytest.raises(ImageError, match=r"images\[0\]: the pixels contain NaN"):
        saved.embed([np.full((8, 8, 3), np.nan, np.float32)])
    with pytest.raises(
        ImageError, match=r"RGB image is an array \[H, W, 3\], got shape \[8, 8\]"
    ):
        saved.embed([np.zeros((8, 8), np.uint8)])
    with pytest.raises(ImageError, match=r"images\[0\]: .*got shape \[\]"):
        saved.embed([3.5])
    with pytest.raises(TypeError, match=r"images\[0\]: give a file path"):
        saved.embed([object()])


def test_load_names_what_is_not_a_model(tmp_path):
    with pytest.raises(
        FileNotFoundError, match="nope: no such run folder, checkpoint or SavedModel"
    ):
        anet_tf.load(str(tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="config.yaml"):
        anet_tf.load(str(tmp_path / "empty"))


# ------------------------------------------------------------- the array rule
def test_any_integer_or_float_dtype_on_the_0_255_scale_is_the_same_image(saved):
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (24, 20, 3), dtype=np.uint8)
    expected = saved.embed(pixels)
    for dtype in (np.int64, np.uint16, np.float16, np.float32, np.float64):
        np.testing.assert_allclose(
            saved.embed(pixels.astype(dtype)), expected, atol=1e-5, err_msg=str(dtype)
        )
    batch = np.stack([pixels, pixels[::-1]]).astype(np.float64)
    assert saved.embed(batch).shape == (2, saved.embedding_dim)
    assert saved.embed(np.zeros((0, 24, 20, 3), np.uint8)).shape == (
        0,
        saved.embedding_dim,
    )


NAN = "the pixels contain NaN or Inf; send values in [0, 255]"
GIVE = (
    r"^images: give a file path, encoded image bytes, an RGB array \[H, W, 3\], "
    r"a batch array \[N, H, W, 3\], or a list of these. Received: "
)
SHAPE = r"^images: an array is one RGB image \[H, W, 3\] or a batch \[N, H, W, 3\], "
LEVELS = (
    r"^images\[0\]: pixels are levels in \[0, 255\] \(uint8, or any integer or float "
    r"dtype on that scale\), got values in "
)


@pytest.mark.parametrize(
    "images, error, pattern",
    [
        (None, TypeError, GIVE + "NoneType$"),
        (3.0, TypeError, GIVE + "float$"),
        (np.float32(3), TypeError, GIVE + "float32$"),
        (np.zeros((8, 8), np.uint8), ImageError, SHAPE + r"got shape \[8, 8\]$"),
        (
            np.zeros((1, 2, 8, 8, 3)),
            ImageError,
            SHAPE + r"got shape \[1, 2, 8, 8, 3\]$",
        ),
        (np.zeros((2, 8, 8, 4)), ImageError, SHAPE + r"got shape \[2, 8, 8, 4\]$"),
        (
            np.zeros((2, 0, 8, 3)),
            ImageError,
            r"^images: the images are empty \(shape \[2, 0, 8, 3\]\)$",
        ),
        (np.zeros((0, 8, 3)), ImageError, r"^images\[0\]: the image is empty"),
        (
            np.full((8, 8, 3), 1e300),
            ImageError,
            r"^images\[0\]: " + re.escape(NAN) + "$",
        ),
        (
            np.full((8, 8, 3), -np.inf),
            ImageError,
            r"^images\[0\]: " + re.escape(NAN) + "$",
        ),
        (
            np.full((8, 8, 3), 60000, np.uint16),
            ImageError,
            LEVELS + r"\[60000, 60000\]; clip or rescale them$",
        ),
        (
            np.linspace(-0.5, 255, 192).reshape(8, 8, 3),
            ImageError,
            LEVELS + r"\[-0.5, 255\]; clip or rescale them$",
        ),
        (np.ones((8, 8, 3), bool), ImageError, r"^images\[0\]: pixels must be numbers"),
    ],
    ids=[
        "None",
        "float",
        "numpy scalar",
        "2-D",
        "5-D",
        "4 channels",
        "empty images",
        "empty image",
        "float64 overflow",
        "-Inf",
        "uint16",
        "below 0",
        "bool",
    ],
)
def test_a_bad_argument_is_refused_in_one_short_line(saved, images, error, pattern):
    with pytest.raises(error) as info:
        saved.embed(images)
    text = str(info.value)
    assert type(info.value) is error
    assert re.search(pattern, text), text
    assert "\n" not in text and len(text) < 200, text


def test_overflow_is_the_nan_error_and_a_batch_names_its_bad_images(saved):
    with pytest.raises(ImageError) as nan:
        saved.embed(np.full((8, 8, 3), np.nan))
    with pytest.raises(ImageError) as overflow:
        saved.embed(np.full((8, 8, 3), 1e300))  # float64: Inf as float32
    assert str(overflow.value) == str(nan.value) == f"images[0]: {NAN}"
    batch = np.zeros((3, 8, 8, 3), np.float32)
    batch[1, 2, 3, 0] = np.nan
    with pytest.raises(ImageError) as info:
        saved.embed(batch)
    assert info.value.failed == [("images[1]", NAN)]
    many = np.full((10, 8, 8, 3), np.inf, np.float32)
    with pytest.raises(ImageError) as info:
        saved.predict_attributes(many)
    assert len(info.value.failed) == 10
    text = str(info.value)
    assert text.endswith("; ... (10 images in all)") and text.count(NAN) == 3, text


def test_an_array_of_paths_or_a_generator_is_a_list_of_them(saved, images):
    expected = saved.embed(images[:2])
    np.testing.assert_allclose(saved.embed(np.array(images[:2])), expected, atol=1e-6)
    np.testing.assert_allclose(saved.embed(p for p in images[:2]), expected, atol=1e-6)


def test_the_python_api_is_quiet_like_the_cli(tmp_path):
    """anet_tf.load does not print TensorFlow's C++ start-up lines (oneDNN, CPU
    features), which the CLI hides too."""
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    script = (
        "import anet_tf\n"
        "try:\n"
        f"    anet_tf.load({str(tmp_path / 'missing')!r})\n"
        "except FileNotFoundError:\n"
        "    print('refused')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.stdout.strip() == "refused", done.stderr[-2000:]
    assert "cpu_feature_guard" not in done.stderr and "oneDNN" not in done.stderr, done.stderr
