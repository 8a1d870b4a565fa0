"""Pretrained weights: IBN-Net checkpoint conversion and Keras' ResNet-50 loading.

PyTorch is optional. The conversion is checked against an independent NumPy forward
pass with PyTorch semantics (OIHW kernels, symmetric padding, IN/BN channel split)
written from the IBN-Net code, and, where torch is installed, against that code itself.
"""


import keras
import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view
from resnet_reference import REPEATS
from resnet_reference import RandomStateDict
from resnet_reference import assert_close
from resnet_reference import np_bn
from resnet_reference import np_conv
from resnet_reference import np_norm1
from resnet_reference import np_stages
from resnet_reference import relu

from anet_tf.model import build_anet
from anet_tf.model import build_backbone
from anet_tf.model import convert_ibn_checkpoint
from anet_tf.model import load_keras_resnet50_imagenet
from anet_tf.model.weights import WeightsError
from anet_tf.model.weights import read_state_dict

# ---------------------------------------------- the IBN-Net checkpoint layout


def make_state_dict(depth, base, ibn=True, seed=0):
    """Random weights in the key layout of IBN-Net's resnet{18,50}_ibn_a."""
    weights = RandomStateDict(seed)
    inplanes = weights.resnet(depth, base, ibn)
    sd = weights.sd
    sd["fc.weight"] = weights.rng.normal(size=(10, inplanes)).astype("float32")
    sd["fc.bias"] = np.zeros(10, np.float32)
    return sd


# ------------------------------------------------ NumPy forward, torch semantics


def np_maxpool(x):
    x = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), constant_values=-np.inf)
    return sliding_window_view(x, (3, 3), axis=(1, 2))[:, ::2, ::2].max(axis=(-2, -1))


def np_resnet_ibn(x, sd, depth, last_stride=1):
    sd = {k: v.astype(np.float64) for k, v in sd.items()}
    x = np_maxpool(relu(np_bn(np_conv(x, sd["conv1.weight"], 2, 3), sd, "bn1")))
    return np_stages(x, sd, depth, last_stride)


def _images(n=2, size=64, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, size, size, 3)).astype("float32")


# ------------------------------------------------------------------- tests


@pytest.mark.parametrize(
    "arch, depth, ibn",
    [
        ("resnet50_ibn_a", 50, True),
        ("resnet18_ibn_a", 18, True),
        ("resnet18", 18, False),
    ],
)
def test_convert_uses_every_key_and_matches_numpy_forward(arch, depth, ibn, tmp_path):
    sd = make_state_dict(depth, base=4, ibn=ibn)
    out = tmp_path / f"{arch}.weights.h5"
    backbone = convert_ibn_checkpoint(sd, str(out), arch=arch)
    x = _images()
    expected = np_resnet_ibn(x.astype(np.float64), sd, depth)
    assert_close(backbone(x, training=False), expected)
    # Every weight of the backbone came from the checkpoint: the number of
    # converted values equals the number of checkpoint values (minus fc, counters).
    used = sum(
        v.size
        for k, v in sd.items()
        if not k.startswith("fc.") and not k.endswith("num_batches_tracked")
    )
    assert backbone.count_params() == used
    # The saved file reloads into a fresh backbone (any last stride).
    fresh = build_backbone(arch, base_width=4, last_stride=2)
    fresh.load_weights(str(out))
    for a, b in zip(backbone.weights, fresh.weights, strict=True):
        np.testing.assert_array_equal(a, b)


def test_conv_kernels_are_transposed_oihw_to_hwio(tmp_path):
    sd = make_state_dict(18, base=4)
    backbone = convert_ibn_checkpoint(
        sd, str(tmp_path / "r18.weights.h5"), "resnet18_ibn_a"
    )
    torch_w = sd["layer2.0.conv1.weight"]  # O=8, I=4, 3x3
    kernel = np.asarray(backbone.get_layer("layer2_0_conv1").kernel)
    assert kernel.shape == (3, 3, 4, 8)
    assert kernel[1, 2, 3, 5] == torch_w[5, 3, 1, 2]
    ibn = backbone.get_layer("layer1_0_bn1")
    np.testing.assert_array_equal(ibn.instance_norm.gamma, sd["layer1.0.bn1.IN.weight"])
    np.testing.assert_array_equal(
        ibn.batch_norm.moving_variance, sd["layer1.0.bn1.BN.running_var"]
    )


