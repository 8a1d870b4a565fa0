"""AttributeNet (section 3, Figures 2-3) and its ablation variants (Tables 1-2).

:func:`build_anet` returns a functional ``keras.Model`` from an image
[B, H, W, 3] (ImageNet-normalised float32) to a dict of tensors:

=====================  =========  ================================================
key                    variants   meaning
=====================  =========  ================================================
``f``                  all        V-ReID feature, eq. (1), [B, s_f]
``f_logits``           all        identity logits of f, [B, num_ids] (cosines: circle)
``a_{name}``           van, anet  attribute feature a_i, eq. (3), [B, s_a]
``a_{name}_logits``    van, anet  attribute logits, [B, m_i]
``g``                  anet       GAP(G), input of the attribute-pattern triplet
``j``                  anet       joint feature, eq. (8), [B, s_j]
``j_logits``           anet       identity logits of j, [B, num_ids]
``G``                  anet       unified attribute map, eq. (5), [B, h, w, c]
``G_reid``             anet       distilled map, eq. (6), [B, h, w, c]
=====================  =========  ================================================

Features are returned un-normalised; evaluation L2-normalises them.

Top-level layers: ``backbone`` (a nested functional model; stage 2 freezes it with
``model.get_layer("backbone").trainable = False``, which also makes its BatchNorms
use their moving statistics), ``f_head``, ``attribute_{name}``, ``joint_module``,
``j_head``.
"""

from __future__ import annotations

import re

import keras

from anet_tf.config import Config
from anet_tf.model.backbone import BACKBONES
from anet_tf.model.backbone import build_backbone
from anet_tf.model.layers import AttributeBranch
from anet_tf.model.layers import JointModule
from anet_tf.model.layers import ReidHead
from anet_tf.model.names import ATTRIBUTE_BRANCHES
from anet_tf.model.names import TEST_FEATURES
from anet_tf.model.names import VARIANTS
from anet_tf.model.weights import load_backbone_weights

_ATTRIBUTE_NAME = re.compile(r"[A-Za-z0-9_]+")


