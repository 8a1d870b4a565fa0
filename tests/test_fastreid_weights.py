"""FastReID checkpoints: detection, strict key handling, conversion and loading.

PyTorch is optional. Without it, the conversion is checked against a NumPy forward
pass with PyTorch semantics of FastReID's ResNet (IBN-a, max-pool in ceil mode,
non-local blocks); with it, against an independent PyTorch module in FastReID's layout
saved as FastReID saves its checkpoints (``{"model": state_dict, ...}``).
"""

import math
from types import SimpleNamespace

import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view
from resnet_reference import REPEATS
from resnet_reference import RandomStateDict
from resnet_reference import assert_close
from resnet_reference import np_bn
from resnet_reference import np_conv
from resnet_reference import np_stages
from resnet_reference import relu

from anet_tf.model.backbone import NonLocal
from anet_tf.model.backbone import build_backbone
from anet_tf.model.backbone import non_local_positions
from anet_tf.model.weights import WeightsError
from anet_tf.model.weights import convert_fastreid_checkpoint
from anet_tf.model.weights import convert_ibn_checkpoint
from anet_tf.model.weights import detect_checkpoint_format
from anet_tf.model.weights import load_backbone_weights
from anet_tf.model.weights import load_keras_resnet50_imagenet
from anet_tf.model.weights import read_state_dict

ARCH = {
    (50, True): "resnet50_ibn_a",
    (18, True): "resnet18_ibn_a",
    (18, False): "resnet18",
}

# ------------------------------------------------- FastReID's checkpoint layout


def make_fastreid_state_dict(
    depth, base, ibn=True, non_local=True, inter="half", heads=True, seed=0
):
    """Random weights in the key layout of FastReID's Baseline (backbone + heads).

    ``inter``: "half" (C // 2) or an int (FastReID's current code: 1).
    """
    weights = RandomStateDict(seed)
    conv, bn, sd = weights.conv, weights.bn, weights.sd
    b = "backbone"
    inplanes = weights.resnet(depth, base, ibn, prefix=f"{b}.")
    if non_local:
        for stage, after in non_local_positions(REPEATS[depth]).items():
            c = base * 2 ** (stage - 1) * (4 if depth == 50 else 1)
            k = c // 2 if inter == "half" else inter
            for j in range(len(after)):
                p = f"{b}.NL_{stage}.{j}"
                # The block is cubic in x: small weights keep five of them in a
                # row finite, a gamma away from 0 makes each one count.
                for name in ("g", "theta", "phi"):
                    conv(f"{p}.{name}", k, c, 1, bias=True, gain=0.5)
                conv(f"{p}.W.0", c, k, 1, bias=True, gain=0.5)
                bn(f"{p}.W.1", c, scale=0.2)
    if heads:
        sd["heads.pool_layer.p"] = np.array([3.2], np.float32)
        bn("heads.bottleneck.0", inplanes)
        sd["heads.weight"] = weights.rng.normal(0, 0.01, (7, inplanes)).astype("float32")
    return sd


# ------------------------------------------------ NumPy forward, torch semantics


def np_maxpool_ceil(x):
    _, h, w, _ = x.shape
    oh, ow = math.ceil((h - 3) / 2) + 1, math.ceil((w - 3) / 2) + 1
    ph, pw = (oh - 1) * 2 + 3 - h, (ow - 1) * 2 + 3 - w
    x = np.pad(x, ((0, 0), (0, ph), (0, pw), (0, 0)), constant_values=-np.inf)
    return sliding_window_view(x, (3, 3), axis=(1, 2))[:, ::2, ::2].max(axis=(-2, -1))


def np_non_local(x, sd, p):
    b, h, w, _ = x.shape

    def proj(name):
        y = np_conv(x, sd[f"{p}.{name}.weight"], bias=sd[f"{p}.{name}.bias"])
        return y.reshape(b, h * w, -1)

    theta, phi, g = proj("theta"), proj("phi"), proj("g")
    y = (theta @ phi.transpose(0, 2, 1) / (h * w)) @ g
    y = np_conv(y.reshape(b, h, w, -1), sd[f"{p}.W.0.weight"], bias=sd[f"{p}.W.0.bias"])
    return np_bn(y, sd, f"{p}.W.1") + x