def test_single_block_in_bn_split_matches_numpy(tmp_path):
    """One IBN-a basic block in isolation: conv -> IBN -> ReLU -> conv -> BN."""
    sd = make_state_dict(18, base=4, seed=3)
    backbone = convert_ibn_checkpoint(
        sd, str(tmp_path / "b.weights.h5"), "resnet18_ibn_a"
    )
    block = keras.Model(
        backbone.get_layer("layer1_0_conv1").input,
        backbone.get_layer("layer1_0_bn2").output,
    )
    x = np.random.default_rng(1).normal(size=(2, 8, 8, 4)).astype("float32")
    p = "layer1.0"
    sd64 = {k: v.astype(np.float64) for k, v in sd.items()}
    y = np.maximum(
        np_norm1(np_conv(x, sd64[f"{p}.conv1.weight"], 1, 1), sd64, f"{p}.bn1"), 0
    )
    y = np_bn(np_conv(y, sd64[f"{p}.conv2.weight"], 1, 1), sd64, f"{p}.bn2")
    assert_close(block(x, training=False), y)


def test_missing_unused_and_mis_shaped_keys_are_listed(tmp_path):
    out = str(tmp_path / "x.weights.h5")
    sd = make_state_dict(18, base=4)
    del sd["layer3.1.bn1.IN.bias"]
    sd["layer5.0.conv1.weight"] = np.zeros((1, 1, 1, 1), np.float32)
    with pytest.raises(WeightsError) as err:
        convert_ibn_checkpoint(sd, out, "resnet18_ibn_a")
    assert "missing keys (1): layer3.1.bn1.IN.bias" in str(err.value)
    assert "unused keys (1): layer5.0.conv1.weight" in str(err.value)

    sd = make_state_dict(18, base=4)
    sd["layer2.1.conv2.weight"] = sd["layer2.1.conv2.weight"][:, :, :1, :1]
    with pytest.raises(WeightsError, match="layer2.1.conv2.weight"):
        convert_ibn_checkpoint(sd, out, "resnet18_ibn_a")

    with pytest.raises(WeightsError, match="missing keys"):
        convert_ibn_checkpoint(make_state_dict(18, 4, ibn=False), out, "resnet18_ibn_a")
    with pytest.raises(ValueError, match="weights.h5"):
        convert_ibn_checkpoint(sd, str(tmp_path / "x.h5"), "resnet18_ibn_a")
    with pytest.raises(ValueError, match="load_keras_resnet50_imagenet"):
        convert_ibn_checkpoint(sd, out, "resnet50")


def test_read_state_dict_unwraps_dataparallel_and_npz(tmp_path):
    sd = make_state_dict(18, base=4)
    wrapped = {"state_dict": {f"module.{k}": v for k, v in sd.items()}, "epoch": 100}
    unwrapped = read_state_dict(wrapped)
    assert set(unwrapped) == set(sd)
    np.savez(tmp_path / "ckpt.npz", **sd)
    from_npz = read_state_dict(str(tmp_path / "ckpt.npz"))
    np.testing.assert_array_equal(from_npz["conv1.weight"], sd["conv1.weight"])


def test_pth_without_torch_says_how_to_install(tmp_path):
    try:
        import torch  # noqa: F401

        pytest.skip("torch is installed")
    except ImportError:
        pass
    path = tmp_path / "resnet50_ibn_a.pth"
    path.write_bytes(b"")
    with pytest.raises(ImportError, match="torch"):
        read_state_dict(str(path))


