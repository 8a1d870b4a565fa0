"""The ANet network: backbones, custom layers, builders, weights and summary."""

from anet_tf.model.anet import VARIANTS
from anet_tf.model.anet import build_anet
from anet_tf.model.anet import build_model_from_config
from anet_tf.model.anet import test_feature
from anet_tf.model.backbone import BACKBONES
from anet_tf.model.backbone import build_backbone
from anet_tf.model.summary import summarize
from anet_tf.model.summary import summarize_config
from anet_tf.model.weights import convert_ibn_checkpoint
from anet_tf.model.weights import load_backbone_weights
from anet_tf.model.weights import load_keras_resnet50_imagenet

__all__ = [
    "BACKBONES",
    "VARIANTS",
    "build_anet",
    "build_backbone",
    "build_model_from_config",
    "convert_ibn_checkpoint",
    "load_backbone_weights",
    "load_keras_resnet50_imagenet",
    "summarize",
    "summarize_config",
    "test_feature",
]
