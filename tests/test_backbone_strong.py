"""FastReID's backbone options: the ceil-mode stem and the non-local blocks.

Checked against NumPy references written from FastReID's description
(``nn.MaxPool2d(3, 2, ceil_mode=True)``; ``Non_local``: z = BN(W (theta phi^T / N) g)
+ x) and, where torch is installed, the max-pool against PyTorch itself.
"""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf
from numpy.lib.stride_tricks import sliding_window_view
from resnet_reference import assert_close

from anet_tf.model.backbone import NonLocal
from anet_tf.model.backbone import build_backbone
from anet_tf.model.backbone import non_local_positions

# ------------------------------------------------------------ NumPy references


def np_maxpool_ceil(x):
    """3x3/2 max-pool, no padding, ceil mode (PyTorch's rule: out = ceil((H - 3) / 2)
    + 1; a window that hangs over the bottom/right edge takes the max of what it
    covers)."""
    _, h, w, _ = x.shape
    oh, ow = math.ceil((h - 3) / 2) + 1, math.ceil((w - 3) / 2) + 1
    ph, pw = (oh - 1) * 2 + 3 - h, (ow - 1) * 2 + 3 - w
    x = np.pad(x, ((0, 0), (0, ph), (0, pw), (0, 0)), constant_values=-np.inf)
    return sliding_window_view(x, (3, 3), axis=(1, 2))[:, ::2, ::2].max(axis=(-2, -1))


def np_non_local(x, p):
    """FastReID's Non_local on NHWC x with torch-named parameters in Keras layouts
    (1x1 kernels as [in, out] matrices)."""
    b, h, w, c = x.shape
    flat = x.reshape(b, h * w, c)
    theta = flat @ p["theta.w"] + p["theta.b"]
    phi = flat @ p["phi.w"] + p["phi.b"]
    g = flat @ p["g.w"] + p["g.b"]
    f = theta @ phi.transpose(0, 2, 1) / (h * w)
    y = f @ g
    wy = y @ p["W0.w"] + p["W0.b"]
    wy = (wy - p["mean"]) / np.sqrt(p["var"] + 1e-5) * p["gamma"] + p["beta"]
    return (wy + flat).reshape(b, h, w, c)


def random_non_local_params(c, inter, rng):
    return {
        "theta.w": rng.normal(0, 0.3, (c, inter)),
        "theta.b": rng.normal(0, 0.1, inter),
        "phi.w": rng.normal(0, 0.3, (c, inter)),
        "phi.b": rng.normal(0, 0.1, inter),
        "g.w": rng.normal(0, 0.3, (c, inter)),
        "g.b": rng.normal(0, 0.1, inter),
        "W0.w": rng.normal(0, 0.3, (inter, c)),
        "W0.b": rng.normal(0, 0.1, c),
        # Not the identity initialisation: the block must contribute.
        "gamma": rng.uniform(0.5, 1.5, c),
        "beta": rng.normal(0, 0.1, c),
        "mean": rng.normal(0, 0.1, c),
        "var": rng.uniform(0.5, 1.5, c),
    }


def set_non_local(layer, p):
    k = lambda m: m[None, None].astype("float32")  # noqa: E731
    layer.g.set_weights([k(p["g.w"]), p["g.b"]])
    layer.theta.set_weights([k(p["theta.w"]), p["theta.b"]])
    layer.phi.set_weights([k(p["phi.w"]), p["phi.b"]])
    layer.W_0.set_weights([k(p["W0.w"]), p["W0.b"]])
    layer.W_1.set_weights([p["gamma"], p["beta"], p["mean"], p["var"]])


def randomize(model, rng):
    """Random weights with valid BatchNorm statistics (positive variances)."""
    for var in model.weights:
        kind = var.path.rsplit("/", 1)[-1]
        shape = tuple(var.shape)
        if kind == "kernel":
            value = rng.normal(0, math.sqrt(2.0 / np.prod(shape[:-1])), shape)
        elif kind in ("gamma", "moving_variance"):
            value = rng.uniform(0.5, 1.5, shape)
        else:  # beta, bias, moving_mean
            value = rng.normal(0, 0.1, shape)
        var.assign(value.astype("float32"))


# ------------------------------------------------------------------- the stem


