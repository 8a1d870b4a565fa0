"""The PyTorch ResNet layout (IBN-Net, torchvision, FastReID's backbone): the
state-dict keys of each layer of a torch-layout backbone and copying a state dict
into it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import keras
import numpy as np

from anet_tf.model.backbone import NonLocal
from anet_tf.model.layers import IBN
from anet_tf.model.weights.common import WeightsError

_IGNORED_SUFFIXES = ("num_batches_tracked",)
_IGNORED_PREFIXES = ("fc.",)


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


def _guess_torch_arch(state: Mapping[str, Any]) -> str | None:
    """The torch-layout arch a bare ResNet state dict looks like (for hints only)."""
    if "layer4.0.conv1.weight" not in state:
        return None
    depth = 50 if "layer1.0.conv3.weight" in state else 18
    if depth == 18 and "layer1.2.conv1.weight" in state:
        return None  # ResNet-34: no such backbone here
    ibn = "layer1.0.bn1.IN.weight" in state
    return f"resnet{depth}" + ("_ibn_a" if ibn else "")


def assign_with_arch_hint(
    backbone: keras.Model, state, arch: str, key_prefix: str = ""
) -> None:
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
