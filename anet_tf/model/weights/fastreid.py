"""Pretrained backbone weights: Keras' ImageNet ResNet-50, IBN-Net and FastReID.

Four entry points:

* :func:`convert_ibn_checkpoint` turns an official IBN-Net PyTorch checkpoint
  (XingangPan/IBN-Net ``resnet50_ibn_a``, also ``resnet18_ibn_a`` and torchvision's
  ``resnet18``) into a Keras ``FILE.weights.h5`` for our backbone. It reads a dict of
  NumPy arrays, an ``.npz`` file or a ``.pth`` file (the last needs PyTorch, the
  ``torch`` extra; it is imported only then). It recognises FastReID checkpoints
  (:func:`detect_checkpoint_format`) and hands them to
  :func:`convert_fastreid_checkpoint`, so ``anet-tf weights convert`` takes both.
* :func:`convert_fastreid_checkpoint` converts a FastReID model checkpoint
  (``{"model": state_dict}`` with ``backbone.*`` and ``heads.*`` keys, JDAI-CV/
  fast-reid's ``Baseline`` with an IBN-a ResNet): the backbone, non-local blocks
  included, to ``FILE.weights.h5`` and the heads' GeM p, BNNeck and classifier to
  ``FILE.heads.npz``.
* :func:`load_keras_resnet50_imagenet` loads the file that
  ``keras.applications.ResNet50(weights=path, include_top=False)`` accepts
  (``resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5``) into our ``resnet50``.
* :func:`load_backbone_weights` picks one of the above for ``model.pretrained``.

Conversions are strict: every parameter of the source must be used (except the
ImageNet classifier ``fc.*`` and ``num_batches_tracked``; FastReID's head goes to its
own file) and every weight of the backbone must be set, with matching shapes;
otherwise :class:`WeightsError` lists what is missing, unused, unknown or
mis-shaped. The exception is ImageNet weights loaded into a backbone with non-local
blocks, which have none there: the blocks keep their identity initialisation.
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from dataclasses import field
from typing import Any

import keras
import numpy as np

from anet_tf.model.backbone import BACKBONES
from anet_tf.model.backbone import NonLocal
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

    Layer ``layer1_0_bn1`` maps to module ``layer1.0.bn1`` (``_`` -> ``.``); a
    non-local layer ``nl2_0`` to FastReID's ``NL_2.0`` (``g``, ``theta``, ``phi``,
    ``W.0`` convolutions with bias, ``W.1`` BatchNorm).

    Returns:
        layer name -> keys, in the order of the layer's Keras weights (for an IBN
        layer: IN gamma, IN beta, BN gamma, beta, moving mean, moving variance).
    """
    keys = {}
    for layer in backbone_model.layers:
        module = layer.name.replace("_", ".")
        bn = ("weight", "bias", "running_mean", "running_var")
        if isinstance(layer, NonLocal):
            module = _non_local_module(layer.name)
            convs = ("g", "theta", "phi", "W.0")
            keys[layer.name] = tuple(
                f"{module}.{conv}.{k}" for conv in convs for k in ("weight", "bias")
            ) + tuple(f"{module}.W.1.{k}" for k in bn)
        elif isinstance(layer, keras.layers.Conv2D):
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


def _non_local_module(layer_name: str) -> str:
    """FastReID's module of a non-local layer: ``nl2_0`` -> ``NL_2.0``."""
    stage, index = layer_name[len("nl") :].split("_")
    return f"NL_{stage}.{index}"


