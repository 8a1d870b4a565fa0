"""ANet network: backbones, custom layers, builder, saving and summary (tiny shapes)."""

import dataclasses

import keras
import numpy as np
import pytest

from anet_tf.config import Config
from anet_tf.model import BACKBONES
from anet_tf.model import build_anet
from anet_tf.model import build_backbone
from anet_tf.model import build_model_from_config
from anet_tf.model import select_test_feature
from anet_tf.model import summarize
from anet_tf.model.layers import IBN
from anet_tf.model.layers import AttributeBranch
from anet_tf.model.layers import ConvBNReLU
from anet_tf.model.layers import InstanceNormalization
from anet_tf.model.layers import JointModule
from anet_tf.model.layers import ReidHead
from anet_tf.model.layers import SEAttention
from anet_tf.model.names import BACKBONE_NAMES
from anet_tf.model.summary import layer_macs

ATTRS = ["color", "type"]
CLASSES = [3, 4]
NUM_IDS = 5
TINY = dict(
    num_ids=NUM_IDS,
    attribute_names=ATTRS,
    num_classes=CLASSES,
    backbone="resnet18_ibn_a",
    base_width=8,
    image_size=(64, 64),
    s_f=16,
    s_a=8,
    s_j=12,
)


def _images(n=2, seed=0):
    return np.random.default_rng(seed).normal(size=(n, 64, 64, 3)).astype("float32")


def _expected_keys(variant):
    keys = {"f", "f_logits"}
    if variant != "baseline":
        keys |= {f"a_{n}" for n in ATTRS} | {f"a_{n}_logits" for n in ATTRS}
    if variant == "anet":
        keys |= {"g", "j", "j_logits", "G", "G_reid"}
    return keys


# ------------------------------------------------------------------- backbones


def test_backbone_names_are_the_builders_keys():
    assert tuple(BACKBONES) == BACKBONE_NAMES


@pytest.mark.parametrize("name", list(BACKBONES))
def test_backbone_F_is_one_sixteenth_with_last_stride_1(name):
    net = build_backbone(name, base_width=8, input_shape=(64, 64, 3))
    c = 8 * (32 if name.startswith("resnet50") else 8)
    assert net.name == "backbone"
    assert tuple(net.output.shape) == (None, 4, 4, c)
    F = net(_images(1), training=False)
    assert F.shape == (1, 4, 4, c)


def test_last_stride_2_gives_one_thirty_second():
    net = build_backbone(
        "resnet18", base_width=8, last_stride=2, input_shape=(64, 64, 3)
    )
    assert tuple(net.output.shape) == (None, 2, 2, 64)


@pytest.mark.parametrize("name", ["resnet50_ibn_a", "resnet18_ibn_a"])
def test_ibn_in_first_norm_of_stages_1_to_3_with_half_channels(name):
    base = 5  # odd plane counts exercise int(planes * 0.5)
    net = build_backbone(name, base_width=base, input_shape=(64, 64, 3))
    ibn = {layer.name: layer for layer in net.layers if isinstance(layer, IBN)}
    blocks = (3, 4, 6) if name == "resnet50_ibn_a" else (2, 2, 2)
    expected = {
        f"layer{s}_{i}_bn1" for s, n in enumerate(blocks, start=1) for i in range(n)
    }
    assert set(ibn) == expected
    for layer_name, layer in ibn.items():
        planes = base * 2 ** (int(layer_name[5]) - 1)
        half = int(planes * 0.5)
        assert layer.half == half
        assert layer.instance_norm.gamma.shape == (half,)
        assert layer.batch_norm.moving_mean.shape == (planes - half,)
    assert isinstance(net.get_layer("layer4_0_bn1"), keras.layers.BatchNormalization)
    assert isinstance(net.get_layer("bn1"), keras.layers.BatchNormalization)
    for layer in net.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            assert layer.epsilon == 1e-5 and layer.momentum == 0.9


def test_unknown_backbone_lists_valid_names():
    with pytest.raises(KeyError, match="resnet50_ibn_a"):
        build_backbone("vgg16")


# ---------------------------------------------------------------------- layers