# long: 31 lines of docstring; the body is the network's graph in the order of the paper's figure 2 (backbone, f, branches, Joint Module, j).
def build_anet(
    *,
    num_ids: int,
    attribute_names: list[str],
    num_classes: list[int],
    variant: str = "anet",
    backbone: str = "resnet50_ibn_a",
    base_width: int = 64,
    last_stride: int = 1,
    attribute_branch: str = "se",
    attribute_neck: str = "none",
    se_reduction: int = 16,
    s_f: int = 512,
    s_a: int = 128,
    s_j: int = 512,
    joint_width: int | float | None = None,
    image_size: tuple[int, int] = (256, 256),
    pretrained: str | None = None,
    stem: str = "ibn",
    non_local: bool = False,
    non_local_inter: int | None = None,
    head: dict | None = None,
) -> keras.Model:
    """Build ANet (``variant="anet"``), VAN (``"van"``) or the Baseline.

    Args:
        num_ids: training identities (classes of the ID classifiers).
        attribute_names: one attribute branch per name, in order (e.g. color, type);
            names are ASCII letters, digits and ``_`` since they become output keys.
        num_classes: m_i, classes of each attribute, same order.
        variant: baseline (f only) | van (f + attribute branches) | anet (full).
        backbone: resnet50_ibn_a | resnet50 | resnet18_ibn_a | resnet18.
        base_width: stem/stage-1 channels of the backbone (64 = standard ResNet).
        last_stride: stride of the last backbone stage (1 in the paper).
        attribute_branch: se (SE attention, the paper) | fc (Table 2).
        attribute_neck: none (the paper) | bnneck, BatchNorm between a_i and the
            attribute classifier (:class:`AttributeBranch`).
        se_reduction: SE reduction ratio r.
        s_f, s_a, s_j: dimensions of f, a_i and j (s_f, s_j = 0: no FC, the
            pooled map is the feature).
        joint_width: inner width of the Joint Module's 3x3 convolutions: channels,
            a fraction below 1 of c, or None for c.
        image_size: (H, W) of the input; fixes the static shapes of the graph.
        pretrained: backbone weights file (see
            :func:`anet_tf.model.weights.load_backbone_weights`) or None.
        stem: ibn | fastreid, the backbone's max-pool (``model.stem``).
        non_local: FastReID's non-local blocks in stages 2 and 3.
        non_local_inter: their inner channels (None = half their input).
        head: keyword arguments of both ReID heads (:class:`ReidHead`: pooling,
            gem_p, neck, classifier); None = the paper's heads.

    Returns:
        A functional ``keras.Model`` named ``anet`` whose output is the dict in the
        module docstring.
    """
    if variant not in VARIANTS:
        raise ValueError(
            f"variant must be one of {VARIANTS}. Received: variant={variant!r}"
        )
    if backbone not in BACKBONES:
        raise KeyError(
            f"unknown backbone {backbone!r}; valid backbones: {', '.join(BACKBONES)}"
        )
    if attribute_branch not in ATTRIBUTE_BRANCHES:
        raise ValueError(
            f"attribute_branch must be one of {ATTRIBUTE_BRANCHES}. Received: "
            f"attribute_branch={attribute_branch!r}"
        )
    if num_ids <= 0:
        raise ValueError(f"num_ids must be positive. Received: num_ids={num_ids}")
    attribute_names = list(attribute_names)
    num_classes = list(num_classes)
    if len(attribute_names) != len(num_classes):
        raise ValueError(
            f"attribute_names and num_classes must have one entry per attribute. "
            f"Received: attribute_names={attribute_names}, num_classes={num_classes}"
        )
    if len(set(attribute_names)) != len(attribute_names):
        raise ValueError(f"duplicate attribute name in {attribute_names}")
    for name, m in zip(attribute_names, num_classes, strict=True):
        if not _ATTRIBUTE_NAME.fullmatch(name):
            raise ValueError(
                f"attribute name {name!r} becomes an output key; use letters, digits "
                f"and '_' only"
            )
        if m < 2:
            raise ValueError(
                f"attribute {name!r} needs at least 2 classes. Received: {m}"
            )
    if variant != "baseline" and not attribute_names:
        raise ValueError(f"variant={variant!r} needs at least one attribute")
    if len(image_size) != 2 or min(image_size) < 16:
        raise ValueError(
            f"image_size must be (H, W) with both >= 16. Received: "
            f"image_size={image_size}"
        )
    if variant == "baseline":
        attribute_names, num_classes = [], []

    # === Layers ===
    net = build_backbone(
        backbone,
        base_width=base_width,
        last_stride=last_stride,
        input_shape=(*image_size, 3),
        stem=stem,
        non_local=non_local,
        non_local_inter=non_local_inter,
    )
    if pretrained:
        load_backbone_weights(net, pretrained, backbone)
    head = dict(head or {})
    f_head = ReidHead(s_f, num_ids, name="f_head", **head)
    branches = [
        AttributeBranch(
            s_a,
            m,
            attention=attribute_branch,
            reduction=se_reduction,
            neck=attribute_neck,
            name=f"attribute_{name}",
        )
        for name, m in zip(attribute_names, num_classes, strict=True)
    ]

    # === Functional Model ===
    image = keras.Input(shape=(*image_size, 3), name="image")
    F = net(image)
    f, f_logits = f_head(F)
    outputs = {"f": f, "f_logits": f_logits}
    A = []
    for name, branch in zip(attribute_names, branches, strict=True):
        A_i, a_i, logits = branch(F)
        A.append(A_i)
        outputs[f"a_{name}"] = a_i
        outputs[f"a_{name}_logits"] = logits
    if variant == "anet":
        G, g, G_reid, J = JointModule(joint_width, name="joint_module")([F, *A])
        j, j_logits = ReidHead(s_j, num_ids, name="j_head", **head)(J)
        outputs.update(g=g, j=j, j_logits=j_logits, G=G, G_reid=G_reid)
    return keras.Model(image, outputs, name="anet")


