"""Parameters and FLOPs of ANet, per part, at the configured input size.

FLOPs are computed analytically from layer shapes, no profiler: a Conv2D costs
``kh * kw * (c_in / groups) * c_out`` multiply-adds (MACs) per output position, a
Dense ``n_in * n_out`` per input vector. Only Conv2D and Dense are counted
(BatchNorm, InstanceNorm, ReLU, pooling, additions and the SE product are left out;
together they are well under 1 %). The table gives MACs and FLOPs = 2 x MACs.

Inside the custom layers of :mod:`anet_tf.model.layers` every Conv2D runs at the
spatial size of the layer's input (stride 1, same padding) and every Dense runs once
per sample on a pooled vector; the counter checks the first of these assumptions.
"""

from __future__ import annotations

import keras
import numpy as np

from anet_tf.config import Config
from anet_tf.model.anet import build_model_from_config
from anet_tf.model.layers import AttributeBranch
from anet_tf.model.layers import JointModule
from anet_tf.model.layers import ReidHead


def _conv_macs(layer: keras.layers.Conv2D, out_h: int, out_w: int) -> int:
    kh, kw, cin, cout = layer.kernel.shape
    return int(kh * kw * cin * cout * out_h * out_w)


def _dense_macs(layer: keras.layers.Dense, positions: int = 1) -> int:
    n_in, n_out = layer.kernel.shape
    return int(n_in * n_out * positions)


def _input_shape(layer: keras.layers.Layer) -> tuple:
    x = layer.input
    if isinstance(x, (list, tuple)):
        x = x[0]
    return tuple(x.shape)


def layer_macs(layer: keras.layers.Layer) -> int:
    """Multiply-adds of one call of ``layer`` for one sample (batch 1).

    ``layer`` is a layer of a built functional model (so its input and output
    shapes are known) or a functional model itself.
    """
    if isinstance(layer, keras.Model):
        return sum(layer_macs(sub) for sub in layer.layers)
    if isinstance(layer, keras.layers.Conv2D):
        _, h, w, _ = layer.output.shape
        return _conv_macs(layer, h, w)
    if isinstance(layer, keras.layers.Dense):
        positions = int(np.prod(layer.output.shape[1:-1], dtype=np.int64))
        return _dense_macs(layer, positions)
    total = 0
    inner = [sub for sub in layer._flatten_layers(include_self=False)]
    if inner:
        _, h, w, _ = _input_shape(layer)
        for sub in inner:
            if isinstance(sub, keras.layers.Conv2D):
                if tuple(sub.strides) != (1, 1) or sub.padding != "same":
                    raise ValueError(
                        f"summary: {layer.name}/{sub.name} is not a stride-1 'same' "
                        f"convolution; its output size is unknown"
                    )
                total += _conv_macs(sub, h, w)
            elif isinstance(sub, keras.layers.Dense):
                total += _dense_macs(sub)
    return total


def _params(layer: keras.layers.Layer) -> tuple[int, int]:
    """(all parameters, trainable parameters) of a layer."""
    trainable = sum(int(np.prod(v.shape)) for v in layer.trainable_weights)
    return layer.count_params(), trainable


def _part(layer: keras.layers.Layer) -> str:
    if isinstance(layer, AttributeBranch):
        kind = "SE attention" if layer.attention == "se" else "fc, no attention"
        return f"attribute branch {layer.name[len('attribute_') :]!r} ({kind})"
    if isinstance(layer, JointModule):
        return f"joint module (width {layer.theta_g2.filters})"
    if isinstance(layer, ReidHead):
        symbol = layer.name.split("_")[0]
        return f"{symbol} head (FC {layer.units} + ID classifier {layer.num_classes})"
    return layer.name


# long: 15 lines of docstring; 68 lines of code.
def summarize(
    model_or_config: keras.Model | Config,
    *,
    num_ids: int = 576,
    num_classes: list[int] | None = None,
) -> str:
    """A table of parameters and FLOPs per part of an ANet model.

    Rows: backbone, each attribute branch, the Joint Module (with its theta_A,
    theta_g2 and theta_g1 convolutions), the f and j heads (FC + classifier), total.
    The last line states the cost of the Joint Module's two 3x3 convolutions
    relative to the backbone.

    Args:
        model_or_config: a model from :func:`~anet_tf.model.anet.build_anet`, or a
            :class:`~anet_tf.config.Config` to build one from.
        num_ids: training identities when building from a config (576, VeRi-776);
            it changes only the classifier rows.
        num_classes: classes per attribute when building from a config (default 10
            each).
    """
    if isinstance(model_or_config, Config):
        cfg = model_or_config
        n = len(cfg.data.attributes)
        model = build_model_from_config(cfg, num_ids, num_classes or [10] * n)
    else:
        model = model_or_config
    rows = []
    total_params, total_macs = (0, 0), 0
    backbone_macs = joint_3x3_macs = None
    joint_width = None
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        params, macs = _params(layer), layer_macs(layer)
        total_params = [t + p for t, p in zip(total_params, params, strict=True)]
        total_macs += macs
        rows.append((_part(layer), params, macs))
        if layer.name == "backbone":
            backbone_macs = macs
        if isinstance(layer, JointModule):
            _, h, w, _ = _input_shape(layer)
            joint_3x3_macs = 0
            for sub in (layer.theta_A, layer.theta_g2, layer.theta_g1):
                sub_macs = _conv_macs(sub.conv, h, w)
                k = sub.kernel_size
                cin, cout = sub.conv.kernel.shape[2:]
                rows.append(
                    (f"  {sub.name} {k}x{k} conv {cin}->{cout}", _params(sub), sub_macs)
                )
                if k == 3:
                    joint_3x3_macs += sub_macs
            joint_width = layer.theta_g2.filters
    rows.append(("total", total_params, total_macs))

    _, H, W, _ = model.input.shape
    _, h, w, c = model.get_layer("backbone").output.shape
    lines = [f"{model.name}: input {H}x{W}x3, F {h}x{w}x{c}"]
    width = max(len(r[0]) for r in rows) + 2
    header = (
        f"{'part':<{width}}{'params':>13}{'trainable':>13}{'MMACs':>12}{'MFLOPs':>12}"
    )
    lines += [header, "-" * len(header)]
    for i, (name, (params, trainable), macs) in enumerate(rows):
        if i == len(rows) - 1:
            lines.append("-" * len(header))
        lines.append(
            f"{name:<{width}}{params:>13,}{trainable:>13,}{macs / 1e6:>12,.2f}"
            f"{2 * macs / 1e6:>12,.2f}"
        )
    lines.append(
        "MMACs = millions of multiply-adds per image, MFLOPs = 2 x MMACs (Conv2D and "
        "Dense only); params include BatchNorm moving statistics."
    )
    if joint_3x3_macs is not None and backbone_macs:
        lines.append(
            f"Joint Module 3x3 convs (theta_g2 + theta_g1, width {joint_width}): "
            f"{joint_3x3_macs / 1e9:.3f} GMACs = "
            f"{joint_3x3_macs / backbone_macs:.2f} x the backbone "
            f"({backbone_macs / 1e9:.3f} GMACs); their cost is proportional to "
            f"model.joint_module.width."
        )
    return "\n".join(lines)


def summarize_config(
    cfg: Config, *, num_ids: int = 576, num_classes: list[int] | None = None
) -> str:
    """:func:`summarize` of the network that ``cfg`` describes (``anet-tf summary``)."""
    return summarize(cfg, num_ids=num_ids, num_classes=num_classes)