def _numpy_instance_norm(x, gamma, beta, eps=1e-5):
    mean = x.mean(axis=(1, 2), keepdims=True)
    var = x.var(axis=(1, 2), keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * gamma + beta


def test_instance_norm_matches_numpy():
    rng = np.random.default_rng(1)
    x = rng.normal(2.0, 3.0, size=(2, 5, 4, 3)).astype("float32")
    layer = InstanceNormalization()
    layer.build(x.shape)
    gamma, beta = rng.normal(size=3), rng.normal(size=3)
    layer.set_weights([gamma, beta])
    np.testing.assert_allclose(
        layer(x), _numpy_instance_norm(x, gamma, beta), rtol=1e-4, atol=1e-4
    )


def test_ibn_splits_instance_and_batch_norm():
    rng = np.random.default_rng(2)
    x = rng.normal(1.0, 2.0, size=(3, 4, 4, 7)).astype("float32")
    layer = IBN()
    layer.build(x.shape)
    half = 3  # int(7 * 0.5)
    g_in, b_in = rng.normal(size=half), rng.normal(size=half)
    g_bn, b_bn = rng.normal(size=4), rng.normal(size=4)
    mean, var = rng.normal(size=4), rng.uniform(0.5, 2.0, size=4)
    layer.instance_norm.set_weights([g_in, b_in])
    layer.batch_norm.set_weights([g_bn, b_bn, mean, var])
    y = np.asarray(layer(x, training=False))
    np.testing.assert_allclose(
        y[..., :half], _numpy_instance_norm(x[..., :half], g_in, b_in), atol=1e-4
    )
    bn = (x[..., half:] - mean) / np.sqrt(var + 1e-5) * g_bn + b_bn
    np.testing.assert_allclose(y[..., half:], bn, atol=1e-4)
    y_train = np.asarray(layer(x, training=True))
    x_bn = x[..., half:]
    bn_train = (x_bn - x_bn.mean((0, 1, 2))) / np.sqrt(x_bn.var((0, 1, 2)) + 1e-5)
    np.testing.assert_allclose(y_train[..., half:], bn_train * g_bn + b_bn, atol=1e-4)


def test_se_attention_scales_channels_of_F():
    F = np.random.default_rng(3).normal(size=(2, 3, 3, 32)).astype("float32")
    se = SEAttention(reduction=16)
    A = np.asarray(se(F))
    att = A / F
    assert se.squeeze.units == 2
    # One weight per sample and channel, in (0, 1): eq. (2), Att_i in R^c.
    np.testing.assert_allclose(att, att[:, :1, :1, :] * np.ones_like(att), rtol=1e-4)
    assert (att > 0).all() and (att < 1).all()


LAYER_CASES = {
    "InstanceNormalization": (
        lambda: InstanceNormalization(epsilon=1e-3, center=False),
        [(2, 4, 4, 6)],
    ),
    "IBN": (lambda: IBN(ratio=0.25, epsilon=1e-4, momentum=0.8), [(2, 4, 4, 8)]),
    "ConvBNReLU": (lambda: ConvBNReLU(5, 3), [(2, 4, 4, 6)]),
    "SEAttention": (lambda: SEAttention(reduction=4), [(2, 4, 4, 8)]),
    "ReidHead": (lambda: ReidHead(6, 5), [(2, 4, 4, 8)]),
    "AttributeBranch": (
        lambda: AttributeBranch(6, 3, attention="se", reduction=4),
        [(2, 4, 4, 8)],
    ),
    "AttributeBranch_fc": (
        lambda: AttributeBranch(6, 3, attention="fc"),
        [(2, 4, 4, 8)],
    ),
    "AttributeBranch_bnneck": (
        lambda: AttributeBranch(6, 3, neck="bnneck"),
        [(2, 4, 4, 8)],
    ),
    "JointModule": (lambda: JointModule(width=4), [(2, 4, 4, 8)] * 3),
}


@pytest.mark.parametrize("case", list(LAYER_CASES))
def test_layer_config_round_trip(case):
    make, shapes = LAYER_CASES[case]
    rng = np.random.default_rng(4)
    inputs = [rng.normal(size=s).astype("float32") for s in shapes]
    x = inputs if len(inputs) > 1 else inputs[0]
    layer = make()
    before = layer(x)
    config = layer.get_config()
    clone = type(layer).from_config(config)
    assert clone.get_config() == config
    clone(x)
    clone.set_weights(layer.get_weights())
    for a, b in zip(
        keras.tree.flatten(before), keras.tree.flatten(clone(x)), strict=True
    ):
        np.testing.assert_allclose(a, b, atol=1e-6)
    revived = keras.saving.deserialize_keras_object(
        keras.saving.serialize_keras_object(layer)
    )
    assert type(revived) is type(layer)
    assert revived.get_config() == config


def test_layer_argument_errors_name_the_value():
    with pytest.raises(ValueError, match="attention='bogus'"):
        AttributeBranch(4, 2, attention="bogus")
    with pytest.raises(ValueError, match="neck='bn'"):
        AttributeBranch(4, 2, neck="bn")
    with pytest.raises(ValueError, match="width=0"):
        JointModule(width=0)
    with pytest.raises(ValueError, match="F has shape"):
        JointModule()(
            [np.zeros((1, 2, 2, 4), "float32"), np.zeros((1, 2, 2, 3), "float32")]
        )


# ------------------------------------------------------------------------ ANet


@pytest.fixture(scope="module")
def anet():
    return build_anet(**TINY)


@pytest.mark.parametrize("variant", ["baseline", "van", "anet"])
@pytest.mark.parametrize("backbone", list(BACKBONES))
def test_every_variant_and_backbone_builds(variant, backbone):
    model = build_anet(**{**TINY, "variant": variant, "backbone": backbone})
    assert set(model.output) == _expected_keys(variant)
    assert isinstance(model.get_layer("backbone"), keras.Model)
    c = 8 * (32 if backbone.startswith("resnet50") else 8)
    shapes = {k: tuple(v.shape) for k, v in model.output.items()}
    assert shapes["f"] == (None, 16) and shapes["f_logits"] == (None, NUM_IDS)
    if variant != "baseline":
        assert shapes["a_color"] == (None, 8) and shapes["a_type_logits"] == (None, 4)
    if variant == "anet":
        assert shapes["G"] == shapes["G_reid"] == (None, 4, 4, c)
        assert shapes["g"] == (None, c)
        assert shapes["j"] == (None, 12) and shapes["j_logits"] == (None, NUM_IDS)


def test_forward_output_shapes(anet):
    out = anet(_images(2), training=False)
    assert set(out) == _expected_keys("anet")
    assert out["f"].shape == (2, 16)
    assert out["a_color_logits"].shape == (2, 3)
    assert out["a_type_logits"].shape == (2, 4)
    assert out["G_reid"].shape == (2, 4, 4, 64)
    assert out["j_logits"].shape == (2, NUM_IDS)


def test_save_and_reload_keras_gives_identical_outputs(anet, tmp_path):
    path = tmp_path / "anet.keras"
    anet.save(path)
    reloaded = keras.saving.load_model(path)
    x = _images(2, seed=5)
    a, b = anet(x, training=False), reloaded(x, training=False)
    assert set(a) == set(b)
    for key in a:
        np.testing.assert_allclose(a[key], b[key], atol=1e-5, err_msg=key)


def test_frozen_backbone_keeps_batchnorm_statistics(anet):
    backbone = anet.get_layer("backbone")

    def stats():
        return [
            np.array(v) for v in backbone.non_trainable_weights if "moving" in v.path
        ]

    ibn_bn = backbone.get_layer("layer1_0_bn1").batch_norm
    assert any(v is ibn_bn.moving_mean for v in backbone.non_trainable_weights)
    before = stats()
    anet(_images(2, seed=6), training=True)
    changed = stats()
    assert any(not np.allclose(a, b) for a, b in zip(before, changed, strict=True))
    backbone.trainable = False
    try:
        anet(_images(2, seed=7), training=True)
        after = stats()
        for a, b in zip(changed, after, strict=True):
            np.testing.assert_array_equal(a, b)
        assert not ibn_bn.trainable
        joint_bn = anet.get_layer("joint_module").theta_A.bn
        joint_before = np.array(joint_bn.moving_mean)
        anet(_images(2, seed=8), training=True)
        assert not np.allclose(joint_before, joint_bn.moving_mean)
    finally:
        backbone.trainable = True


def test_fc_branch_uses_no_attention_and_feeds_F_to_the_joint_module():
    se = build_anet(**TINY)
    fc = build_anet(**{**TINY, "attribute_branch": "fc"})
    c, hidden = 64, 64 // 16
    se_params = c * hidden + hidden + hidden * c + c
    assert se.count_params() - fc.count_params() == len(ATTRS) * se_params
    x = _images(2, seed=9)
    out = fc(x, training=False)
    F = fc.get_layer("backbone")(x, training=False)
    branch = fc.get_layer("attribute_color")
    expected_a = branch.fc(keras.ops.mean(F, axis=[1, 2]))
    np.testing.assert_allclose(out["a_color"], expected_a, atol=1e-5)
    S = 2 * np.asarray(F)  # sum of A_i = n F
    joint = fc.get_layer("joint_module")
    G = S + np.asarray(joint.theta_A(S, training=False))
    np.testing.assert_allclose(out["G"], G, rtol=1e-4, atol=1e-4)


def test_attribute_bnneck_normalises_what_the_classifier_reads_not_a_i():
    """attribute_neck=bnneck: a_i is served as FC(GAP(A_i)) and the classifier reads
    BN(a_i) (batch statistics in training, moving statistics in inference)."""
    net = build_anet(**{**TINY, "attribute_neck": "bnneck"})
    plain = build_anet(**TINY)
    branch = net.get_layer("attribute_type")
    assert branch.neck == "bnneck" and plain.get_layer("attribute_type").neck == "none"
    # gamma, moving mean and variance of an s_a-d BatchNorm without beta, per branch
    assert net.count_params() - plain.count_params() == len(ATTRS) * 3 * TINY["s_a"]
    x = _images(4, seed=3)
    F = net.get_layer("backbone")(x, training=False)
    A = branch.se(F)
    a = branch.fc(keras.ops.mean(A, axis=[1, 2]))
    W = np.asarray(branch.classifier.kernel)
    bn = branch.bnneck
    bn.moving_mean.assign(np.linspace(-1, 1, TINY["s_a"]).astype("float32"))
    bn.moving_variance.assign(np.linspace(0.5, 2, TINY["s_a"]).astype("float32"))
    out = net(x, training=False)
    np.testing.assert_allclose(out["a_type"], a, rtol=1e-5, atol=1e-5)
    read = (np.asarray(a) - np.asarray(bn.moving_mean)) / np.sqrt(
        np.asarray(bn.moving_variance) + 1e-5
    ) * np.asarray(bn.gamma)
    np.testing.assert_allclose(out["a_type_logits"], read @ W, rtol=1e-4, atol=1e-4)
    # training: the batch's own statistics, so the read-out has zero mean per unit
    F = net.get_layer("backbone")(x, training=True)
    a = np.asarray(branch.fc(keras.ops.mean(branch.se(F), axis=[1, 2])))
    batch = (a - a.mean(0)) / np.sqrt(a.var(0) + 1e-5) * np.asarray(bn.gamma)
    logits = net(x, training=True)["a_type_logits"]
    np.testing.assert_allclose(logits, batch @ W, rtol=1e-3, atol=1e-3)


def test_joint_width_changes_the_parameter_count():
    c = 64
    sizes = {}
    for width in (None, 16):
        model = build_anet(**{**TINY, "joint_width": width})
        w = width or c
        joint = model.get_layer("joint_module")
        expected = (c * c + 4 * c) + (9 * c * w + 4 * w) + (9 * w * c + 4 * c)
        assert joint.count_params() == expected
        assert joint.theta_g2.filters == w
        sizes[width] = model.count_params()
    assert sizes[None] - sizes[16] == 2 * 9 * c * (c - 16) + 4 * (c - 16)


@pytest.mark.parametrize("width, inner", [(0.25, 16), (0.0625, 4), (0.001, 1), (16, 16)])
def test_joint_width_below_one_is_a_fraction_of_the_channels(width, inner):
    """model.joint_module.width 0.25 narrows c = 64 channels to 16 (rounded, at
    least 1); an integer is a number of channels."""
    joint = build_anet(**{**TINY, "joint_width": width}).get_layer("joint_module")
    assert joint.theta_g2.filters == inner
    assert joint.theta_g1.filters == 64


def test_test_feature_selects_and_concatenates(anet):
    out = anet(_images(2), training=False)
    assert select_test_feature(out, "f", ATTRS).shape == (2, 16)
    assert select_test_feature(out, "j", ATTRS).shape == (2, 12)
    fa = select_test_feature(out, "fa", ATTRS)
    assert fa.shape == (2, 16 + 2 * 8)
    np.testing.assert_allclose(fa[:, 16:24], out["a_color"])
    with pytest.raises(ValueError, match="'j' needs variant anet"):
        select_test_feature({"f": out["f"]}, "j", ATTRS)
    with pytest.raises(ValueError, match="feature="):
        select_test_feature(out, "x", ATTRS)


def test_build_model_from_config_maps_every_setting():
    cfg = Config()
    cfg.data = dataclasses.replace(cfg.data, attributes=["color"], image_size=(64, 48))
    cfg.model = dataclasses.replace(
        cfg.model,
        variant="anet",
        backbone="resnet18",
        base_width=4,
        last_stride=2,
        attribute_branch="fc",
        attribute_neck="bnneck",
        s_f=6,
        s_a=5,
        s_j=7,
        joint_module=dataclasses.replace(cfg.model.joint_module, width=3),
    )
    model = build_model_from_config(cfg, num_ids=9, num_classes=[4])
    shapes = {k: tuple(v.shape) for k, v in model.output.items()}
    assert tuple(model.input.shape) == (None, 64, 48, 3)
    assert shapes["G"] == (None, 2, 2, 32)  # last stride 2, c = 8 * 4
    assert shapes["f"] == (None, 6) and shapes["f_logits"] == (None, 9)
    assert shapes["a_color"] == (None, 5) and shapes["a_color_logits"] == (None, 4)
    assert shapes["j"] == (None, 7)
    assert model.get_layer("attribute_color").attention == "fc"
    assert model.get_layer("attribute_color").neck == "bnneck"
    assert model.get_layer("joint_module").theta_g2.filters == 3
    assert not any(isinstance(x, IBN) for x in model.get_layer("backbone").layers)


def test_build_anet_rejects_bad_arguments():
    with pytest.raises(ValueError, match="variant='anett'"):
        build_anet(**{**TINY, "variant": "anett"})
    with pytest.raises(KeyError, match="valid backbones"):
        build_anet(**{**TINY, "backbone": "resnet101"})
    with pytest.raises(ValueError, match="one entry per attribute"):
        build_anet(**{**TINY, "num_classes": [3]})
    with pytest.raises(ValueError, match="needs at least one attribute"):
        build_anet(**{**TINY, "attribute_names": [], "num_classes": []})
    with pytest.raises(ValueError, match="letters, digits"):
        build_anet(**{**TINY, "attribute_names": ["car/color", "type"]})


# --------------------------------------------------------------------- summary


def test_summary_counts_convs_and_dense_analytically(anet):
    text = summarize(anet)
    for part in (
        "backbone",
        "attribute branch 'color'",
        "joint module",
        "f head",
        "j head",
        "total",
        "x the backbone",
    ):
        assert part in text
    joint = anet.get_layer("joint_module")
    h = w = 4
    c = 64
    assert layer_macs(joint) == h * w * (c * c + 9 * c * c + 9 * c * c)
    head = anet.get_layer("f_head")
    assert layer_macs(head) == 64 * 16 + 16 * NUM_IDS
    branch = anet.get_layer("attribute_color")
    assert layer_macs(branch) == (64 * 4 + 4 * 64) + 64 * 8 + 8 * 3
    stem = anet.get_layer("backbone").get_layer("conv1")
    assert layer_macs(stem) == 7 * 7 * 3 * 8 * 32 * 32
    total_line = [line for line in text.splitlines() if line.startswith("total")][0]
    assert f"{anet.count_params():,}" in total_line


def test_summary_from_config_builds_the_model():
    cfg = Config()
    cfg.data = dataclasses.replace(cfg.data, image_size=(64, 64))
    cfg.model = dataclasses.replace(cfg.model, backbone="resnet18", base_width=4)
    text = summarize(cfg, num_ids=7)
    assert "input 64x64x3, F 4x4x32" in text
    assert "ID classifier 7" in text


@pytest.mark.slow
def test_paper_joint_module_costs_more_than_the_backbone():
    from anet_tf.config import load_config

    text = summarize(load_config("paper_base.yaml"))
    line = [x for x in text.splitlines() if x.startswith("Joint Module 3x3")][0]
    ratio = float(line.split(" x the backbone")[0].split("= ")[-1])
    assert ratio > 1.0