def np_fastreid_resnet(x, sd, depth, last_stride=1):
    """FastReID's ResNet forward on a ``backbone.*`` state dict."""
    sd = {
        k[len("backbone.") :]: v.astype(np.float64)
        for k, v in sd.items()
        if k.startswith("backbone.")
    }
    x = relu(np_bn(np_conv(x, sd["conv1.weight"], 2, 3), sd, "bn1"))
    x = np_maxpool_ceil(x)
    positions = non_local_positions(REPEATS[depth]) if "NL_2.0.g.weight" in sd else {}

    def non_local(x, stage, i):
        after = positions.get(stage, ())
        return np_non_local(x, sd, f"NL_{stage}.{after.index(i)}") if i in after else x

    return np_stages(x, sd, depth, last_stride, after_block=non_local)


def _images(h, w, n=2, seed=0):
    return np.random.default_rng(seed).normal(size=(n, h, w, 3)).astype("float32")


# ------------------------------------------------------------ detection, keys


def test_checkpoint_format_is_detected():
    fastreid = make_fastreid_state_dict(18, base=4)
    assert detect_checkpoint_format(fastreid) == "fastreid"
    ibn = {k[len("backbone.") :]: v for k, v in fastreid.items() if "NL_" not in k}
    ibn = {k: v for k, v in ibn.items() if not k.startswith("heads.")}
    assert detect_checkpoint_format(ibn) == "ibn"
    # FastReID's checkpoint wrapper, and DataParallel's prefix, are removed first.
    wrapped = {
        "model": {f"module.{k}": v for k, v in fastreid.items()},
        "iteration": 1000,
    }
    assert detect_checkpoint_format(read_state_dict(wrapped)) == "fastreid"
    with pytest.raises(WeightsError, match="neither .* First keys: fc.weight"):
        detect_checkpoint_format({"fc.weight": np.zeros((2, 2))})


def test_unknown_keys_are_refused_by_name(tmp_path):
    out = str(tmp_path / "x.weights.h5")
    sd = make_fastreid_state_dict(18, base=4)
    sd["heads.classifier.bias"] = np.zeros(7, np.float32)
    sd["heads.extra_bn.weight"] = np.zeros(64, np.float32)
    sd["b1.0.weight"] = np.zeros(3, np.float32)  # e.g. an MGN branch
    with pytest.raises(WeightsError) as err:
        convert_fastreid_checkpoint(sd, out, "resnet18_ibn_a")
    assert (
        "unknown keys in the FastReID checkpoint (3), neither backbone.* nor the GeM "
        "p, BNNeck or classifier of heads.*: b1.0.weight, heads.classifier.bias, "
        "heads.extra_bn.weight"
    ) in str(err.value)
    # Backbone keys that fit no layer are listed with their full name.
    sd = make_fastreid_state_dict(18, base=4)
    sd["backbone.NL_4.0.g.weight"] = np.zeros((16, 32, 1, 1), np.float32)
    del sd["backbone.NL_2.1.W.1.running_var"]
    with pytest.raises(WeightsError) as err:
        convert_ibn_checkpoint(sd, out, "resnet18_ibn_a")
    assert "missing keys (1): backbone.NL_2.1.W.1.running_var" in str(err.value)
    assert "unused keys (1): backbone.NL_4.0.g.weight" in str(err.value)


def test_wrong_arch_hints_at_the_checkpoint_arch(tmp_path):
    sd = make_fastreid_state_dict(18, base=4)
    with pytest.raises(WeightsError, match="looks like resnet18_ibn_a"):
        convert_fastreid_checkpoint(sd, str(tmp_path / "x.weights.h5"))
    with pytest.raises(ValueError, match="FastReID's plain ResNet-50"):
        convert_fastreid_checkpoint(sd, str(tmp_path / "x.weights.h5"), "resnet50")
    with pytest.raises(WeightsError, match="not a FastReID checkpoint"):
        convert_fastreid_checkpoint(
            {"conv1.weight": np.zeros((4, 3, 7, 7))}, str(tmp_path / "x.weights.h5")
        )