def test_build_anet_loads_converted_backbone(tmp_path):
    sd = make_state_dict(18, base=8)
    out = str(tmp_path / "r18.weights.h5")
    convert_ibn_checkpoint(sd, out, "resnet18_ibn_a")
    model = build_anet(
        num_ids=3,
        attribute_names=["color"],
        num_classes=[2],
        backbone="resnet18_ibn_a",
        base_width=8,
        image_size=(64, 64),
        s_f=8,
        s_a=4,
        s_j=8,
        pretrained=out,
    )
    kernel = model.get_layer("backbone").get_layer("conv1").kernel
    np.testing.assert_array_equal(
        kernel, np.transpose(sd["conv1.weight"], (2, 3, 1, 0))
    )
    # Every backbone weight is the converted one (the loader silences a Keras warning
    # claiming some layers keep fresh weights: this shows none does).
    from anet_tf.model.backbone import build_backbone
    from anet_tf.model.weights import assign_torch_state_dict

    reference = build_backbone("resnet18_ibn_a", base_width=8, input_shape=(64, 64, 3))
    assign_torch_state_dict(reference, sd)
    loaded, expected = model.get_layer("backbone").weights, reference.weights
    assert [w.path for w in loaded] == [w.path for w in expected] and len(expected) > 50
    for got, want in zip(loaded, expected, strict=True):
        np.testing.assert_array_equal(got.numpy(), want.numpy(), err_msg=want.path)
    with pytest.raises(WeightsError, match="does not fit"):
        build_anet(
            num_ids=3,
            attribute_names=["color"],
            num_classes=[2],
            backbone="resnet18_ibn_a",
            base_width=16,
            image_size=(64, 64),
            pretrained=out,
        )
    with pytest.raises(FileNotFoundError, match="model.pretrained"):
        build_anet(
            num_ids=3,
            attribute_names=["color"],
            num_classes=[2],
            backbone="resnet18_ibn_a",
            base_width=8,
            image_size=(64, 64),
            pretrained=str(tmp_path / "nope.weights.h5"),
        )


# --------------------------------------------------------- reference: PyTorch


def _torch_resnet_ibn_a(depth, base):
    """The official IBN-Net resnet{18,50}_ibn_a (XingangPan/IBN-Net), width-scaled."""
    import torch
    from torch import nn

    class IBN(nn.Module):
        def __init__(self, planes):
            super().__init__()
            self.half = int(planes * 0.5)
            self.IN = nn.InstanceNorm2d(self.half, affine=True)
            self.BN = nn.BatchNorm2d(planes - self.half)

        def forward(self, x):
            split = torch.split(x, self.half, 1)
            return torch.cat(
                (self.IN(split[0].contiguous()), self.BN(split[1].contiguous())), 1
            )

    class Bottleneck(nn.Module):
        expansion = 4

        def __init__(self, inplanes, planes, ibn, stride=1, downsample=None):
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
            residual = x if self.downsample is None else self.downsample(x)
            return self.relu(out + residual)

    class Basic(nn.Module):
        expansion = 1

        def __init__(self, inplanes, planes, ibn, stride=1, downsample=None):
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
            residual = x if self.downsample is None else self.downsample(x)
            return self.relu(out + residual)

    block = Bottleneck if depth == 50 else Basic

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.inplanes = base
            self.conv1 = nn.Conv2d(3, base, 7, 2, 3, bias=False)
            self.bn1 = nn.BatchNorm2d(base)
            self.relu = nn.ReLU()
            self.maxpool = nn.MaxPool2d(3, 2, 1)
            strides = (1, 2, 2, 1)
            for s, n in enumerate(REPEATS[depth], start=1):
                setattr(
                    self,
                    f"layer{s}",
                    self._make_layer(base * 2 ** (s - 1), n, strides[s - 1], s < 4),
                )
            self.fc = nn.Linear(self.inplanes, 10)

        def _make_layer(self, planes, blocks, stride, ibn):
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
            layers += [block(self.inplanes, planes, ibn) for _ in range(1, blocks)]
            return nn.Sequential(*layers)

        def forward(self, x):
            x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
            return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    return Net()


