"""ResNet backbones (section 3.1, 4.2): image [B, H, W, 3] -> F [B, h, w, c].

All backbones are channels-last functional ``keras.Model`` objects named
``"backbone"`` (so training stage 2 can freeze them with
``model.get_layer("backbone").trainable = False``), without the final pooling layer
(section 4.2). Inputs are float32 images already normalised with the ImageNet
mean/std (RGB).

Layer names follow the PyTorch state-dict keys with ``.`` replaced by ``_``
(``layer1_0_conv1`` <-> ``layer1.0.conv1``), which is what the checkpoint converter in
:mod:`anet_tf.model.weights` relies on.

Two block layouts exist and both are exact ports of their pretrained sources:

* torch layout (``resnet50_ibn_a``, ``resnet18_ibn_a``, ``resnet18``): the official
  IBN-Net / torchvision code. A bottleneck strides in its 3x3 convolution ("ResNet
  v1.5") and stride-2 3x3 convolutions pad one pixel on every side as PyTorch does
  (explicit ``ZeroPadding2D`` + ``valid``; Keras ``same`` would pad only right/bottom).
* Keras layout (``resnet50``): ``keras.applications.ResNet50``, which strides in the
  first 1x1 convolution of a bottleneck, so Keras' own ImageNet weights load exactly
  (:func:`anet_tf.model.weights.load_keras_resnet50_imagenet`). Its convolutions
  carry biases in Keras; ours do not, the loader folds each bias into the following
  BatchNorm's moving mean (exact).

Every convolution is bias-free and followed by BatchNorm with epsilon 1e-5 and
momentum 0.9 (PyTorch's defaults). IBN-a replaces the first normalisation of every
block in stages 1-3 with :class:`~anet_tf.model.layers.IBN`; stage 4 and the stem
keep BatchNorm, as in the official ``resnet50_ibn_a`` / ``resnet18_ibn_a``.

Two options come from FastReID's ResNet (JDAI-CV/fast-reid,
``fastreid/modeling/backbones/resnet.py``), so its checkpoints
(:func:`anet_tf.model.weights.convert_fastreid_checkpoint`) see the maps they were
trained on:

* ``stem="fastreid"``: the stem's max-pool has no padding and rounds up
  (``nn.MaxPool2d(3, 2, ceil_mode=True)``) where the IBN-Net release pads one pixel
  (``stem="ibn"``, the default). The convolution and BatchNorm of the stem are the
  same, so are their weights and layer names.
* ``non_local=True``: the non-local blocks of FastReID's ``WITH_NL``
  (:class:`NonLocal`, layers ``nl{stage}_{j}`` <-> ``NL_{stage}.{j}``) after the last
  2 blocks of stage 2 and the last 3 of stage 3 (:func:`non_local_positions`).
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Sequence

import keras
from keras import ops

from anet_tf.model.layers import BN_EPSILON
from anet_tf.model.layers import BN_MOMENTUM
from anet_tf.model.layers import IBN

STEMS = ("ibn", "fastreid")
# Non-local blocks per stage of FastReID's ResNet-50 (``nl_layers_per_stage['50x']``).
NON_LOCAL_BLOCKS = (0, 2, 3, 0)


def _bn(name: str) -> keras.layers.BatchNormalization:
    return keras.layers.BatchNormalization(
        epsilon=BN_EPSILON, momentum=BN_MOMENTUM, name=name
    )


def _norm1(ibn: bool, name: str) -> keras.layers.Layer:
    return IBN(ratio=0.5, name=name) if ibn else _bn(name)


def _conv3x3(x, filters: int, stride: int, name: str):
    """3x3 convolution padded like PyTorch's ``padding=1`` for any stride."""
    if stride == 1:
        return keras.layers.Conv2D(
            filters, 3, padding="same", use_bias=False, name=name
        )(x)
    x = keras.layers.ZeroPadding2D(1, name=f"{name}_pad")(x)
    return keras.layers.Conv2D(filters, 3, strides=stride, use_bias=False, name=name)(x)


def _shortcut(x, filters: int, stride: int, prefix: str):
    if stride == 1 and x.shape[-1] == filters:
        return x
    x = keras.layers.Conv2D(
        filters, 1, strides=stride, use_bias=False, name=f"{prefix}_downsample_0"
    )(x)
    return _bn(f"{prefix}_downsample_1")(x)


def _basic_block(x, planes: int, stride: int, ibn: bool, prefix: str, _stride_in_1x1):
    shortcut = _shortcut(x, planes, stride, prefix)
    y = _conv3x3(x, planes, stride, f"{prefix}_conv1")
    y = _norm1(ibn, f"{prefix}_bn1")(y)
    y = keras.layers.ReLU(name=f"{prefix}_relu1")(y)
    y = _conv3x3(y, planes, 1, f"{prefix}_conv2")
    y = _bn(f"{prefix}_bn2")(y)
    y = keras.layers.Add(name=f"{prefix}_add")([y, shortcut])
    return keras.layers.ReLU(name=f"{prefix}_out")(y)