def test_pixel_normalisation_must_be_imagenet(tmp_path):
    out = str(tmp_path / "x.weights.h5")
    sd = make_fastreid_state_dict(18, base=4, heads=False)
    sd["pixel_mean"] = np.array([123.675, 116.28, 103.53], np.float32).reshape(
        1, 3, 1, 1
    )
    sd["pixel_std"] = np.array([58.395, 57.12, 57.375], np.float32).reshape(1, 3, 1, 1)
    result = convert_fastreid_checkpoint(sd, out, "resnet18_ibn_a")
    assert result.heads == {} and result.heads_path is None
    sd["pixel_std"] = np.ones((1, 3, 1, 1), np.float32)
    with pytest.raises(WeightsError, match="pixel_std"):
        convert_fastreid_checkpoint(sd, out, "resnet18_ibn_a")


def test_non_local_inner_width_is_read_from_the_checkpoint(tmp_path):
    out = str(tmp_path / "x.weights.h5")
    half = convert_fastreid_checkpoint(
        make_fastreid_state_dict(18, base=4), out, "resnet18_ibn_a"
    )
    assert half.non_local and half.non_local_inter is None
    one = convert_fastreid_checkpoint(
        make_fastreid_state_dict(18, base=4, inter=1), out, "resnet18_ibn_a"
    )
    assert one.non_local_inter == 1
    assert one.backbone.get_layer("nl3_1").g.kernel.shape == (1, 1, 16, 1)
    plain = convert_fastreid_checkpoint(
        make_fastreid_state_dict(18, base=4, non_local=False), out, "resnet18_ibn_a"
    )
    assert not plain.non_local
    assert not any(isinstance(la, NonLocal) for la in plain.backbone.layers)
    sd = make_fastreid_state_dict(18, base=4, inter=2)
    for suffix in ("g", "theta", "phi"):
        sd[f"backbone.NL_3.1.{suffix}.weight"] = np.zeros((3, 16, 1, 1), np.float32)
    with pytest.raises(WeightsError, match="differ in inner channels"):
        convert_fastreid_checkpoint(sd, out, "resnet18_ibn_a")


# ---------------------------------------------------------------- conversion


@pytest.mark.parametrize(
    "depth, base, inter", [(18, 8, "half"), (50, 4, 1), (50, 4, "half")]
)
def test_fastreid_conversion_matches_numpy_forward(depth, base, inter, tmp_path):
    sd = make_fastreid_state_dict(depth, base, inter=inter)
    arch = ARCH[(depth, True)]
    out = tmp_path / "fastreid.weights.h5"
    result = convert_fastreid_checkpoint(sd, str(out), arch)
    backbone = result.backbone
    for h, w in ((64, 64), (67, 45)):
        x = _images(h, w)
        expected = np_fastreid_resnet(x.astype(np.float64), sd, depth)
        assert_close(backbone(x, training=False), expected)
    # Every backbone weight came from the checkpoint.
    used = sum(
        v.size
        for k, v in sd.items()
        if k.startswith("backbone.") and not k.endswith("num_batches_tracked")
    )
    assert backbone.count_params() == used
    # The saved file reloads into the backbone the result describes (any stride).
    fresh = build_backbone(arch, last_stride=2, **result.backbone_kwargs)
    load_backbone_weights(fresh, str(out), arch)
    for a, b in zip(backbone.weights, fresh.weights, strict=True):
        np.testing.assert_array_equal(a, b)


