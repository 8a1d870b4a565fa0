"""Loading ``model.pretrained`` into a backbone: a Keras weights file of the
backbone (non-local blocks checked against the file) or Keras' ImageNet ResNet-50."""

from __future__ import annotations

import os
import re
import warnings

import keras

from anet_tf.model.backbone import BACKBONES
from anet_tf.model.backbone import NonLocal
from anet_tf.model.backbone import build_backbone
from anet_tf.model.weights.common import WeightsError
from anet_tf.model.weights.keras_resnet import load_keras_resnet50_imagenet


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
