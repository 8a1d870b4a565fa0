"""The ANet network: backbones, custom layers, builders, weights and summary.

The names below load their module (and Keras) when first used, so importing
:mod:`anet_tf.model.names`, the choice lists the config reads, loads neither.
"""

from __future__ import annotations

import importlib

# public name -> the module that defines it
_EXPORTS = {
    "BACKBONES": "anet_tf.model.backbone",
    "VARIANTS": "anet_tf.model.names",
    "build_anet": "anet_tf.model.anet",
    "build_backbone": "anet_tf.model.backbone",
    "build_model_from_config": "anet_tf.model.anet",
    "convert_ibn_checkpoint": "anet_tf.model.weights",
    "load_backbone_weights": "anet_tf.model.weights",
    "load_keras_resnet50_imagenet": "anet_tf.model.weights",
    "select_test_feature": "anet_tf.model.anet",
    "summarize": "anet_tf.model.summary",
    "summarize_config": "anet_tf.model.summary",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # the next access is a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