def test_heads_are_exposed_in_keras_layouts(tmp_path):
    sd = make_fastreid_state_dict(18, base=4)
    out = str(tmp_path / "sbs.weights.h5")
    result = convert_fastreid_checkpoint(sd, out, "resnet18_ibn_a")
    assert result.heads_path == str(tmp_path / "sbs.heads.npz")
    with np.load(result.heads_path) as saved:
        assert sorted(saved.files) == sorted(result.heads)
        for name in saved.files:
            np.testing.assert_array_equal(saved[name], result.heads[name])
    heads = result.heads
    assert sorted(heads) == [
        "bnneck_beta",
        "bnneck_gamma",
        "bnneck_moving_mean",
        "bnneck_moving_variance",
        "classifier_kernel",
        "gem_p",
    ]
    np.testing.assert_allclose(heads["gem_p"], [3.2])
    np.testing.assert_array_equal(
        heads["bnneck_gamma"], sd["heads.bottleneck.0.weight"]
    )
    np.testing.assert_array_equal(
        heads["bnneck_moving_variance"], sd["heads.bottleneck.0.running_var"]
    )
    np.testing.assert_array_equal(heads["classifier_kernel"], sd["heads.weight"].T)
    # EMBEDDING_DIM > 0: bottleneck.0 is a 1x1 convolution, the BNNeck moves to 1.
    sd = make_fastreid_state_dict(18, base=4, heads=False)
    sd["heads.bottleneck.0.weight"] = np.ones((6, 32, 1, 1), np.float32)
    for k, v in (("weight", 1.0), ("bias", 0.0), ("running_mean", 0.0)):
        sd[f"heads.bottleneck.1.{k}"] = np.full(6, v, np.float32)
    sd["heads.bottleneck.1.running_var"] = np.full(6, 2.0, np.float32)
    sd["heads.bottleneck.1.num_batches_tracked"] = np.array(5)
    heads = convert_fastreid_checkpoint(sd, out, "resnet18_ibn_a").heads
    assert heads["embedding_kernel"].shape == (32, 6)
    np.testing.assert_array_equal(heads["bnneck_moving_variance"], 2.0)


def test_weights_convert_command_takes_fastreid_checkpoints(tmp_path, capsys):
    from anet_tf.commands.data import cmd_weights_convert

    sd = make_fastreid_state_dict(18, base=4)
    np.savez(tmp_path / "model_final.npz", **sd)
    out = tmp_path / "converted.weights.h5"
    args = SimpleNamespace(
        file=str(tmp_path / "model_final.npz"), out=str(out), arch="resnet18_ibn_a"
    )
    assert cmd_weights_convert(args) == 0
    assert out.exists() and (tmp_path / "converted.heads.npz").exists()
    printed = capsys.readouterr().out
    assert "converted FastReID checkpoint" in printed
    # It says how to build a backbone the file loads into.
    assert "--set model.stem=fastreid --set model.non_local=true --set model.non_local_inter=" in printed


# ------------------------------------------------------------------- loading


def test_non_local_backbone_loads_weights_without_non_local_blocks(tmp_path):
    """ImageNet (IBN-Net) weights into a backbone with non-local blocks: these keep
    their identity initialisation, as FastReID starts them."""
    plain_file = str(tmp_path / "imagenet.weights.h5")
    plain = build_backbone("resnet18_ibn_a", base_width=4)
    rng = np.random.default_rng(0)
    plain.set_weights([w + rng.uniform(0.1, 0.2, w.shape) for w in plain.get_weights()])
    plain.save_weights(plain_file)
    nl = build_backbone("resnet18_ibn_a", base_width=4, non_local=True)
    load_backbone_weights(nl, plain_file, "resnet18_ibn_a")
    for layer in plain.layers:
        for a, b in zip(layer.weights, nl.get_layer(layer.name).weights, strict=True):
            np.testing.assert_array_equal(a, b)
    x = _images(32, 32)
    np.testing.assert_array_equal(nl(x, training=False), plain(x, training=False))


def test_keras_resnet50_imagenet_weights_load_with_non_local_blocks(tmp_path):
    import keras

    reference = keras.applications.ResNet50(
        weights=None, include_top=False, input_shape=(None, None, 3)
    )
    path = str(tmp_path / "resnet50.weights.h5")
    reference.save_weights(path)
    ours = build_backbone("resnet50", non_local=True, non_local_inter=1)
    load_keras_resnet50_imagenet(ours, path)
    bias = reference.get_layer("conv5_block3_3_conv").bias.numpy()
    np.testing.assert_allclose(
        ours.get_layer("layer4_2_bn3").moving_mean,
        reference.get_layer("conv5_block3_3_bn").moving_mean.numpy() - bias,
        rtol=1e-6,
    )
    for name in ("nl2_0", "nl3_2"):
        np.testing.assert_array_equal(ours.get_layer(name).W_1.gamma, 0.0)


