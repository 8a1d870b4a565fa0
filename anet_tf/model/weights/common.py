"""What the weight converters share: their error, the torch-layout archs, the
ImageNet input convention, reading a PyTorch state dict, telling its format and
checking a conversion's arguments."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import keras
import numpy as np

# Archs whose block layout is the PyTorch one (see anet_tf.model.backbone).
TORCH_ARCHS = ("resnet50_ibn_a", "resnet18_ibn_a", "resnet18")
# The convention of our inputs (torchvision / IBN-Net): RGB, x = (p / 255 - mean) / std.
IMAGENET_MEAN_RGB = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD_RGB = np.array([0.229, 0.224, 0.225], np.float32)


class WeightsError(ValueError):
    """A weights file that does not fit the backbone; the message lists the keys."""


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


def check_arch(arch: str, fastreid: bool = False) -> None:
    """Refuse an arch without the torch layout (with a hint for resnet50)."""
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


def check_out_path(out_path: str) -> None:
    """Refuse an output path that is not a Keras ``.weights.h5`` file."""
    if not str(out_path).endswith(".weights.h5"):
        raise ValueError(
            f"out_path must end with '.weights.h5' (Keras' weights format). "
            f"Received: out_path={out_path!r}"
        )


def save_backbone(backbone: keras.Model, out_path: str) -> None:
    """Save a converted backbone's weights, creating the folder."""
    out_dir = os.path.dirname(os.path.abspath(out_path))
    os.makedirs(out_dir, exist_ok=True)
    backbone.save_weights(out_path)
