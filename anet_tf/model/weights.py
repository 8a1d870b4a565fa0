"""Pretrained backbone weights: Keras' ImageNet ResNet-50 and IBN-Net checkpoints.

Three entry points:

* :func:`convert_ibn_checkpoint` turns an official IBN-Net PyTorch checkpoint
  (XingangPan/IBN-Net ``resnet50_ibn_a``, also ``resnet18_ibn_a`` and torchvision's
  ``resnet18``) into a Keras ``FILE.weights.h5`` for our backbone. It reads a dict of
  NumPy arrays, an ``.npz`` file or a ``.pth`` file (the last needs PyTorch, the
  ``torch`` extra; it is imported only then).
* :func:`load_keras_resnet50_imagenet` loads the file that
  ``keras.applications.ResNet50(weights=path, include_top=False)`` accepts
  (``resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5``) into our ``resnet50``.
* :func:`load_backbone_weights` picks one of the above for ``model.pretrained``.

Conversions are strict: every parameter of the source must be used (except the
ImageNet classifier ``fc.*`` and ``num_batches_tracked``) and every weight of the
backbone must be set, with matching shapes; otherwise :class:`WeightsError` lists
what is missing, unused or mis-shaped.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from typing import Any

import keras
import numpy as np

from anet_tf.model.backbone import BACKBONES
from anet_tf.model.backbone import build_backbone
from anet_tf.model.layers import BN_EPSILON
from anet_tf.model.layers import IBN

# Archs whose block layout is the PyTorch one (see anet_tf.model.backbone).
TORCH_ARCHS = ("resnet50_ibn_a", "resnet18_ibn_a", "resnet18")
_IGNORED_SUFFIXES = ("num_batches_tracked",)
_IGNORED_PREFIXES = ("fc.",)

# keras.applications ResNet50: BatchNorm epsilon, and its "caffe" input convention
# (BGR, 0-255, minus this per-channel mean in BGR order).
_KERAS_BN_EPSILON = 1.001e-5
_CAFFE_MEAN_BGR = np.array([103.939, 116.779, 123.68], np.float32)
# The convention of our inputs (torchvision / IBN-Net): RGB, x = (p / 255 - mean) / std.
IMAGENET_MEAN_RGB = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD_RGB = np.array([0.229, 0.224, 0.225], np.float32)


class WeightsError(ValueError):
    """A weights file that does not fit the backbone; the message lists the keys."""


# ----------------------------------------------------------------- IBN-Net / torch


def torch_state_dict_keys(backbone_model: keras.Model) -> dict[str, tuple[str, ...]]:
    """The PyTorch keys each weight-carrying layer of a torch-layout backbone needs.

    Layer ``layer1_0_bn1`` maps to module ``layer1.0.bn1`` (``_`` -> ``.``).

    Returns:
        layer name -> keys, in the order of the layer's Keras weights (for an IBN
        layer: IN gamma, IN beta, BN gamma, beta, moving mean, moving variance).
    """
    keys = {}
    for layer in backbone_model.layers:
        module = layer.name.replace("_", ".")
        bn = ("weight", "bias", "running_mean", "running_var")
        if isinstance(layer, keras.layers.Conv2D):
            keys[layer.name] = (f"{module}.weight",)
        elif isinstance(layer, keras.layers.BatchNormalization):
            keys[layer.name] = tuple(f"{module}.{k}" for k in bn)
        elif isinstance(layer, IBN):
            keys[layer.name] = (f"{module}.IN.weight", f"{module}.IN.bias") + tuple(
                f"{module}.BN.{k}" for k in bn
            )
        elif layer.weights:
            raise WeightsError(
                f"layer {layer.name!r} ({type(layer).__name__}) has weights but no "
                f"PyTorch mapping"
            )
    return keys


def assign_torch_state_dict(
    backbone_model: keras.Model, state_dict: Mapping[str, Any]
) -> None:
    """Copy a PyTorch state dict (NumPy arrays) into a torch-layout backbone.

    Convolution weights go from torch OIHW to Keras HWIO; BatchNorm ``weight, bias,
    running_mean, running_var`` become ``gamma, beta, moving_mean,
    moving_variance``; IBN's ``IN.*`` and ``BN.*`` go to its two sub-layers.

    Raises:
        WeightsError: missing keys, unused keys or shape mismatches (all listed).
    """
    state = {k: np.asarray(v) for k, v in state_dict.items()}
    plan = torch_state_dict_keys(backbone_model)
    needed = [k for keys in plan.values() for k in keys]
    missing = [k for k in needed if k not in state]
    unused = [
        k
        for k in state
        if k not in set(needed)
        and not k.startswith(_IGNORED_PREFIXES)
        and not k.endswith(_IGNORED_SUFFIXES)
    ]
    problems = []
    if missing:
        problems.append(f"missing keys ({len(missing)}): {', '.join(missing)}")
    if unused:
        problems.append(f"unused keys ({len(unused)}): {', '.join(sorted(unused))}")
    if problems:
        raise WeightsError(
            f"the checkpoint does not match backbone {backbone_model.name!r}: "
            + "; ".join(problems)
        )
    mismatched = []
    assignments = []
    for layer_name, keys in plan.items():
        layer = backbone_model.get_layer(layer_name)
        values = [state[k] for k in keys]
        if isinstance(layer, keras.layers.Conv2D):
            values = [np.transpose(values[0], (2, 3, 1, 0))]
        for key, value, var in zip(keys, values, layer.weights, strict=True):
            if tuple(value.shape) != tuple(var.shape):
                mismatched.append(
                    f"{key}: checkpoint {tuple(state[key].shape)} -> "
                    f"{tuple(value.shape)}, backbone {var.path} {tuple(var.shape)}"
                )
        assignments.append((layer, values))
    if mismatched:
        raise WeightsError(
            f"shape mismatch between the checkpoint and backbone "
            f"{backbone_model.name!r} (is base_width right?): " + "; ".join(mismatched)
        )
    for layer, values in assignments:
        layer.set_weights([v.astype(np.float32) for v in values])


def read_state_dict(source: str | Mapping[str, Any]) -> dict[str, np.ndarray]:
    """A PyTorch state dict as NumPy arrays, from a dict, ``.npz`` or ``.pth`` file.

    A ``{"state_dict": ...}`` wrapper and the ``module.`` prefix that
    ``DataParallel`` adds (the old IBN-Net ``.pth.tar`` release has both) are
    removed.
    """
    if isinstance(source, Mapping):
        raw = dict(source)
    else:
        path = os.fspath(source)
        if not os.path.exists(path):
            raise FileNotFoundError(f"checkpoint not found: {path}")
        if path.endswith(".npz"):
            with np.load(path) as data:
                raw = {k: data[k] for k in data.files}
        else:
            try:
                import torch
            except ImportError:
                raise ImportError(
                    f"reading the PyTorch checkpoint {path} needs PyTorch: install the "
                    f"'torch' extra (pip install -e '.[torch]'), or pass a dict of "
                    f"NumPy arrays or an .npz file instead"
                ) from None
            raw = torch.load(path, map_location="cpu", weights_only=True)
    for wrapper in ("state_dict", "model"):
        if isinstance(raw.get(wrapper), Mapping):
            raw = dict(raw[wrapper])
    state = {}
    for key, value in raw.items():
        if key.startswith("module."):
            key = key[len("module.") :]
        if hasattr(value, "detach"):
            value = value.detach().cpu().numpy()
        state[key] = np.asarray(value)
    return state


def convert_ibn_checkpoint(
    state_dict_or_path: str | Mapping[str, Any],
    out_path: str,
    arch: str = "resnet50_ibn_a",
) -> keras.Model:
    """Convert an IBN-Net (or torchvision ResNet-18) checkpoint to ``FILE.weights.h5``.

    The width is read from the checkpoint (``conv1.weight`` has ``base_width``
    output channels), so width-reduced checkpoints convert too. The saved file loads
    into ``build_backbone(arch, base_width=...)`` with any ``last_stride``, and is
    what ``model.pretrained`` expects.

    Args:
        state_dict_or_path: dict of NumPy arrays (or tensors), ``.npz`` or ``.pth``.
        out_path: output file; must end with ``.weights.h5``.
        arch: resnet50_ibn_a | resnet18_ibn_a | resnet18.

    Returns:
        The converted backbone.

    Raises:
        WeightsError: keys or shapes that do not match (all listed).
    """
    if arch not in TORCH_ARCHS:
        hint = (
            " (our resnet50 follows the Keras layout: use load_keras_resnet50_imagenet)"
            if arch == "resnet50"
            else ""
        )
        raise ValueError(
            f"arch must be one of {TORCH_ARCHS}{hint}. Received: arch={arch!r}"
        )
    if not str(out_path).endswith(".weights.h5"):
        raise ValueError(
            f"out_path must end with '.weights.h5' (Keras' weights format). "
            f"Received: out_path={out_path!r}"
        )
    state = read_state_dict(state_dict_or_path)
    if "conv1.weight" not in state:
        raise WeightsError(
            f"no 'conv1.weight' in the checkpoint; is it a ResNet state dict? "
            f"First keys: {', '.join(list(state)[:5])}"
        )
    backbone = build_backbone(arch, base_width=int(state["conv1.weight"].shape[0]))
    assign_torch_state_dict(backbone, state)
    out_dir = os.path.dirname(os.path.abspath(out_path))
    os.makedirs(out_dir, exist_ok=True)
    backbone.save_weights(out_path)
    return backbone


# ----------------------------------------------------------------- Keras ResNet-50


def _keras_resnet50_layer(name: str) -> str:
    """Our layer name for a keras.applications ResNet50 layer with weights."""
    if name in ("conv1_conv", "conv1_bn"):
        return {"conv1_conv": "conv1", "conv1_bn": "bn1"}[name]
    # conv{S}_block{B}_{K}_{conv|bn}: stage S-1, block B-1; K=0 is the shortcut.
    stage, block, k, kind = name.split("_")
    prefix = f"layer{int(stage[4:]) - 1}_{int(block[5:]) - 1}"
    if k == "0":
        return f"{prefix}_downsample_{0 if kind == 'conv' else 1}"
    return f"{prefix}_{kind}{k}"


def load_keras_resnet50_imagenet(
    backbone_model: keras.Model, path: str, *, fold_caffe_preprocessing: bool = True
) -> None:
    """Load Keras' ImageNet ResNet-50 (no top) into our ``resnet50`` backbone.

    The file is loaded into ``keras.applications.ResNet50(weights=None,
    include_top=False)`` (both the legacy ``.h5`` release and a ``.weights.h5``
    saved from that model work) and copied layer by layer, by name. Keras' ResNet50
    convolutions have biases and its BatchNorm epsilon is 1.001e-5; ours are
    bias-free with epsilon 1e-5, so each conv bias b is folded into the next
    BatchNorm (moving_mean - b) and the variance is shifted by the epsilon
    difference: exact in inference.

    Args:
        backbone_model: ``build_backbone("resnet50", base_width=64, ...)``.
        path: the weights file.
        fold_caffe_preprocessing: Keras' weights expect "caffe" inputs (BGR, 0-255,
            minus the mean pixel) while our pipeline feeds RGB ``(p/255 - mean)/std``.
            When true, the first convolution is rewritten to take our inputs: the
            kernel is reordered RGB<-BGR and scaled by 255*std and the mean offset
            goes into bn1. The result equals the Keras model on caffe inputs except
            within 3 pixels of the border, where zero padding now means the ImageNet
            mean pixel instead of the caffe mean pixel (< 0.5 grey level apart).
            False copies the weights unchanged (then feed caffe inputs).

    Raises:
        WeightsError: the backbone does not have the ResNet-50 layout, or weights are
            left unassigned.
    """
    if not os.path.exists(path):
        raise FileNotFoundError(f"Keras ResNet-50 weights not found: {path}")
    reference = keras.applications.ResNet50(
        weights=None, include_top=False, input_shape=(None, None, 3)
    )
    reference.load_weights(path)
    ours = {layer.name: layer for layer in backbone_model.layers if layer.weights}
    assigned: set[str] = set()
    problems = []
    pending_bias = {}
    for layer in reference.layers:
        if not layer.weights:
            continue
        target = ours.get(_keras_resnet50_layer(layer.name))
        if target is None or type(target) is not type(layer):
            problems.append(f"{layer.name} -> {_keras_resnet50_layer(layer.name)}")
            continue
        weights = [np.asarray(w, np.float64) for w in layer.get_weights()]
        if isinstance(layer, keras.layers.Conv2D):
            kernel, bias = weights
            if layer.name == "conv1_conv" and fold_caffe_preprocessing:
                kernel, bias = _fold_caffe_preprocessing(kernel, bias)
            weights = [kernel]
            pending_bias[target.name] = bias
        else:
            conv = target.name.replace("downsample_1", "downsample_0")
            conv = {"bn1": "conv1"}.get(conv, conv.replace("_bn", "_conv"))
            gamma, beta, mean, var = weights
            mean = mean - pending_bias.pop(conv)
            var = var + _KERAS_BN_EPSILON - BN_EPSILON
            weights = [gamma, beta, mean, var]
        shapes = [tuple(v.shape) for v in target.weights]
        if shapes != [w.shape for w in weights]:
            problems.append(
                f"{layer.name} {[w.shape for w in weights]} -> {target.name} {shapes}"
            )
            continue
        target.set_weights([w.astype(np.float32) for w in weights])
        assigned.add(target.name)
    unassigned = sorted(set(ours) - assigned)
    if problems or unassigned:
        raise WeightsError(
            f"Keras ResNet-50 weights do not fit backbone {backbone_model.name!r} "
            f"(it must be resnet50 with base_width=64). Not transferable: "
            f"{'; '.join(problems) or 'none'}. Left unassigned: "
            f"{', '.join(unassigned) or 'none'}"
        )


def _fold_caffe_preprocessing(kernel: np.ndarray, bias: np.ndarray):
    """Rewrite conv1 (kernel HWIO over BGR caffe inputs) for RGB normalised inputs.

    caffe(x)[bgr c'] = 255 (std_c x_c + mean_c) - caffe_mean_c with c' = 2 - c, so
    W' = W[:, :, ::-1, :] * 255 std and b' = b + sum W[:, :, ::-1, :] (255 mean -
    caffe_mean), summed over kernel positions and input channels.
    """
    rgb = kernel[:, :, ::-1, :]
    offset = 255.0 * IMAGENET_MEAN_RGB - _CAFFE_MEAN_BGR[::-1]
    new_kernel = rgb * (255.0 * IMAGENET_STD_RGB)[None, None, :, None]
    new_bias = bias + np.einsum("hwco,c->o", rgb, offset)
    return new_kernel, new_bias


# ------------------------------------------------------------------- dispatcher


def load_backbone_weights(backbone_model: keras.Model, path: str, arch: str) -> None:
    """Load ``model.pretrained`` into a backbone.

    ``*.weights.h5``: a Keras weights file of this backbone (e.g. made by
    :func:`convert_ibn_checkpoint`); other ``*.h5`` with ``arch="resnet50"``: Keras'
    ImageNet ResNet-50 (:func:`load_keras_resnet50_imagenet`).
    """
    if arch not in BACKBONES:
        raise KeyError(
            f"unknown backbone {arch!r}; valid backbones: {', '.join(BACKBONES)}"
        )
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"model.pretrained: weights file not found: {path} (convert an IBN-Net "
            f"checkpoint with anet_tf.model.weights.convert_ibn_checkpoint, or set "
            f"model.pretrained to null)"
        )
    if path.endswith(".weights.h5"):
        try:
            with warnings.catch_warnings():
                # Keras 3.15 walks the Functional model's internal _operations_by_depth
                # lists on load, finds no group for them (saving stored those layers
                # once, under "layers") and warns that "affected layers" keep fresh
                # weights. They do not: every weight is loaded (checked weight by
                # weight in tests/test_weights.py). Only that message is silenced.
                warnings.filterwarnings(
                    "ignore",
                    message=r"Skipping nested container at '_operations_by_depth/",
                    category=UserWarning,
                )
                backbone_model.load_weights(path)
        except ValueError as exc:
            raise WeightsError(
                f"model.pretrained: {path} does not fit backbone {arch!r} with this "
                f"base_width: {exc}"
            ) from exc
    elif path.endswith(".h5") and arch == "resnet50":
        load_keras_resnet50_imagenet(backbone_model, path)
    else:
        raise WeightsError(
            f"model.pretrained: cannot load {path} into {arch!r}: expected a "
            f"'.weights.h5' file of this backbone (convert IBN-Net checkpoints with "
            f"convert_ibn_checkpoint) or, for resnet50, Keras' ImageNet '.h5'"
        )
