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

Modules: :mod:`~anet_tf.model.weights.ibn`, :mod:`~anet_tf.model.weights.fastreid`
and :mod:`~anet_tf.model.weights.keras_resnet` (the converters),
:mod:`~anet_tf.model.weights.torch_layout` (the PyTorch ResNet layout the first two
share), :mod:`~anet_tf.model.weights.loading` (``model.pretrained``) and
:mod:`~anet_tf.model.weights.common` (the error, reading and checking a checkpoint).
"""

from anet_tf.model.weights.common import IMAGENET_MEAN_RGB
from anet_tf.model.weights.common import IMAGENET_STD_RGB
from anet_tf.model.weights.common import TORCH_ARCHS
from anet_tf.model.weights.common import WeightsError
from anet_tf.model.weights.common import detect_checkpoint_format
from anet_tf.model.weights.common import read_state_dict
from anet_tf.model.weights.fastreid import FastReIDConversion
from anet_tf.model.weights.fastreid import convert_fastreid_checkpoint
from anet_tf.model.weights.ibn import convert_ibn_checkpoint
from anet_tf.model.weights.keras_resnet import load_keras_resnet50_imagenet
from anet_tf.model.weights.loading import load_backbone_weights
from anet_tf.model.weights.torch_layout import assign_torch_state_dict
from anet_tf.model.weights.torch_layout import torch_state_dict_keys

__all__ = [
    "IMAGENET_MEAN_RGB",
    "IMAGENET_STD_RGB",
    "TORCH_ARCHS",
    "FastReIDConversion",
    "WeightsError",
    "assign_torch_state_dict",
    "convert_fastreid_checkpoint",
    "convert_ibn_checkpoint",
    "detect_checkpoint_format",
    "load_backbone_weights",
    "load_keras_resnet50_imagenet",
    "read_state_dict",
    "torch_state_dict_keys",
]