def assign_torch_state_dict(
    backbone_model: keras.Model, state_dict: Mapping[str, Any], *, key_prefix: str = ""
) -> None:
    """Copy a PyTorch state dict (NumPy arrays) into a torch-layout backbone.

    Convolution weights go from torch OIHW to Keras HWIO; BatchNorm ``weight, bias,
    running_mean, running_var`` become ``gamma, beta, moving_mean,
    moving_variance``; IBN's ``IN.*`` and ``BN.*`` go to its two sub-layers; a
    non-local block's five modules go to its five sub-layers.

    Args:
        key_prefix: written before every key in error messages (``"backbone."`` for
            a FastReID checkpoint whose prefix the caller removed).

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
        names = ", ".join(key_prefix + k for k in missing)
        problems.append(f"missing keys ({len(missing)}): {names}")
    if unused:
        names = ", ".join(key_prefix + k for k in sorted(unused))
        problems.append(f"unused keys ({len(unused)}): {names}")
    if problems:
        raise WeightsError(
            f"the checkpoint does not match backbone {backbone_model.name!r}: "
            + "; ".join(problems)
        )
    mismatched = []
    assignments = []
    for layer_name, keys in plan.items():
        layer = backbone_model.get_layer(layer_name)
        # Convolution kernels (the only 4-D values) go from OIHW to HWIO.
        values = [
            np.transpose(state[k], (2, 3, 1, 0)) if state[k].ndim == 4 else state[k]
            for k in keys
        ]
        for key, value, var in zip(keys, values, layer.weights, strict=True):
            if tuple(value.shape) != tuple(var.shape):
                mismatched.append(
                    f"{key_prefix}{key}: checkpoint {tuple(state[key].shape)} -> "
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


def detect_checkpoint_format(state: Mapping[str, Any]) -> str:
    """``"fastreid"`` or ``"ibn"``: which converter a state dict needs.

    FastReID's ``Baseline`` keeps its ResNet under ``backbone.`` (and its head under
    ``heads.``); an IBN-Net or torchvision checkpoint is the bare ResNet
    (``conv1.weight`` at the top). ``read_state_dict`` has already removed the
    ``{"model": ...}`` / ``{"state_dict": ...}`` wrappers and ``module.``.

    Raises:
        WeightsError: neither layout; the message shows the first keys.
    """
    if any(k.startswith("backbone.") for k in state):
        return "fastreid"
    if "conv1.weight" in state:
        return "ibn"
    raise WeightsError(
        f"neither an IBN-Net/torchvision ResNet state dict (no 'conv1.weight') nor a "
        f"FastReID checkpoint (no 'backbone.*' keys). First keys: "
        f"{', '.join(list(state)[:5]) or 'none'}"
    )


def _guess_torch_arch(state: Mapping[str, Any]) -> str | None:
    """The torch-layout arch a bare ResNet state dict looks like (for hints only)."""
    if "layer4.0.conv1.weight" not in state:
        return None
    depth = 50 if "layer1.0.conv3.weight" in state else 18
    if depth == 18 and "layer1.2.conv1.weight" in state:
        return None  # ResNet-34: no such backbone here
    ibn = "layer1.0.bn1.IN.weight" in state
    return f"resnet{depth}" + ("_ibn_a" if ibn else "")


def _check_arch(arch: str, fastreid: bool = False) -> None:
    if arch in TORCH_ARCHS:
        return
    hint = ""
    if arch == "resnet50":
        hint = (
            " (FastReID's plain ResNet-50 strides in the 3x3 convolution, our "
            "resnet50 in the 1x1: not convertible)"
            if fastreid
            else " (our resnet50 follows the Keras layout: use "
            "load_keras_resnet50_imagenet)"
        )
    raise ValueError(
        f"arch must be one of {TORCH_ARCHS}{hint}. Received: arch={arch!r}"
    )


def _check_out_path(out_path: str) -> None:
    if not str(out_path).endswith(".weights.h5"):
        raise ValueError(
            f"out_path must end with '.weights.h5' (Keras' weights format). "
            f"Received: out_path={out_path!r}"
        )


def _assign(backbone: keras.Model, state, arch: str, key_prefix: str = "") -> None:
    """:func:`assign_torch_state_dict`, with the arch the keys suggest on failure."""
    try:
        assign_torch_state_dict(backbone, state, key_prefix=key_prefix)
    except WeightsError as exc:
        guess = _guess_torch_arch(state)
        if guess is None or guess == arch:
            raise
        raise WeightsError(
            f"{exc} (the checkpoint looks like {guess}, not {arch}: pass "
            f"arch={guess!r} / --arch {guess})"
        ) from exc


def _save(backbone: keras.Model, out_path: str) -> None:
    out_dir = os.path.dirname(os.path.abspath(out_path))
    os.makedirs(out_dir, exist_ok=True)
    backbone.save_weights(out_path)


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

    A FastReID checkpoint (:func:`detect_checkpoint_format`) goes to
    :func:`convert_fastreid_checkpoint` (which also writes ``FILE.heads.npz``); its
    backbone is returned.

    Args:
        state_dict_or_path: dict of NumPy arrays (or tensors), ``.npz`` or ``.pth``.
        out_path: output file; must end with ``.weights.h5``.
        arch: resnet50_ibn_a | resnet18_ibn_a | resnet18.

    Returns:
        The converted backbone.

    Raises:
        WeightsError: keys or shapes that do not match (all listed).
    """
    _check_arch(arch)
    _check_out_path(out_path)
    state = read_state_dict(state_dict_or_path)
    if detect_checkpoint_format(state) == "fastreid":
        return convert_fastreid_checkpoint(state, out_path, arch).backbone
    backbone = build_backbone(arch, base_width=int(state["conv1.weight"].shape[0]))
    _assign(backbone, state, arch)
    _save(backbone, out_path)
    return backbone