def test_non_local_mismatches_are_refused(tmp_path):
    nl_file = str(tmp_path / "nl.weights.h5")
    convert_fastreid_checkpoint(
        make_fastreid_state_dict(18, base=4, inter=1), nl_file, "resnet18_ibn_a"
    )
    plain = build_backbone("resnet18_ibn_a", base_width=4)
    with pytest.raises(WeightsError, match="has 4 non-local blocks, the backbone 0"):
        load_backbone_weights(plain, nl_file, "resnet18_ibn_a")
    half = build_backbone("resnet18_ibn_a", base_width=4, non_local=True)
    with pytest.raises(WeightsError, match="non_local_inter=1"):
        load_backbone_weights(half, nl_file, "resnet18_ibn_a")
    one = build_backbone(
        "resnet18_ibn_a", base_width=4, non_local=True, non_local_inter=1
    )
    load_backbone_weights(one, nl_file, "resnet18_ibn_a")


# --------------------------------------------------------- reference: PyTorch


def _torch_fastreid_model(depth, base, inter, num_classes=5):
    """FastReID's Baseline (IBN-a ResNet, ceil-mode stem, non-local blocks, GeM +
    BNNeck head), written here from its description, width-scaled."""
    import torch
    from torch import nn

    class IBN(nn.Module):
        def __init__(self, planes):
            super().__init__()
            self.half = int(planes / 2)
            self.IN = nn.InstanceNorm2d(self.half, affine=True)
            self.BN = nn.BatchNorm2d(planes - self.half)

        def forward(self, x):
            a, b = torch.split(x, [self.half, x.shape[1] - self.half], 1)
            return torch.cat((self.IN(a.contiguous()), self.BN(b.contiguous())), 1)

    class NonLocal(nn.Module):
        def __init__(self, c):
            super().__init__()
            self.inter = c // 2 if inter == "half" else inter
            self.g = nn.Conv2d(c, self.inter, 1)
            self.theta = nn.Conv2d(c, self.inter, 1)
            self.phi = nn.Conv2d(c, self.inter, 1)
            self.W = nn.Sequential(nn.Conv2d(self.inter, c, 1), nn.BatchNorm2d(c))

        def forward(self, x):
            b, _, h, w = x.shape
            g = self.g(x).flatten(2).transpose(1, 2)  # B, N, inter
            theta = self.theta(x).flatten(2).transpose(1, 2)
            phi = self.phi(x).flatten(2)  # B, inter, N
            f = torch.matmul(theta, phi) / (h * w)
            y = torch.matmul(f, g).transpose(1, 2).reshape(b, self.inter, h, w)
            return self.W(y) + x

    class Basic(nn.Module):
        expansion = 1

        def __init__(self, inplanes, planes, ibn, stride, downsample):
            super().__init__()
            self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
            self.bn1 = IBN(planes) if ibn else nn.BatchNorm2d(planes)
            self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(planes)
            self.relu = nn.ReLU()
            self.downsample = downsample

        def forward(self, x):
            out = self.relu(self.bn1(self.conv1(x)))
            out = self.bn2(self.conv2(out))
            identity = x if self.downsample is None else self.downsample(x)
            return self.relu(out + identity)

    class Bottleneck(nn.Module):
        expansion = 4

        def __init__(self, inplanes, planes, ibn, stride, downsample):
            super().__init__()
            self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
            self.bn1 = IBN(planes) if ibn else nn.BatchNorm2d(planes)
            self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(planes)
            self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
            self.bn3 = nn.BatchNorm2d(planes * 4)
            self.relu = nn.ReLU()
            self.downsample = downsample

        def forward(self, x):
            out = self.relu(self.bn1(self.conv1(x)))
            out = self.relu(self.bn2(self.conv2(out)))
            out = self.bn3(self.conv3(out))
            identity = x if self.downsample is None else self.downsample(x)
            return self.relu(out + identity)

    block = Bottleneck if depth == 50 else Basic
    repeats = REPEATS[depth]
    nl_counts = {k: len(v) for k, v in non_local_positions(repeats).items()}

    class ResNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.inplanes = base
            self.conv1 = nn.Conv2d(3, base, 7, 2, 3, bias=False)
            self.bn1 = nn.BatchNorm2d(base)
            self.relu = nn.ReLU()
            self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True)
            for s, n in enumerate(repeats, start=1):
                stride = (1, 2, 2, 1)[s - 1]
                layer = self._make_layer(base * 2 ** (s - 1), n, stride, s < 4)
                setattr(self, f"layer{s}", layer)
            # FastReID's rule: NL_k follows blocks sorted(n_k - (i + 1)).
            self.nl_idx = {}
            for s, m in nl_counts.items():
                c = base * 2 ** (s - 1) * block.expansion
                setattr(self, f"NL_{s}", nn.ModuleList(NonLocal(c) for _ in range(m)))
                self.nl_idx[s] = sorted(repeats[s - 1] - (i + 1) for i in range(m))

        def _make_layer(self, planes, n, stride, ibn):
            downsample = None
            if stride != 1 or self.inplanes != planes * block.expansion:
                downsample = nn.Sequential(
                    nn.Conv2d(
                        self.inplanes, planes * block.expansion, 1, stride, bias=False
                    ),
                    nn.BatchNorm2d(planes * block.expansion),
                )
            layers = [block(self.inplanes, planes, ibn, stride, downsample)]
            self.inplanes = planes * block.expansion
            layers += [block(self.inplanes, planes, ibn, 1, None) for _ in range(1, n)]
            return nn.Sequential(*layers)

        def forward(self, x):
            x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
            for s in range(1, 5):
                counter = 0
                for i, blk in enumerate(getattr(self, f"layer{s}")):
                    x = blk(x)
                    if i in self.nl_idx.get(s, ()):
                        x = getattr(self, f"NL_{s}")[counter](x)
                        counter += 1
            return x

    class Heads(nn.Module):
        def __init__(self, c):
            super().__init__()
            self.pool_layer = nn.Module()
            self.pool_layer.p = nn.Parameter(torch.ones(1) * 3.0)
            self.bottleneck = nn.Sequential(nn.BatchNorm2d(c))
            self.weight = nn.Parameter(torch.randn(num_classes, c) * 0.01)

    class Baseline(nn.Module):
        def __init__(self):
            super().__init__()
            self.backbone = ResNet()
            self.heads = Heads(self.backbone.inplanes)

    model = Baseline()
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            # Non-local blocks are cubic in x: smaller weights (as in
            # make_fastreid_state_dict) keep them finite.
            small = ".NL_" in name
            if name.endswith("num_batches_tracked"):
                continue
            if name.endswith("running_var"):
                tensor.copy_(torch.rand(tensor.shape, generator=gen) + 0.5)
            elif name.endswith(".weight") and tensor.ndim == 1:
                scale = 0.2 if small else 1.0
                tensor.copy_(scale * (torch.rand(tensor.shape, generator=gen) + 0.5))
            elif name.endswith(("running_mean", ".bias")):
                tensor.copy_(torch.randn(tensor.shape, generator=gen) * 0.1)
            elif tensor.ndim == 4:
                gain = 0.5 if small else 2.0
                fan_in = tensor.shape[1] * tensor.shape[2] * tensor.shape[3]
                std = (gain / fan_in) ** 0.5
                tensor.copy_(torch.randn(tensor.shape, generator=gen) * std)
    return model.eval()


