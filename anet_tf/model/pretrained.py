"""Whether a run has chosen how its backbone starts: pretrained weights or random
initialisation on purpose."""

from __future__ import annotations

from anet_tf.config import Config
from anet_tf.config import ConfigError

REAL_DATASETS = ("veri776", "veriwild", "vehicleid")


def check_pretrained_choice(cfg: Config) -> None:
    """Refuse to train on a real dataset with ``model.pretrained`` unset: the paper's
    results start from an ImageNet-pretrained backbone, and a silent random
    initialisation costs days of training for a model far below them."""
    if cfg.data.name in REAL_DATASETS and cfg.model.pretrained is None:
        raise ConfigError(
            f"{cfg.source}: model.pretrained is not set for {cfg.data.name}: the paper "
            "starts from an ImageNet-pretrained backbone. Convert IBN-Net weights with "
            "anet-tf weights convert resnet50_ibn_a.pth -o weights/r50_ibn_a.weights.h5 "
            "and --set model.pretrained=weights/r50_ibn_a.weights.h5, or train from "
            "random initialisation on purpose with --set model.pretrained=none"
        )