# ----------------------------------------------------------------------- FastReID

# FastReID's default MODEL.PIXEL_MEAN / PIXEL_STD (0-255 RGB): the ImageNet
# normalisation our pipeline applies before the backbone.
_FASTREID_PIXEL_MEAN = 255.0 * IMAGENET_MEAN_RGB
_FASTREID_PIXEL_STD = 255.0 * IMAGENET_STD_RGB
_BNNECK_NAMES = {
    "weight": "bnneck_gamma",
    "bias": "bnneck_beta",
    "running_mean": "bnneck_moving_mean",
    "running_var": "bnneck_moving_variance",
}


@dataclass
class FastReIDConversion:
    """What :func:`convert_fastreid_checkpoint` made.

    Attributes:
        backbone: the converted backbone (``stem="fastreid"``).
        arch, base_width, non_local, non_local_inter: how to build a backbone the
            saved file loads into (also :attr:`backbone_kwargs`).
        heads: the head's parameters in Keras layouts, those present of
            ``gem_p`` [1] (``heads.pool_layer.p``), ``embedding_kernel`` [c, d]
            (``heads.bottleneck.0``, a 1x1 convolution, when EMBEDDING_DIM > 0),
            ``bnneck_gamma``, ``bnneck_beta``, ``bnneck_moving_mean``,
            ``bnneck_moving_variance`` [d] (the BNNeck's ``weight``, ``bias``,
            ``running_mean``, ``running_var``; FastReID freezes its bias at 0) and
            ``classifier_kernel`` [d, num_classes] (``heads.weight``, the transposed
            class weights).
        heads_path: the ``.heads.npz`` file holding ``heads``; None without heads.
    """

    backbone: keras.Model
    arch: str
    base_width: int
    non_local: bool
    non_local_inter: int | None
    heads: dict[str, np.ndarray] = field(default_factory=dict)
    heads_path: str | None = None
    stem: str = "fastreid"

    @property
    def backbone_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of ``build_backbone(arch, ...)`` matching the file."""
        return {
            "base_width": self.base_width,
            "stem": self.stem,
            "non_local": self.non_local,
            "non_local_inter": self.non_local_inter,
        }


def _split_fastreid(state: Mapping[str, np.ndarray]):
    """(backbone state without the prefix, heads in Keras layouts); refuses unknown
    keys, listing every one by name."""
    backbone = {}
    heads = {}
    unknown = []
    rest = {}
    for key, value in state.items():
        if key.startswith("backbone."):
            backbone[key[len("backbone.") :]] = value
        elif key.startswith("heads."):
            rest[key] = value
        elif key in ("pixel_mean", "pixel_std"):
            expected = (
                _FASTREID_PIXEL_MEAN if key == "pixel_mean" else _FASTREID_PIXEL_STD
            )
            if value.size != 3 or not np.allclose(value.ravel(), expected, atol=1e-2):
                raise WeightsError(
                    f"the checkpoint's {key} {value.ravel().tolist()} is not "
                    f"FastReID's default {expected.tolist()}: the converted backbone "
                    f"would expect other inputs than our ImageNet-normalised images"
                )
        else:
            unknown.append(key)
    # The head: GeM p, optional embedding convolution, BNNeck, classifier.
    neck = 0
    if rest.get("heads.bottleneck.0.weight", np.zeros(0)).ndim == 4:
        weight = rest.pop("heads.bottleneck.0.weight")
        heads["embedding_kernel"] = np.transpose(weight[:, :, 0, 0])
        neck = 1
    if "heads.pool_layer.p" in rest:
        heads["gem_p"] = rest.pop("heads.pool_layer.p").reshape(-1)
    for k, name in _BNNECK_NAMES.items():
        if f"heads.bottleneck.{neck}.{k}" in rest:
            heads[name] = rest.pop(f"heads.bottleneck.{neck}.{k}")
    rest.pop(f"heads.bottleneck.{neck}.num_batches_tracked", None)
    for key in ("heads.weight", "heads.classifier.weight"):
        if key in rest:
            heads["classifier_kernel"] = np.transpose(rest.pop(key))
    unknown += list(rest)
    if unknown:
        raise WeightsError(
            f"unknown keys in the FastReID checkpoint ({len(unknown)}), neither "
            f"backbone.* nor the GeM p, BNNeck or classifier of heads.*: "
            f"{', '.join(sorted(unknown))}"
        )
    return backbone, {k: np.asarray(v, np.float32) for k, v in heads.items()}


def _non_local_inter(
    backbone_state: Mapping[str, np.ndarray],
) -> tuple[bool, int | None]:
    """(has non-local blocks, ``non_local_inter`` that builds them: None when every
    block has C // 2 inner channels, else their common count)."""
    g = {
        k: v
        for k, v in backbone_state.items()
        if re.fullmatch(r"NL_\d+\.\d+\.g\.weight", k)
    }
    if not g:
        return False, None
    if all(v.shape[0] == v.shape[1] // 2 for v in g.values()):
        return True, None
    counts = {int(v.shape[0]) for v in g.values()}
    if len(counts) != 1:
        raise WeightsError(
            "the non-local blocks of the checkpoint differ in inner channels: "
            + ", ".join(f"{k} {tuple(v.shape)}" for k, v in sorted(g.items()))
        )
    return True, counts.pop()


def convert_fastreid_checkpoint(
    state_dict_or_path: str | Mapping[str, Any],
    out_path: str,
    arch: str = "resnet50_ibn_a",
) -> FastReIDConversion:
    """Convert a FastReID model checkpoint: backbone to ``FILE.weights.h5``, heads to
    ``FILE.heads.npz``.

    The checkpoint is FastReID's ``{"model": state_dict, ...}`` (or the state dict
    itself) of a ``Baseline`` with an IBN-a ResNet-50/18 or a plain ResNet-18
    (FastReID's layout is the torch one). ``backbone.*`` becomes our backbone with
    FastReID's stem (max-pool in ceil mode) and, when the checkpoint has
    ``backbone.NL_{stage}.{j}.*``, the non-local blocks with the checkpoint's inner
    channel count; the saved file loads into ``build_backbone(arch,
    **result.backbone_kwargs)`` with any ``last_stride``. ``heads.*``: see
    :class:`FastReIDConversion`. ``num_batches_tracked`` is dropped; ``pixel_mean``
    / ``pixel_std`` (older FastReID) must be the ImageNet normalisation.

    Raises:
        WeightsError: unknown keys (all listed by name), or keys and shapes that do
            not fit ``arch`` (all listed, with the arch the keys suggest).
    """
    _check_arch(arch, fastreid=True)
    _check_out_path(out_path)
    state = read_state_dict(state_dict_or_path)
    if detect_checkpoint_format(state) != "fastreid":
        raise WeightsError(
            "not a FastReID checkpoint (no 'backbone.*' keys): convert IBN-Net "
            "checkpoints with convert_ibn_checkpoint"
        )
    backbone_state, heads = _split_fastreid(state)
    if "conv1.weight" not in backbone_state:
        raise WeightsError("no 'backbone.conv1.weight' in the FastReID checkpoint")
    non_local, inter = _non_local_inter(backbone_state)
    base_width = int(backbone_state["conv1.weight"].shape[0])
    backbone = build_backbone(
        arch,
        base_width=base_width,
        stem="fastreid",
        non_local=non_local,
        non_local_inter=inter,
    )
    _assign(backbone, backbone_state, arch, key_prefix="backbone.")
    _save(backbone, out_path)
    heads_path = None
    if heads:
        heads_path = str(out_path)[: -len(".weights.h5")] + ".heads.npz"
        np.savez(heads_path, **heads)
    return FastReIDConversion(
        backbone=backbone,
        arch=arch,
        base_width=base_width,
        non_local=non_local,
        non_local_inter=inter,
        heads=heads,
        heads_path=heads_path,
    )


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
    # Non-local blocks have no ImageNet weights: they keep their initialisation.
    ours = {
        layer.name: layer
        for layer in backbone_model.layers
        if layer.weights and not isinstance(layer, NonLocal)
    }
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


def _file_non_local_inters(path: str) -> list[int]:
    """Inner channels of the non-local blocks in a backbone ``.weights.h5``, in order.

    Keras 3 stores a functional model's layers under ``layers/<class_name>[_k]``, so
    our :class:`NonLocal` blocks are ``layers/non_local``, ``layers/non_local_1``...
    (and the numbering of every other layer type is the same with or without them).
    """
    import h5py

    inters = []
    with h5py.File(path, "r") as f:
        layers = f.get("layers")
        if layers is None:
            return inters
        names = [n for n in layers if re.fullmatch(r"non_local(_\d+)?", n)]
        order = {n: int(n[len("non_local_") :] or 0) for n in names}
        for name in sorted(names, key=order.get):
            kernel = layers.get(f"{name}/g/vars/0")
            inters.append(int(kernel.shape[-1]) if kernel is not None else -1)
    return inters


def _load_weights_file(model: keras.Model, path: str) -> None:
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
        model.load_weights(path)


def load_backbone_weights(backbone_model: keras.Model, path: str, arch: str) -> None:
    """Load ``model.pretrained`` into a backbone.

    ``*.weights.h5``: a Keras weights file of this backbone (e.g. made by
    :func:`convert_ibn_checkpoint`); other ``*.h5`` with ``arch="resnet50"``: Keras'
    ImageNet ResNet-50 (:func:`load_keras_resnet50_imagenet`).

    A backbone with non-local blocks takes a file without them (ImageNet weights):
    the blocks keep their initialisation, the identity (BatchNorm gamma 0), as
    FastReID starts them. A file with non-local blocks must match the backbone's
    in number and inner channels (a file with them does not load into a backbone
    without them: Keras would skip them silently).
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
        blocks = [la for la in backbone_model.layers if isinstance(la, NonLocal)]
        inters = [la.inter for la in blocks]
        in_file = _file_non_local_inters(path)
        if in_file and len(in_file) != len(blocks):
            raise WeightsError(
                f"model.pretrained: {path} has {len(in_file)} non-local blocks, the "
                f"backbone {len(blocks)} (set model.non_local: "
                f"{'true' if not blocks else 'false'}?)"
            )
        if in_file and in_file != inters:
            raise WeightsError(
                f"model.pretrained: the non-local blocks of {path} have "
                f"{in_file} inner channels, the backbone's {inters} (FastReID's code "
                f"uses 1: build with non_local_inter=1)"
            )
        target = backbone_model
        if blocks and not in_file:
            width = int(backbone_model.get_layer("conv1").kernel.shape[-1])
            target = build_backbone(arch, base_width=width)
        try:
            _load_weights_file(target, path)
        except ValueError as exc:
            raise WeightsError(
                f"model.pretrained: {path} does not fit backbone {arch!r} with this "
                f"base_width: {exc}"
            ) from exc
        if target is not backbone_model:
            for layer in target.layers:
                if layer.weights:
                    backbone_model.get_layer(layer.name).set_weights(
                        layer.get_weights()
                    )
    elif path.endswith(".h5") and arch == "resnet50":
        load_keras_resnet50_imagenet(backbone_model, path)
    else:
        raise WeightsError(
            f"model.pretrained: cannot load {path} into {arch!r}: expected a "
            f"'.weights.h5' file of this backbone (convert IBN-Net checkpoints with "
            f"convert_ibn_checkpoint) or, for resnet50, Keras' ImageNet '.h5'"
        )
