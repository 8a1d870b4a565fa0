"""The FastReID converter: a FastReID ``Baseline`` checkpoint's backbone (non-local
blocks included) to ``FILE.weights.h5`` and its heads' GeM p, BNNeck and classifier
to ``FILE.heads.npz``."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from dataclasses import field
from typing import Any

import keras
import numpy as np

from anet_tf.model.backbone import build_backbone
from anet_tf.model.weights.common import IMAGENET_MEAN_RGB
from anet_tf.model.weights.common import IMAGENET_STD_RGB
from anet_tf.model.weights.common import WeightsError
from anet_tf.model.weights.common import check_arch
from anet_tf.model.weights.common import check_out_path
from anet_tf.model.weights.common import detect_checkpoint_format
from anet_tf.model.weights.common import read_state_dict
from anet_tf.model.weights.common import save_backbone
from anet_tf.model.weights.torch_layout import assign_with_arch_hint

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
    check_arch(arch, fastreid=True)
    check_out_path(out_path)
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
    assign_with_arch_hint(backbone, backbone_state, arch, key_prefix="backbone.")
    save_backbone(backbone, out_path)
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
