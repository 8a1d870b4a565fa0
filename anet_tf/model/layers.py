"""Custom layers of ANet: IBN-a normalisation and the heads of section 3.

Every layer keeps its constructor arguments as attributes, returns them from
``get_config`` and is registered under the ``anet_tf`` package, so a model saved as
``.keras`` reloads without ``custom_objects``.

The heads use the paper's symbols: ``F`` backbone feature map, ``A_i`` attribute
feature maps, ``a_i`` attribute features, ``G``/``g`` the unified attribute map and its
pooled vector, ``G_reid`` the distilled map, ``J`` the joint map, ``f``/``j`` the ReID
features.

Classifiers are plain ``Dense`` layers *without bias* (logits = W x), as in the
Bag-of-Tricks classifier the paper follows; the FC layers of eq. (1), (3) and (8)
have a bias (``W x + b``), as the equations write.
"""

from __future__ import annotations

import keras
from keras import ops

from anet_tf.model.names import ATTRIBUTE_BRANCHES

# PyTorch defaults, so converted IBN-Net / ImageNet statistics behave identically:
# torch momentum 0.1 updates running = 0.9 running + 0.1 batch, Keras momentum 0.9.
BN_EPSILON = 1e-5
BN_MOMENTUM = 0.9



def _channels(input_shape, layer_name: str) -> int:
    if len(input_shape) != 4 or input_shape[-1] is None:
        raise ValueError(
            f"{layer_name} expects a [batch, height, width, channels] feature map with a "
            f"known channel count. Received: input_shape={tuple(input_shape)}"
        )
    return int(input_shape[-1])


@keras.saving.register_keras_serializable(package="anet_tf")
class InstanceNormalization(keras.layers.Layer):
    """Instance normalisation of a channels-last map (Ulyanov et al. 2016).

    Normalises every (sample, channel) over height and width with the biased variance
    and then applies a per-channel affine transform: the same computation as
    ``torch.nn.InstanceNorm2d(c, affine=True)`` (no running statistics, so training
    and inference compute the same thing). Built from ``mean``/``rsqrt`` only so that
    it converts to TFLite and ONNX without custom ops. Statistics are computed in
    float32 under mixed precision.

    Args:
        epsilon: added to the variance (1e-5, PyTorch's default).
        center: learn the shift beta.
        scale: learn the scale gamma.
    """

    def __init__(self, epsilon=BN_EPSILON, center=True, scale=True, **kwargs):
        super().__init__(**kwargs)
        self.epsilon = epsilon
        self.center = center
        self.scale = scale

    def build(self, input_shape):
        c = _channels(input_shape, self.__class__.__name__)
        self.gamma = (
            self.add_weight(shape=(c,), initializer="ones", name="gamma")
            if self.scale
            else None
        )
        self.beta = (
            self.add_weight(shape=(c,), initializer="zeros", name="beta")
            if self.center
            else None
        )

    def call(self, x):
        x32 = ops.cast(x, "float32")
        mean, variance = ops.moments(x32, axes=[1, 2], keepdims=True)
        y = (x32 - mean) * ops.rsqrt(variance + self.epsilon)
        if self.gamma is not None:
            y = y * ops.cast(self.gamma, "float32")
        if self.beta is not None:
            y = y + ops.cast(self.beta, "float32")
        return ops.cast(y, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(epsilon=self.epsilon, center=self.center, scale=self.scale)
        return config


@keras.saving.register_keras_serializable(package="anet_tf")
class IBN(keras.layers.Layer):
    """IBN-a normalisation (Pan et al., ECCV 2018).

    InstanceNorm (affine) on the first ``int(c * ratio)`` channels and BatchNorm on the
    remaining ones, concatenated in that order: the ``IBN`` module of the official
    IBN-Net code, whose parameters are ``IN.{weight,bias}`` and
    ``BN.{weight,bias,running_mean,running_var}``. The sub-layers are
    ``instance_norm`` and ``batch_norm``. The BatchNorm part follows the usual Keras
    rule: it uses its moving statistics when called with ``training=False`` *or* when
    the layer (or a model holding it) is not trainable.

    Args:
        ratio: fraction of channels that are instance-normalised (0.5 in IBN-a).
        epsilon: of both normalisations (1e-5).
        momentum: of the BatchNorm moving statistics (0.9, PyTorch's 0.1).
    """

    def __init__(self, ratio=0.5, epsilon=BN_EPSILON, momentum=BN_MOMENTUM, **kwargs):
        super().__init__(**kwargs)
        if not 0.0 < ratio < 1.0:
            raise ValueError(f"IBN ratio must be in (0, 1). Received: ratio={ratio}")
        self.ratio = ratio
        self.epsilon = epsilon
        self.momentum = momentum
        self.half = None
        self.instance_norm = InstanceNormalization(epsilon=epsilon, name="IN")
        self.batch_norm = keras.layers.BatchNormalization(
            epsilon=epsilon, momentum=momentum, name="BN"
        )

    def build(self, input_shape):
        c = _channels(input_shape, self.__class__.__name__)
        half = int(c * self.ratio)
        if not 0 < half < c:
            raise ValueError(
                f"IBN with ratio={self.ratio} on {c} channels leaves one side empty; "
                f"use at least 2 channels. Received: input_shape={tuple(input_shape)}"
            )
        self.half = half
        prefix = tuple(input_shape[:-1])
        self.instance_norm.build(prefix + (half,))
        self.batch_norm.build(prefix + (c - half,))

    def call(self, x, training=None):
        x_in = self.instance_norm(x[..., : self.half])
        x_bn = self.batch_norm(x[..., self.half :], training=training)
        return ops.concatenate([x_in, x_bn], axis=-1)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(ratio=self.ratio, epsilon=self.epsilon, momentum=self.momentum)
        return config


@keras.saving.register_keras_serializable(package="anet_tf")
class ConvBNReLU(keras.layers.Layer):
    """Convolution (no bias, stride 1, same padding), BatchNorm and ReLU.

    The theta blocks of the Joint Module: theta(x) = ReLU(BN(W x)), eq. (5)-(6).

    Args:
        filters: output channels.
        kernel_size: 1 for theta_A, 3 for theta_g1 and theta_g2.
    """

    def __init__(self, filters, kernel_size, **kwargs):
        super().__init__(**kwargs)
        if filters <= 0 or kernel_size <= 0:
            raise ValueError(
                f"ConvBNReLU needs positive filters and kernel_size. Received: "
                f"filters={filters}, kernel_size={kernel_size}"
            )
        self.filters = filters
        self.kernel_size = kernel_size
        self.conv = keras.layers.Conv2D(
            filters, kernel_size, padding="same", use_bias=False, name="conv"
        )
        self.bn = keras.layers.BatchNormalization(
            epsilon=BN_EPSILON, momentum=BN_MOMENTUM, name="bn"
        )

    def build(self, input_shape):
        _channels(input_shape, self.__class__.__name__)
        self.conv.build(input_shape)
        self.bn.build(tuple(input_shape[:-1]) + (self.filters,))

    def call(self, x, training=None):
        return ops.relu(self.bn(self.conv(x), training=training))

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.filters,)

    def get_config(self):
        config = super().get_config()
        config.update(filters=self.filters, kernel_size=self.kernel_size)
        return config