def build_model_from_config(
    cfg: Config, num_ids: int, num_classes: list[int], load_pretrained: bool = True
) -> keras.Model:
    """(``load_pretrained=False``: leave ``model.pretrained`` unread, for a network
    whose weights a checkpoint will replace; the file need not exist any more.)

    Build the network of ``cfg.model`` for ``cfg.data`` (attributes, image size).

    Args:
        cfg: the run configuration.
        num_ids: training identities of the dataset.
        num_classes: classes of each attribute of ``cfg.data.attributes``.
    """
    m = cfg.model
    return build_anet(
        num_ids=num_ids,
        attribute_names=list(cfg.data.attributes),
        num_classes=list(num_classes),
        variant=m.variant,
        backbone=m.backbone,
        base_width=m.base_width,
        last_stride=m.last_stride,
        attribute_branch=m.attribute_branch,
        attribute_neck=m.attribute_neck,
        se_reduction=m.se_reduction,
        s_f=m.s_f,
        s_a=m.s_a,
        s_j=m.s_j,
        joint_width=m.joint_module.width,
        image_size=tuple(cfg.data.image_size),
        stem=m.stem,
        non_local=m.non_local,
        non_local_inter=m.non_local_inter,
        head=head_kwargs(m.head),
        # "none": random initialisation chosen on purpose (fit asks for a choice on
        # the real datasets).
        pretrained=(
            None
            if not load_pretrained or (m.pretrained or "").lower() == "none"
            else m.pretrained
        ),
    )


def head_kwargs(head_cfg) -> dict:
    """The :class:`ReidHead` keyword arguments of ``model.head`` (the circle scale and
    margin belong to the identity loss, not to the layer)."""
    return {
        "pooling": head_cfg.pooling,
        "gem_p": head_cfg.gem_p,
        "neck": head_cfg.neck,
        "classifier": head_cfg.classifier,
    }


def select_test_feature(outputs: dict, feature: str, attribute_names: list[str]):
    """The test-time feature of Table 1, un-normalised.

    Args:
        outputs: the model's output dict.
        feature: f (eq. 1) | fa (f concatenated with a_1..a_n, "VAN (fa)") | j (eq. 8).
        attribute_names: order of the a_i in ``fa``.
    """
    if feature not in TEST_FEATURES:
        raise ValueError(
            f"feature must be one of {TEST_FEATURES}. Received: feature={feature!r}"
        )
    keys = {"f": ["f"], "j": ["j"], "fa": ["f"] + [f"a_{n}" for n in attribute_names]}
    keys = keys[feature]
    missing = [k for k in keys if k not in outputs]
    if missing or (feature == "fa" and not attribute_names):
        raise ValueError(
            f"feature {feature!r} needs outputs {keys}, the model gives "
            f"{sorted(outputs)} (feature 'fa' needs variant van or anet and attribute "
            f"names, 'j' needs variant anet)"
        )
    if len(keys) == 1:
        return outputs[keys[0]]
    return keras.ops.concatenate([outputs[k] for k in keys], axis=-1)


def compiled_inference(net, read):
    """``fn(images) -> read(outputs)`` of ``net`` in inference mode, compiled for
    the backend Keras runs: a ``tf.function`` on TensorFlow, a ``jax.jit`` of the
    network's stateless call (on the weights it has now) on JAX. ``read`` uses
    ``keras.ops`` only."""
    import numpy as np

    if keras.backend.backend() == "jax":
        import jax

        trainable = [v.value for v in net.trainable_variables]
        non_trainable = [v.value for v in net.non_trainable_variables]

        @jax.jit
        def run(trainable, non_trainable, images):
            outputs, _ = net.stateless_call(trainable, non_trainable, images, training=False)
            return read(outputs)

        return lambda images: run(trainable, non_trainable, np.asarray(images))

    import tensorflow as tf

    @tf.function(reduce_retracing=True)
    def run_tf(images):
        return read(net(images, training=False))

    return run_tf