@pytest.mark.parametrize("h, w", [(8, 8), (9, 9), (10, 7), (7, 12), (33, 22)])
def test_fastreid_maxpool_is_ceil_mode(h, w):
    backbone = build_backbone("resnet18", base_width=4, stem="fastreid")
    pool = keras.Model(
        backbone.get_layer("maxpool_pad").input, backbone.get_layer("maxpool").output
    )
    # Post-ReLU values, zeros included (the stem's maps have many).
    x = np.maximum(np.random.default_rng(h * w).normal(size=(2, h, w, 4)), 0)
    expected = np_maxpool_ceil(x)
    assert expected.shape[1:3] == (
        math.ceil((h - 3) / 2) + 1,
        math.ceil((w - 3) / 2) + 1,
    )
    np.testing.assert_array_equal(pool(x.astype("float32")), expected.astype("float32"))


def test_numpy_ceil_mode_reference_matches_pytorch():
    torch = pytest.importorskip("torch")
    x = np.maximum(np.random.default_rng(0).normal(size=(1, 10, 9, 2)), 0)
    expected = torch.nn.MaxPool2d(3, 2, ceil_mode=True)(
        torch.from_numpy(x).permute(0, 3, 1, 2)
    )
    np.testing.assert_array_equal(
        np_maxpool_ceil(x), expected.permute(0, 2, 3, 1).numpy()
    )


def test_stems_differ_only_in_the_maxpool():
    ibn = build_backbone("resnet18_ibn_a", base_width=4, stem="ibn")
    fast = build_backbone("resnet18_ibn_a", base_width=4, stem="fastreid")
    assert [w.path for w in ibn.weights] == [w.path for w in fast.weights]
    fast.set_weights(ibn.get_weights())
    x = np.random.default_rng(0).normal(size=(1, 67, 45, 3)).astype("float32")
    # conv1 -> 34 x 23; padding 1: 17 x 12, ceil mode: 17 x 11.
    ibn_stem = keras.Model(ibn.input, ibn.get_layer("maxpool").output)
    fast_stem = keras.Model(fast.input, fast.get_layer("maxpool").output)
    assert ibn_stem(x).shape[1:3] == (17, 12)
    assert fast_stem(x).shape[1:3] == (17, 11)
    relu = keras.Model(fast.input, fast.get_layer("relu").output)(x).numpy()
    np.testing.assert_array_equal(fast_stem(x), np_maxpool_ceil(relu))
    with pytest.raises(ValueError, match="stem must be one of"):
        build_backbone("resnet18", base_width=4, stem="caffe")


# ------------------------------------------------------------ non-local block