@keras.saving.register_keras_serializable(package="anet_tf")
class SEAttention(keras.layers.Layer):
    """Channel attention of an attribute branch: A_i = F * Att_i(F), eq. (2).

    Att_i is a Squeeze-and-Excitation block (Hu et al.; section 4.2): GAP -> FC(c/r)
    -> ReLU -> FC(c) -> sigmoid, giving one weight in (0, 1) per channel, so
    Att_i is in R^c as the paper states. The paper calls the module "spatial and
    channel attention" but specifies SE, which is channel-only; we follow SE.

    Args:
        reduction: r, the SE reduction ratio (16). The hidden width is
            ``max(1, c // r)``.
    """

    def __init__(self, reduction=16, **kwargs):
        super().__init__(**kwargs)
        if reduction <= 0:
            raise ValueError(
                f"SE reduction must be positive. Received: reduction={reduction}"
            )
        self.reduction = reduction

    def build(self, input_shape):
        c = _channels(input_shape, self.__class__.__name__)
        self.squeeze = keras.layers.Dense(
            max(1, c // self.reduction), activation="relu", name="fc1"
        )
        self.excite = keras.layers.Dense(c, activation="sigmoid", name="fc2")
        self.squeeze.build((input_shape[0], c))
        self.excite.build((input_shape[0], max(1, c // self.reduction)))

    def call(self, F):
        att = self.excite(self.squeeze(ops.mean(F, axis=[1, 2])))
        return F * att[:, None, None, :]

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(reduction=self.reduction)
        return config


POOLINGS = ("avg", "gem")
NECKS = ("none", "bnneck")
CLASSIFIERS = ("linear", "circle")


@keras.saving.register_keras_serializable(package="anet_tf")
class GeneralizedMeanPooling(keras.layers.Layer):
    """Generalized-mean (GeM) pooling with a learnable exponent (Radenovic et al.,
    TPAMI 2019), FastReID's ``GeneralizedMeanPoolingP``.

    y_c = (mean over positions of max(x, eps) ** p) ** (1 / p), one p for all
    channels, learned; p = 1 is average pooling and p -> inf max pooling. Computed
    in float32 and relative to each channel's maximum, so ``x ** p`` cannot overflow
    (``x ** 3`` of a float16 map overflows easily, of a float32 one above 7e12).

    Args:
        p: initial exponent (3 in FastReID).
        eps: lower clip of the map, so a fractional power of 0 has a gradient.

    Returns:
        ``[B, C]``.
    """

    def __init__(self, p=3.0, eps=1e-6, **kwargs):
        super().__init__(**kwargs)
        if not p > 0:
            raise ValueError(f"GeM needs p > 0. Received: p={p}")
        self.p_init = float(p)
        self.eps = float(eps)

    def build(self, input_shape):
        _channels(input_shape, self.__class__.__name__)
        self.p = self.add_weight(
            name="p",
            shape=(),
            initializer=keras.initializers.Constant(self.p_init),
            dtype="float32",
        )

    def call(self, x):
        p = ops.cast(self.p, "float32")
        x = ops.maximum(ops.cast(x, "float32"), self.eps)
        # (mean x^p)^(1/p) = m (mean (x/m)^p)^(1/p) for any m > 0: dividing by each
        # channel's maximum keeps x^p from overflowing float32 where a map's values
        # are large (1e13 cubed is already inf); the value does not depend on m, so
        # its gradient does not either.
        m = ops.stop_gradient(ops.max(x, axis=[1, 2], keepdims=True))
        pooled = ops.mean(ops.power(x / m, p), axis=[1, 2])
        return ops.cast(m[:, 0, 0, :] * ops.power(pooled, 1.0 / p), self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[-1])

    def get_config(self):
        config = super().get_config()
        config.update(p=self.p_init, eps=self.eps)
        return config


@keras.saving.register_keras_serializable(package="anet_tf")
class ReidHead(keras.layers.Layer):
    """Embedding and identity classifier on a feature map: eq. (1) and eq. (8).

    The paper's head (the defaults): feature = W GAP(X) + b (``units`` = s_f for
    X = F, s_j for X = J) and logits = W_c feature (a bias-free Dense, see the module
    docstring). The feature is returned before any normalisation; evaluation
    L2-normalises it.

    The parts of FastReID's strong baseline (``model.head``), each a switch:

    * ``pooling="gem"``: :class:`GeneralizedMeanPooling` instead of GAP.
    * ``units=0``: no FC; the feature is the pooled map itself (c-dimensional),
      FastReID's ``EMBEDDING_DIM: 0``.
    * ``neck="bnneck"``: BatchNormalization without a learned shift (FastReID freezes
      the BNNeck's bias at 0) after the feature; the returned feature is the one after
      it, which both the triplet loss and the test use (``NECK_FEAT: after``), and
      the classifier sees it too.
    * ``classifier="circle"``: the logits are cosine similarities between the
      L2-normalised feature and the L2-normalised class weights, in [-1, 1];
      CircleSoftmax's margins and scale need the labels, so the identity loss applies
      them (:func:`anet_tf.losses.circle_logits`).

    Args:
        units: dimension of the feature (s_f or s_j); 0 = no FC.
        num_classes: number of training identities.
        pooling: avg | gem.
        gem_p: initial p of GeM.
        neck: none | bnneck.
        classifier: linear | circle.

    Returns:
        ``(feature, logits)``.
    """

    def __init__(
        self,
        units,
        num_classes,
        pooling="avg",
        gem_p=3.0,
        neck="none",
        classifier="linear",
        **kwargs,
    ):
        super().__init__(**kwargs)
        if units < 0 or num_classes <= 0:
            raise ValueError(
                f"ReidHead needs units >= 0 (0: no FC) and positive num_classes. "
                f"Received: units={units}, num_classes={num_classes}"
            )
        for arg, value, allowed in (
            ("pooling", pooling, POOLINGS),
            ("neck", neck, NECKS),
            ("classifier", classifier, CLASSIFIERS),
        ):
            if value not in allowed:
                raise ValueError(
                    f"{arg} must be one of {allowed}. Received: {arg}={value!r}"
                )
        self.units = units
        self.num_classes = num_classes
        self.pooling = pooling
        self.gem_p = float(gem_p)
        self.neck = neck
        self.classifier_kind = classifier
        self.pool = GeneralizedMeanPooling(gem_p, name="gem") if pooling == "gem" else None
        self.fc = keras.layers.Dense(units, name="fc") if units else None
        self.bnneck = (
            keras.layers.BatchNormalization(
                center=False, epsilon=BN_EPSILON, momentum=BN_MOMENTUM, name="bnneck"
            )
            if neck == "bnneck"
            else None
        )
        self.classifier = keras.layers.Dense(
            num_classes, use_bias=False, name="classifier"
        )

    def _feature_size(self, channels: int) -> int:
        return self.units or channels

    def build(self, input_shape):
        c = _channels(input_shape, self.__class__.__name__)
        if self.pool is not None:
            self.pool.build(input_shape)
        if self.fc is not None:
            self.fc.build((input_shape[0], c))
        d = self._feature_size(c)
        if self.bnneck is not None:
            self.bnneck.build((input_shape[0], d))
        self.classifier.build((input_shape[0], d))

    def call(self, x, training=None):
        pooled = self.pool(x) if self.pool is not None else ops.mean(x, axis=[1, 2])
        feature = self.fc(pooled) if self.fc is not None else pooled
        if self.bnneck is not None:
            feature = self.bnneck(feature, training=training)
        if self.classifier_kind == "circle":
            w = self.classifier.kernel
            unit = ops.cast(_l2_normalize(feature, axis=-1), w.dtype)
            logits = ops.matmul(unit, _l2_normalize(w, axis=0))
            return feature, ops.cast(logits, feature.dtype)
        return feature, self.classifier(feature)

    def compute_output_shape(self, input_shape):
        batch = input_shape[0]
        d = self._feature_size(input_shape[-1])
        return (batch, d), (batch, self.num_classes)

    def get_config(self):
        config = super().get_config()
        config.update(
            units=self.units,
            num_classes=self.num_classes,
            pooling=self.pooling,
            gem_p=self.gem_p,
            neck=self.neck,
            classifier=self.classifier_kind,
        )
        return config


def _l2_normalize(x, axis):
    """x / max(||x||, 1e-12) along ``axis`` (PyTorch's ``F.normalize``)."""
    norm = ops.sqrt(ops.sum(ops.square(x), axis=axis, keepdims=True))
    return x / ops.maximum(norm, 1e-12)


@keras.saving.register_keras_serializable(package="anet_tf")
class AttributeBranch(keras.layers.Layer):
    """One attribute branch of VAN (Figure 2): eq. (2) and eq. (3) plus a classifier.

    ``attention="se"`` (the paper): A_i = F * Att_i(F) with :class:`SEAttention` and
    a_i = W GAP(A_i) + b. ``attention="fc"`` (the "fc" row of Table 2): no attention,
    a_i = W GAP(F) + b; the paper does not say what the Joint Module receives in that
    case, and we pass A_i = F (so the Joint Module sums n copies of F).

    Args:
        units: s_a, dimension of a_i (128 in the paper).
        num_classes: m_i, classes of this attribute.
        attention: se | fc.
        reduction: SE reduction ratio (ignored for ``fc``).
        neck: none (the paper: logits = W_c a_i) | bnneck (logits = W_c BN(a_i), a
            BatchNormalization without learned shift between a_i and the classifier,
            as the BNNeck of the ReID heads; a_i itself is returned before it).

    Returns:
        ``(A_i, a_i, logits)``.
    """

    def __init__(
        self, units, num_classes, attention="se", reduction=16, neck="none", **kwargs
    ):
        super().__init__(**kwargs)
        if attention not in ATTRIBUTE_BRANCHES:
            raise ValueError(
                f"attention must be one of {ATTRIBUTE_BRANCHES}. Received: attention={attention!r}"
            )
        if units <= 0 or num_classes <= 0:
            raise ValueError(
                f"AttributeBranch needs positive units and num_classes. Received: "
                f"units={units}, num_classes={num_classes}"
            )
        if neck not in NECKS:
            raise ValueError(f"neck must be one of {NECKS}. Received: neck={neck!r}")
        self.units = units
        self.num_classes = num_classes
        self.attention = attention
        self.reduction = reduction
        self.neck = neck
        self.se = SEAttention(reduction, name="se") if attention == "se" else None
        self.fc = keras.layers.Dense(units, name="fc")
        self.bnneck = (
            keras.layers.BatchNormalization(
                center=False, epsilon=BN_EPSILON, momentum=BN_MOMENTUM, name="bnneck"
            )
            if neck == "bnneck"
            else None
        )
        self.classifier = keras.layers.Dense(
            num_classes, use_bias=False, name="classifier"
        )

    def build(self, input_shape):
        c = _channels(input_shape, self.__class__.__name__)
        if self.se is not None:
            self.se.build(input_shape)
        self.fc.build((input_shape[0], c))
        if self.bnneck is not None:
            self.bnneck.build((input_shape[0], self.units))
        self.classifier.build((input_shape[0], self.units))

    def call(self, F, training=None):
        A = self.se(F) if self.se is not None else F
        a = self.fc(ops.mean(A, axis=[1, 2]))
        read = a if self.bnneck is None else self.bnneck(a, training=training)
        return A, a, self.classifier(read)

    def compute_output_shape(self, input_shape):
        batch = input_shape[0]
        return tuple(input_shape), (batch, self.units), (batch, self.num_classes)

    def get_config(self):
        config = super().get_config()
        config.update(
            units=self.units,
            num_classes=self.num_classes,
            attention=self.attention,
            reduction=self.reduction,
            neck=self.neck,
        )
        return config


@keras.saving.register_keras_serializable(package="anet_tf")
class JointModule(keras.layers.Layer):
    """Joint Module (section 3.2, Figure 3): eq. (5), (6) and (7).

    G = S + theta_A(S) with S = sum_i A_i (eq. 5), theta_A a 1x1 conv-BN-ReLU c -> c;
    g = GAP(G) (the input of the attribute-pattern triplet loss);
    G_reid = theta_g1(theta_g2(G)) (eq. 6), 3x3 conv-BN-ReLU blocks
    theta_g2: c -> width and theta_g1: width -> c;
    J = F + G_reid (eq. 7).
    j = W_j GAP(J) + b_j (eq. 8) is a :class:`ReidHead` applied to J, the same head
    as eq. (1).

    The two 3x3 convolutions at c = 2048 cost more than the whole ResNet-50 backbone;
    ``width`` (``model.joint_module.width``) narrows the inner width to trade
    accuracy for cost. ``None`` keeps the paper's W_g1, W_g2 in R^{c x c}.

    Args:
        width: inner width of G_reid: channels, a fraction below 1 of c, or None
            for c.

    Call args:
        inputs: ``[F, A_1, ..., A_n]``, all of the same shape [B, h, w, c].

    Returns:
        ``(G, g, G_reid, J)``.
    """

    def __init__(self, width=None, **kwargs):
        super().__init__(**kwargs)
        if width is not None and width <= 0:
            raise ValueError(
                f"JointModule width must be positive or None. Received: width={width}"
            )
        self.width = width

    def inner_width(self, c: int) -> int:
        """The 3x3 convolutions' inner width for ``c`` channels of F: ``c`` when
        width is None, ``round(width * c)`` (at least 1) for a fraction below 1,
        else ``width`` channels."""
        if self.width is None:
            return c
        if self.width < 1:
            return max(1, round(self.width * c))
        return int(self.width)

    def build(self, input_shape):
        shapes = [tuple(s) for s in input_shape]
        if len(shapes) < 2:
            raise ValueError(
                f"JointModule expects [F, A_1, ..., A_n] with n >= 1. Received "
                f"{len(shapes)} input(s)"
            )
        c = _channels(shapes[0], self.__class__.__name__)
        for i, s in enumerate(shapes[1:], start=1):
            if s[1:] != shapes[0][1:]:
                raise ValueError(
                    f"JointModule: A_{i} has shape {s}, F has shape {shapes[0]}; "
                    f"they must match"
                )
        width = self.inner_width(c)
        self.theta_A = ConvBNReLU(c, 1, name="theta_A")
        self.theta_g2 = ConvBNReLU(width, 3, name="theta_g2")
        self.theta_g1 = ConvBNReLU(c, 3, name="theta_g1")
        self.theta_A.build(shapes[0])
        self.theta_g2.build(shapes[0])
        self.theta_g1.build(shapes[0][:-1] + (width,))

    def call(self, inputs, training=None):
        F, *A = inputs
        S = A[0]
        for A_i in A[1:]:
            S = S + A_i
        G = S + self.theta_A(S, training=training)
        g = ops.mean(G, axis=[1, 2])
        G_reid = self.theta_g1(self.theta_g2(G, training=training), training=training)
        J = F + G_reid
        return G, g, G_reid, J

    def compute_output_shape(self, input_shape):
        shape = tuple(input_shape[0])
        return shape, (shape[0], shape[-1]), shape, shape

    def get_config(self):
        config = super().get_config()
        config.update(width=self.width)
        return config