@pytest.mark.parametrize(
    "depth, base, inter", [(18, 8, "half"), (50, 4, 1)], ids=["r18-half", "r50-one"]
)
def test_matches_pytorch_fastreid(depth, base, inter, tmp_path):
    torch = pytest.importorskip("torch")
    model = _torch_fastreid_model(depth, base, inter)
    sd = model.state_dict()
    assert any(k.startswith("backbone.NL_3.") for k in sd)
    path = tmp_path / "model_final.pth"
    torch.save({"model": sd, "iteration": 1000, "scheduler": {}}, path)
    arch = ARCH[(depth, True)]
    out = tmp_path / "fastreid.weights.h5"
    backbone = convert_ibn_checkpoint(str(path), str(out), arch)
    heads = np.load(tmp_path / "fastreid.heads.npz")
    np.testing.assert_allclose(heads["gem_p"], [3.0])
    np.testing.assert_array_equal(
        heads["classifier_kernel"], model.heads.weight.detach().numpy().T
    )
    for h, w in ((64, 64), (67, 45)):
        x = _images(h, w, seed=h)
        with torch.no_grad():
            expected = model.backbone(torch.from_numpy(x).permute(0, 3, 1, 2))
        expected = expected.permute(0, 2, 3, 1).numpy()
        assert_close(backbone(x, training=False), expected)