def _bottleneck(x, planes: int, stride: int, ibn: bool, prefix: str, stride_in_1x1):
    out = planes * 4
    stride_1x1, stride_3x3 = (stride, 1) if stride_in_1x1 else (1, stride)
    shortcut = _shortcut(x, out, stride, prefix)
    y = keras.layers.Conv2D(
        planes, 1, strides=stride_1x1, use_bias=False, name=f"{prefix}_conv1"
    )(x)
    y = _norm1(ibn, f"{prefix}_bn1")(y)
    y = keras.layers.ReLU(name=f"{prefix}_relu1")(y)
    y = _conv3x3(y, planes, stride_3x3, f"{prefix}_conv2")
    y = _bn(f"{prefix}_bn2")(y)
    y = keras.layers.ReLU(name=f"{prefix}_relu2")(y)
    y = keras.layers.Conv2D(out, 1, use_bias=False, name=f"{prefix}_conv3")(y)
    y = _bn(f"{prefix}_bn3")(y)
    y = keras.layers.Add(name=f"{prefix}_add")([y, shortcut])
    return keras.layers.ReLU(name=f"{prefix}_out")(y)


@keras.saving.register_keras_serializable(package="anet_tf")
class NonLocal(keras.layers.Layer):
    """Non-local block (Wang et al., CVPR 2018) in the form of FastReID's ``Non_local``.

    With x [B, h, w, C], N = h * w positions and ``inter`` channels:
    ``theta, phi, g`` = 1x1 convolutions (with bias) of x to [B, N, inter],
    ``f = theta phi^T / N`` (dot product divided by N, no softmax),
    ``y = f g`` and ``z = BN(conv1x1(y)) + x``, the BatchNorm's gamma and beta starting
    at 0 so that a new block is the identity and leaves a pretrained network
    unchanged. The sub-layers ``g``, ``theta``, ``phi``, ``W_0`` (convolution) and
    ``W_1`` (BatchNorm, epsilon 1e-5) are FastReID's modules of the same names.

    ``y`` is computed as ``theta (phi^T g) / N`` when N > inter and the size is known
    when the graph is built (the same product, N * inter**2 instead of N**2 * inter
    multiply-adds). Under mixed precision the attention, ``W_0`` and ``W_1`` run in
    float32 and only z is cast back: y is cubic in x, so with |x| of a few tens
    (inputs a pretrained network gives) it leaves float16's range (65504), and
    ``W_1``'s zero gamma times inf would make a new block NaN instead of the identity.

    Args:
        inter_channels: channels of theta, phi and g; None = C // 2 (the paper's,
            and FastReID's ``in_channels // reduc_ratio`` of September to December
            2020). FastReID's code otherwise, from v0.3 (December 2020) to c9bc3ce
            (July 2024), computes ``reduc_ratio // reduc_ratio`` = 1, so its WITH_NL
            checkpoints have ``inter_channels=1``; the converter reads the count
            from the checkpoint.
    """

    def __init__(self, inter_channels=None, **kwargs):
        super().__init__(**kwargs)
        if inter_channels is not None and int(inter_channels) < 1:
            raise ValueError(
                f"inter_channels must be >= 1 or None. Received: "
                f"inter_channels={inter_channels}"
            )
        self.inter_channels = None if inter_channels is None else int(inter_channels)
        self.inter = None
        self.g = None
        self.theta = None
        self.phi = None
        self.W_0 = None
        self.W_1 = None

    def build(self, input_shape):
        if len(input_shape) != 4 or input_shape[-1] is None:
            raise ValueError(
                f"NonLocal expects a [batch, height, width, channels] map with a known "
                f"channel count. Received: input_shape={tuple(input_shape)}"
            )
        c = int(input_shape[-1])
        inter = self.inter_channels or c // 2
        if inter < 1:
            raise ValueError(f"NonLocal on {c} channel(s) leaves no inter channel")
        self.inter = inter

        def conv(filters, name, dtype=None):
            # 1x1, "same" = "valid" here; "same" lets the FLOP summary count it.
            return keras.layers.Conv2D(
                filters,
                1,
                padding="same",
                use_bias=True,
                name=name,
                dtype=dtype or self.dtype_policy,
            )

        self.g = conv(inter, "g")
        self.theta = conv(inter, "theta")
        self.phi = conv(inter, "phi")
        self.W_0 = conv(c, "W_0", "float32")
        self.W_1 = keras.layers.BatchNormalization(
            epsilon=BN_EPSILON,
            momentum=BN_MOMENTUM,
            gamma_initializer="zeros",
            beta_initializer="zeros",
            name="W_1",
            dtype="float32",
        )
        for layer in (self.g, self.theta, self.phi):
            layer.build(input_shape)
        inner = tuple(input_shape[:-1]) + (inter,)
        self.W_0.build(inner)
        self.W_1.build(tuple(input_shape))

    def call(self, x, training=None):
        shape = ops.shape(x)
        h, w = shape[1], shape[2]
        inter = self.inter

        def flat(t):  # [B, h, w, inter] -> [B, N, inter], float32
            return ops.reshape(ops.cast(t, "float32"), (-1, h * w, inter))

        theta, phi, g = flat(self.theta(x)), flat(self.phi(x)), flat(self.g(x))
        static_n = (
            x.shape[1] * x.shape[2]
            if x.shape[1] is not None and x.shape[2] is not None
            else None
        )
        n = ops.cast(h * w, "float32")
        if static_n is not None and static_n > inter:
            context = ops.matmul(ops.transpose(phi, (0, 2, 1)), g) / n
            y = ops.matmul(theta, context)
        else:
            f = ops.matmul(theta, ops.transpose(phi, (0, 2, 1))) / n
            y = ops.matmul(f, g)
        w_y = self.W_1(self.W_0(ops.reshape(y, (-1, h, w, inter))), training=training)
        return ops.cast(w_y + ops.cast(x, "float32"), self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(inter_channels=self.inter_channels)
        return config


def non_local_positions(repeats: Sequence[int]) -> dict[int, tuple[int, ...]]:
    """The blocks that a non-local block follows, per stage (1-based stages).

    FastReID's rule (``ResNet._build_nonlocal``): stage k with n_k blocks gets m_k
    non-local blocks (:data:`NON_LOCAL_BLOCKS` = [0, 2, 3, 0], ResNet-50's), placed
    after blocks ``sorted(n_k - (i + 1) for i in range(m_k))``, i.e. after each of the
    last m_k blocks. ResNet-50 [3, 4, 6, 3]: after blocks 2, 3 of stage 2 and 3, 4, 5
    of stage 3. FastReID gives ResNet-18 none; here m_k is clipped to n_k, so
    ResNet-18 [2, 2, 2, 2] gets one after each block of stages 2 and 3.

    Returns:
        stage -> 0-based block indices, in order; stages without one are left out.
    """
    positions = {}
    for stage, (n, m) in enumerate(zip(repeats, NON_LOCAL_BLOCKS, strict=True), 1):
        m = min(m, n)
        if m:
            positions[stage] = tuple(sorted(n - (i + 1) for i in range(m)))
    return positions


# long: 24 lines of docstring; 60 lines of code.
def build_resnet(
    *,
    depth: int,
    ibn: bool,
    base_width: int = 64,
    last_stride: int = 1,
    stride_in_1x1: bool = False,
    input_shape: tuple = (None, None, 3),
    stem: str = "ibn",
    non_local: bool = False,
    non_local_inter: int | None = None,
) -> keras.Model:
    """A ResNet-18 or ResNet-50 feature extractor, optionally with IBN-a.

    Args:
        depth: 18 (basic blocks [2, 2, 2, 2]) or 50 (bottlenecks [3, 4, 6, 3]).
        ibn: IBN-a in the first normalisation of every block of stages 1-3.
        base_width: channels of the stem and of stage 1 (64 = the standard ResNet);
            stage k has ``base_width * 2**(k-1)`` planes.
        last_stride: stride of stage 4 (1 doubles the resolution of F: 1/16 of the
            input instead of 1/32).
        stride_in_1x1: bottlenecks stride in the first 1x1 convolution (Keras
            layout) instead of the 3x3 (torch layout).
        input_shape: (H, W, 3); a fixed size gives static shapes (summary, TFLite).
        stem: ibn (max-pool 3x3/2 with padding 1, the IBN-Net release and
            torchvision) | fastreid (no padding, ceil mode: FastReID's ResNet). The
            stem's weights are the same.
        non_local: FastReID's non-local blocks (:class:`NonLocal`, layers
            ``nl{stage}_{j}``) where :func:`non_local_positions` puts them.
        non_local_inter: their inner channel count; None = C // 2 (see
            :class:`NonLocal`: FastReID's current code uses 1).

    Returns:
        ``keras.Model`` named ``"backbone"``: [B, H, W, 3] -> F [B, h, w, c] with
        c = 8 * base_width (ResNet-18) or 32 * base_width (ResNet-50).
    """
    blocks = {18: (_basic_block, (2, 2, 2, 2)), 50: (_bottleneck, (3, 4, 6, 3))}
    if depth not in blocks:
        raise ValueError(f"depth must be 18 or 50. Received: depth={depth}")
    if base_width < 2:
        raise ValueError(f"base_width must be >= 2. Received: base_width={base_width}")
    if last_stride not in (1, 2):
        raise ValueError(
            f"last_stride must be 1 or 2. Received: last_stride={last_stride}"
        )
    if stem not in STEMS:
        raise ValueError(f"stem must be one of {STEMS}. Received: stem={stem!r}")
    block, repeats = blocks[depth]
    nl_after = non_local_positions(repeats) if non_local else {}

    # === Functional Model ===
    inputs = keras.Input(shape=tuple(input_shape), name="image")
    x = keras.layers.ZeroPadding2D(3, name="conv1_pad")(inputs)
    x = keras.layers.Conv2D(base_width, 7, strides=2, use_bias=False, name="conv1")(x)
    x = _bn("bn1")(x)
    x = keras.layers.ReLU(name="relu")(x)
    # Zero padding equals PyTorch's -inf padding here: the input is post-ReLU.
    if stem == "ibn":
        x = keras.layers.ZeroPadding2D(1, name="maxpool_pad")(x)
    else:
        # Ceil mode gives ceil((H - 3) / 2) + 1 rows: for even H the last window
        # hangs one row over the bottom edge, for odd H none does. One zero row and
        # column at the bottom/right give that count for either parity (the extra row
        # is read only when H is even), for any input size.
        x = keras.layers.ZeroPadding2D(((0, 1), (0, 1)), name="maxpool_pad")(x)
    x = keras.layers.MaxPooling2D(3, strides=2, name="maxpool")(x)
    for stage, (n, stride) in enumerate(
        zip(repeats, (1, 2, 2, last_stride), strict=True), start=1
    ):
        planes = base_width * 2 ** (stage - 1)
        after = nl_after.get(stage, ())
        for i in range(n):
            x = block(
                x,
                planes,
                stride if i == 0 else 1,
                ibn and stage < 4,
                f"layer{stage}_{i}",
                stride_in_1x1,
            )
            if i in after:
                name = f"nl{stage}_{after.index(i)}"
                x = NonLocal(non_local_inter, name=name)(x)
    return keras.Model(inputs, x, name="backbone")


def resnet50_ibn_a(**options):
    """ResNet-50-IBN-a (torch layout), the paper's backbone (section 4.2).

    ``options``: the keyword arguments of :func:`build_resnet` other than depth,
    ibn and layout (base_width, last_stride, input_shape, stem, non_local,
    non_local_inter)."""
    return build_resnet(depth=50, ibn=True, **options)


def resnet50(**options):
    """Plain ResNet-50 in the Keras layout (stride in the 1x1), for Keras' weights.

    ``options``: the keyword arguments of :func:`build_resnet` other than depth,
    ibn and layout (base_width, last_stride, input_shape, stem, non_local,
    non_local_inter)."""
    return build_resnet(depth=50, ibn=False, stride_in_1x1=True, **options)


def resnet18_ibn_a(**options):
    """ResNet-18-IBN-a (torch layout), the CPU default with a reduced base_width.

    ``options``: the keyword arguments of :func:`build_resnet` other than depth,
    ibn and layout (base_width, last_stride, input_shape, stem, non_local,
    non_local_inter)."""
    return build_resnet(depth=18, ibn=True, **options)


def resnet18(**options):
    """Plain ResNet-18 (torch layout).

    ``options``: the keyword arguments of :func:`build_resnet` other than depth,
    ibn and layout (base_width, last_stride, input_shape, stem, non_local,
    non_local_inter)."""
    return build_resnet(depth=18, ibn=False, **options)


BACKBONES: dict[str, Callable[..., keras.Model]] = {
    "resnet50_ibn_a": resnet50_ibn_a,
    "resnet50": resnet50,
    "resnet18_ibn_a": resnet18_ibn_a,
    "resnet18": resnet18,
}


def build_backbone(
    name: str,
    *,
    base_width=64,
    last_stride=1,
    input_shape=(None, None, 3),
    stem="ibn",
    non_local=False,
    non_local_inter=None,
) -> keras.Model:
    """Build a backbone by name (``stem``, ``non_local``: see :func:`build_resnet`).

    Raises:
        KeyError: unknown name; the message lists the valid ones.
    """
    if name not in BACKBONES:
        raise KeyError(
            f"unknown backbone {name!r}; valid backbones: {', '.join(BACKBONES)}"
        )
    return BACKBONES[name](
        base_width=base_width,
        last_stride=last_stride,
        input_shape=input_shape,
        stem=stem,
        non_local=non_local,
        non_local_inter=non_local_inter,
    )