@pytest.mark.parametrize(
    "arch, depth", [("resnet50_ibn_a", 50), ("resnet18_ibn_a", 18)]
)
def test_matches_pytorch_ibn_net(arch, depth, tmp_path):
    torch = pytest.importorskip("torch")
    net = _torch_resnet_ibn_a(depth, base=4).eval()
    sd = make_state_dict(depth, base=4)
    assert set(net.state_dict()) == set(sd)
    net.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in sd.items()})
    path = tmp_path / f"{arch}.pth"
    torch.save(net.state_dict(), path)
    backbone = convert_ibn_checkpoint(str(path), str(tmp_path / "x.weights.h5"), arch)
    x = _images()
    with torch.no_grad():
        expected = (
            net(torch.from_numpy(x).permute(0, 3, 1, 2)).permute(0, 2, 3, 1).numpy()
        )
    assert_close(backbone(x, training=False), expected)


# ------------------------------------------------------ Keras' ImageNet ResNet-50


@pytest.fixture(scope="module")
def keras_resnet50_files(tmp_path_factory):
    """keras.applications.ResNet50 with random weights (non-zero conv biases and BN
    statistics), saved in the new and the legacy (release) .h5 formats."""
    import h5py
    from keras.src.legacy.saving import legacy_h5_format

    reference = keras.applications.ResNet50(
        weights=None, include_top=False, input_shape=(None, None, 3)
    )
    rng = np.random.default_rng(0)
    for layer in reference.layers:
        if isinstance(layer, keras.layers.Conv2D):
            kernel, bias = layer.get_weights()
            layer.set_weights([kernel, rng.normal(0, 0.1, bias.shape)])
        elif isinstance(layer, keras.layers.BatchNormalization):
            c = layer.gamma.shape[0]
            layer.set_weights(
                [
                    rng.uniform(0.5, 1.0, c),
                    rng.normal(0, 0.1, c),
                    rng.normal(0, 0.1, c),
                    rng.uniform(0.5, 1.5, c),
                ]
            )
    folder = tmp_path_factory.mktemp("keras_resnet50")
    new = str(folder / "resnet50.weights.h5")
    legacy = str(folder / "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5")
    reference.save_weights(new)
    with h5py.File(legacy, "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, reference)
    return reference, new, legacy


def test_keras_resnet50_weights_give_identical_features(keras_resnet50_files):
    """The release file format (legacy .h5), weights copied unchanged."""
    reference, _, legacy = keras_resnet50_files
    ours = build_backbone("resnet50", last_stride=2, input_shape=(64, 64, 3))
    load_keras_resnet50_imagenet(ours, legacy, fold_caffe_preprocessing=False)
    x = _images(seed=1) * 50.0
    assert_close(ours(x, training=False), reference(x, training=False), tol=2e-4)


def test_keras_resnet50_caffe_preprocessing_is_folded(keras_resnet50_files):
    reference, new, _ = keras_resnet50_files
    ours = build_backbone("resnet50", input_shape=(64, 64, 3))
    load_keras_resnet50_imagenet(ours, new)
    pixels = np.random.default_rng(2).uniform(0, 255, (2, 64, 64, 3)).astype("float32")
    mean = np.array([0.485, 0.456, 0.406], np.float32)
    std = np.array([0.229, 0.224, 0.225], np.float32)
    normalised = (pixels / 255.0 - mean) / std
    caffe = keras.applications.resnet50.preprocess_input(pixels.copy())
    stem = keras.Model(ours.input, ours.get_layer("bn1").output)
    ref_stem = keras.Model(reference.input, reference.get_layer("conv1_bn").output)
    # Away from the zero-padded border (output rows/cols 2..29 read no padding).
    assert_close(
        stem(normalised, training=False)[:, 2:30, 2:30],
        ref_stem(caffe, training=False)[:, 2:30, 2:30],
    )


def test_keras_resnet50_weights_need_the_keras_layout(keras_resnet50_files):
    _, new, _ = keras_resnet50_files
    with pytest.raises(WeightsError, match="resnet50 with base_width=64"):
        load_keras_resnet50_imagenet(build_backbone("resnet50", base_width=8), new)
