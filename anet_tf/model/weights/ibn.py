"""The IBN-Net converter: an official IBN-Net (or torchvision ResNet-18) PyTorch
checkpoint to a Keras ``FILE.weights.h5`` for our backbone; a FastReID checkpoint
goes to :mod:`anet_tf.model.weights.fastreid`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import keras

from anet_tf.model.backbone import build_backbone
from anet_tf.model.weights.common import check_arch
from anet_tf.model.weights.common import check_out_path
from anet_tf.model.weights.common import detect_checkpoint_format
from anet_tf.model.weights.common import read_state_dict
from anet_tf.model.weights.common import save_backbone
from anet_tf.model.weights.fastreid import convert_fastreid_checkpoint
from anet_tf.model.weights.torch_layout import assign_with_arch_hint


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
    check_arch(arch)
    check_out_path(out_path)
    state = read_state_dict(state_dict_or_path)
    if detect_checkpoint_format(state) == "fastreid":
        return convert_fastreid_checkpoint(state, out_path, arch).backbone
    backbone = build_backbone(arch, base_width=int(state["conv1.weight"].shape[0]))
    assign_with_arch_hint(backbone, state, arch)
    save_backbone(backbone, out_path)
    return backbone