@pytest.mark.parametrize(
    "shape, inter",
    [
        ((2, 5, 7, 8), None),  # N = 35 > inter = 4: theta (phi^T g) / N
        ((2, 5, 7, 8), 1),  # FastReID's current inner width
        ((2, 2, 3, 16), None),  # N = 6 < inter = 8: (theta phi^T / N) g
    ],
)
def test_non_local_block_matches_numpy(shape, inter):
    rng = np.random.default_rng(0)
    c = shape[-1]
    p = random_non_local_params(c, inter or c // 2, rng)
    x = rng.normal(size=shape)
    expected = np_non_local(x, p)
    layer = NonLocal(inter)
    layer.build(shape)
    set_non_local(layer, p)
    assert layer.g.kernel.shape == (1, 1, c, inter or c // 2)
    assert_close(layer(x.astype("float32"), training=False), expected, tol=1e-5)
    # Height and width unknown when the graph is traced: FastReID's product order.
    traced = tf.function(
        lambda t: layer(t, training=False),
        input_signature=[tf.TensorSpec((None, None, None, c), tf.float32)],
    )
    assert_close(traced(x.astype("float32")), expected, tol=1e-5)


def test_non_local_block_config_and_mixed_precision():
    layer = NonLocal(3, name="nl2_0")
    clone = NonLocal.from_config(layer.get_config())
    assert clone.inter_channels == 3 and clone.name == "nl2_0"
    half = NonLocal(dtype="mixed_float16")
    x = np.random.default_rng(0).normal(size=(1, 4, 4, 8)).astype("float16")
    y = half(x, training=False)
    assert keras.backend.standardize_dtype(y.dtype) == "float16"
    assert half.g.kernel.dtype == "float32"
    with pytest.raises(ValueError, match="inter_channels"):
        NonLocal(0)


# ------------------------------------------------------------------ placement


def test_non_local_positions_follow_fastreid_rule():
    # FastReID: NL_k_idx = sorted(n_k - (i + 1) for i in range(m_k)), m = [0, 2, 3, 0].
    assert non_local_positions((3, 4, 6, 3)) == {2: (2, 3), 3: (3, 4, 5)}
    assert non_local_positions((2, 2, 2, 2)) == {2: (0, 1), 3: (0, 1)}


@pytest.mark.parametrize(
    "arch, repeats, expected",
    [
        (
            "resnet50_ibn_a",
            (3, 4, 6, 3),
            {
                "nl2_0": "layer2_2",
                "nl2_1": "layer2_3",
                "nl3_0": "layer3_3",
                "nl3_1": "layer3_4",
                "nl3_2": "layer3_5",
            },
        ),
        (
            "resnet18",
            (2, 2, 2, 2),
            {
                "nl2_0": "layer2_0",
                "nl2_1": "layer2_1",
                "nl3_0": "layer3_0",
                "nl3_1": "layer3_1",
            },
        ),
    ],
)
def test_non_local_blocks_follow_the_right_blocks(arch, repeats, expected):
    base = 4
    backbone = build_backbone(arch, base_width=base, non_local=True)
    blocks = [la for la in backbone.layers if isinstance(la, NonLocal)]
    assert [la.name for la in blocks] == list(expected)
    expansion = 4 if "50" in arch else 1
    for layer in blocks:
        block = expected[layer.name]
        # Its input is the output of that block...
        (source,) = [n.operation.name for n in layer._inbound_nodes[0].parent_nodes]
        assert source == f"{block}_out"
        # ... and its output goes only into the next block (of the next stage
        # after the last block of a stage).
        stage, index = (int(v) for v in block[len("layer") :].split("_"))
        following = (
            f"layer{stage}_{index + 1}_"
            if index + 1 < repeats[stage - 1]
            else f"layer{stage + 1}_0_"
        )
        consumers = {node.operation.name for node in layer._outbound_nodes}
        assert consumers and all(n.startswith(following) for n in consumers), consumers
        c = base * 2 ** (stage - 1) * expansion
        assert layer.g.kernel.shape == (1, 1, c, c // 2)
        assert layer.W_1.gamma.shape == (c,)
    plain = build_backbone(arch, base_width=base)
    assert not any(isinstance(la, NonLocal) for la in plain.layers)
    assert len(backbone.layers) == len(plain.layers) + len(expected)


@pytest.mark.parametrize("arch", ["resnet50_ibn_a", "resnet18_ibn_a"])
def test_new_non_local_blocks_are_the_identity(arch):
    """BatchNorm gamma and beta start at 0: with the other weights shared, the
    backbone with non-local blocks computes exactly the plain one."""
    plain = build_backbone(arch, base_width=4, stem="fastreid")
    rng = np.random.default_rng(0)
    randomize(plain, rng)
    nl = build_backbone(arch, base_width=4, stem="fastreid", non_local=True)
    for layer in plain.layers:
        if layer.weights:
            nl.get_layer(layer.name).set_weights(layer.get_weights())
    for layer in nl.layers:
        if isinstance(layer, NonLocal):
            np.testing.assert_array_equal(layer.W_1.gamma, 0.0)
            np.testing.assert_array_equal(layer.W_1.beta, 0.0)
    x = rng.normal(size=(2, 67, 45, 3)).astype("float32")
    expected = plain(x, training=False).numpy()
    assert np.isfinite(expected).all() and np.abs(expected).max() > 0
    np.testing.assert_array_equal(nl(x, training=False), expected)


def test_non_local_backbone_saves_and_reloads(tmp_path):
    backbone = build_backbone(
        "resnet18_ibn_a", base_width=4, non_local=True, non_local_inter=1
    )
    path = str(tmp_path / "nl.keras")
    backbone.save(path)
    loaded = keras.saving.load_model(path)
    assert loaded.get_layer("nl3_1").inter_channels == 1
    x = np.random.default_rng(0).normal(size=(1, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(loaded(x), backbone(x), rtol=1e-6, atol=1e-6)


# inter 1: FastReID's checkpoints; None: the paper's C / 2.
@pytest.mark.parametrize("inter", [1, None])
def test_a_new_non_local_block_is_the_identity_under_float16(inter):
    """y is cubic in x: on ResNet-50's 512 stage-2 channels, a map of mean |x| 24
    puts y beyond float16's 65504. The block must still be the identity while its
    BatchNorm has gamma 0 and its initial moving statistics (mean 0, variance 1),
    not 0 * inf = NaN."""
    layer = NonLocal(inter, dtype="mixed_float16")
    x = np.abs(np.random.default_rng(0).normal(size=(2, 16, 16, 512))) * 30
    x = x.astype("float16")
    z = layer(x, training=False)
    assert keras.backend.standardize_dtype(z.dtype) == "float16"
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(z), x)
