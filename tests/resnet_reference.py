"""Test helpers shared by the checkpoint converters' tests (IBN-Net, FastReID): random
weights written in PyTorch's ResNet key layout, and a float64 NumPy forward of that
layout with torch's semantics, the reference the converted Keras backbones are
checked against. Not a test module."""

import math

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

REPEATS = {50: (3, 4, 6, 3), 18: (2, 2, 2, 2)}


class RandomStateDict:
    """Random float32 weights under torch's key names, drawn from one seeded stream
    in the order the methods are called (``.sd`` holds them)."""

    def __init__(self, seed=0):
        self.rng = np.random.default_rng(seed)
        self.sd = {}

    def conv(self, name, out, inp, k, bias=False, gain=2.0):
        std = math.sqrt(gain / (inp * k * k))
        self.sd[f"{name}.weight"] = self.rng.normal(0, std, (out, inp, k, k)).astype("float32")
        if bias:
            self.sd[f"{name}.bias"] = self.rng.normal(0, 0.1, out).astype("float32")

    def bn(self, name, c, scale=1.0):
        rng, sd = self.rng, self.sd
        sd[f"{name}.weight"] = scale * rng.uniform(0.5, 1.0, c).astype("float32")
        sd[f"{name}.bias"] = rng.normal(0, 0.1, c).astype("float32")
        sd[f"{name}.running_mean"] = rng.normal(0, 0.1, c).astype("float32")
        sd[f"{name}.running_var"] = rng.uniform(0.5, 1.5, c).astype("float32")
        sd[f"{name}.num_batches_tracked"] = np.array(1000, np.int64)

    def norm1(self, name, planes, use_ibn):
        """IBN-a's first norm of a block: IN on half the channels, BN on the rest."""
        if not use_ibn:
            return self.bn(name, planes)
        half = int(planes * 0.5)
        self.sd[f"{name}.IN.weight"] = self.rng.uniform(0.5, 1.5, half).astype("float32")
        self.sd[f"{name}.IN.bias"] = self.rng.normal(0, 0.1, half).astype("float32")
        self.bn(f"{name}.BN", planes - half)

    def resnet(self, depth, base, ibn, prefix=""):
        """Stem and four stages (IBN-a in stages 1-3 if ``ibn``); returns the width
        of the last stage."""
        self.conv(f"{prefix}conv1", base, 3, 7)
        self.bn(f"{prefix}bn1", base)
        inplanes = base
        for stage, n in enumerate(REPEATS[depth], start=1):
            planes = base * 2 ** (stage - 1)
            use_ibn = ibn and stage < 4
            out = planes * 4 if depth == 50 else planes
            for i in range(n):
                p = f"{prefix}layer{stage}.{i}"
                if depth == 50:
                    self.conv(f"{p}.conv1", planes, inplanes, 1)
                    self.norm1(f"{p}.bn1", planes, use_ibn)
                    self.conv(f"{p}.conv2", planes, planes, 3)
                    self.bn(f"{p}.bn2", planes)
                    self.conv(f"{p}.conv3", out, planes, 1)
                    self.bn(f"{p}.bn3", out)
                else:
                    self.conv(f"{p}.conv1", planes, inplanes, 3)
                    self.norm1(f"{p}.bn1", planes, use_ibn)
                    self.conv(f"{p}.conv2", planes, planes, 3)
                    self.bn(f"{p}.bn2", planes)
                if i == 0 and (stage > 1 or inplanes != out):
                    self.conv(f"{p}.downsample.0", out, inplanes, 1)
                    self.bn(f"{p}.downsample.1", out)
                inplanes = out
        return inplanes


# ------------------------------------------------ NumPy forward, torch semantics


def np_conv(x, w, stride=1, pad=0, bias=None):
    """NHWC input, torch OIHW kernel, torch's symmetric zero padding."""
    x = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    kh, kw = w.shape[2:]
    windows = sliding_window_view(x, (kh, kw), axis=(1, 2))[:, ::stride, ::stride]
    y = np.tensordot(windows, w, axes=([3, 4, 5], [1, 2, 3]))
    return y if bias is None else y + bias


def np_bn(x, sd, name):
    mean, var = sd[f"{name}.running_mean"], sd[f"{name}.running_var"]
    return (x - mean) / np.sqrt(var + 1e-5) * sd[f"{name}.weight"] + sd[f"{name}.bias"]


def np_norm1(x, sd, name):
    if f"{name}.IN.weight" not in sd:
        return np_bn(x, sd, name)
    half = sd[f"{name}.IN.weight"].shape[0]
    a, b = x[..., :half], x[..., half:]
    mean, var = a.mean(axis=(1, 2), keepdims=True), a.var(axis=(1, 2), keepdims=True)
    a = (a - mean) / np.sqrt(var + 1e-5) * sd[f"{name}.IN.weight"]
    a = a + sd[f"{name}.IN.bias"]
    return np.concatenate([a, np_bn(b, sd, f"{name}.BN")], axis=-1)


def relu(t):
    return np.maximum(t, 0)


def np_stages(x, sd, depth, last_stride=1, after_block=None):
    """The four stages on the stem's output; ``after_block(x, stage, i)`` (FastReID's
    non-local blocks) runs after block i of a stage when given."""
    for stage, n in enumerate(REPEATS[depth], start=1):
        for i in range(n):
            p = f"layer{stage}.{i}"
            stride = (1, 2, 2, last_stride)[stage - 1] if i == 0 else 1
            shortcut = x
            if f"{p}.downsample.0.weight" in sd:
                shortcut = np_conv(x, sd[f"{p}.downsample.0.weight"], stride)
                shortcut = np_bn(shortcut, sd, f"{p}.downsample.1")
            if depth == 50:
                y = relu(np_norm1(np_conv(x, sd[f"{p}.conv1.weight"]), sd, f"{p}.bn1"))
                y = np_conv(y, sd[f"{p}.conv2.weight"], stride, 1)
                y = relu(np_bn(y, sd, f"{p}.bn2"))
                y = np_bn(np_conv(y, sd[f"{p}.conv3.weight"]), sd, f"{p}.bn3")
            else:
                y = np_conv(x, sd[f"{p}.conv1.weight"], stride, 1)
                y = relu(np_norm1(y, sd, f"{p}.bn1"))
                y = np_bn(np_conv(y, sd[f"{p}.conv2.weight"], 1, 1), sd, f"{p}.bn2")
            x = relu(y + shortcut)
            if after_block is not None:
                x = after_block(x, stage, i)
    return x


def assert_close(actual, expected, tol=1e-4):
    """Max absolute difference within ``tol`` times the reference's largest value."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape
    scale = np.abs(expected).max()
    assert np.abs(actual - expected).max() <= tol * scale, (
        f"max |diff| {np.abs(actual - expected).max()} vs max |ref| {scale}"
    )
