"""The activation maps of a trained network: the unified attribute map G (eq. 5)
and the distilled map G_reid (eq. 6) of each image, from a forward pass of a
functional ANet network on images preprocessed as in evaluation (the picture is
:func:`anet_tf.visualize.plot_activation_maps`)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


class ActivationMapError(ValueError):
    """Activation maps that cannot be computed (no Joint Module, an unreadable
    image), said for people."""


def map_heat(feature_map: np.ndarray) -> np.ndarray:
    """A feature map [h, w, c] -> its per-position L2 norm over channels, scaled to
    [0, 1] (min-max over the map; a constant map gives zeros).

    The paper shows the maps without saying how channels are reduced; the L2 norm
    is non-negative (a channel mean of post-ReLU maps would do as well) and keeps
    where the map is strong.
    """
    heat = np.sqrt(np.sum(np.square(np.asarray(feature_map, np.float64)), axis=-1))
    lo, hi = float(heat.min()), float(heat.max())
    if hi - lo < 1e-12:
        return np.zeros_like(heat, np.float32)
    return ((heat - lo) / (hi - lo)).astype(np.float32)


def _upsample(heat: np.ndarray, height: int, width: int) -> np.ndarray:
    from PIL import Image

    image = Image.fromarray(heat.astype(np.float32), mode="F")
    return np.asarray(image.resize((width, height), Image.BILINEAR), np.float32)


def activation_maps(net, image_paths: Sequence[str], image_size: Sequence[int]) -> dict:
    """G and G_reid of each image under a functional ANet network.

    Images go through :func:`anet_tf.data.decode.read_image` and
    :func:`~anet_tf.data.preprocessing.preprocess_for_inference`, as in evaluation.

    Returns:
        ``{"pixels": uint8 [N, H, W, 3] (the resized network input),
        "G": float32 [N, H, W], "G_reid": float32 [N, H, W]}``, the maps as
        :func:`map_heat`, upsampled bilinearly to the input size.

    Raises:
        ActivationMapError: the network has no Joint Module (variant baseline or van).
    """
    import tensorflow as tf

    from anet_tf.data.decode import read_image
    from anet_tf.data.preprocessing import preprocess_for_inference
    from anet_tf.data.preprocessing import resize

    missing = [k for k in ("G", "G_reid") if k not in net.output]
    if missing:
        raise ActivationMapError(
            f"activation maps need the Joint Module's G and G_reid (model.variant "
            f"anet); this network gives {sorted(net.output)}"
        )
    h, w = (int(s) for s in image_size)
    pixels, inputs = [], []
    for path in image_paths:
        try:
            image = read_image(path)
        except (tf.errors.InvalidArgumentError, tf.errors.NotFoundError) as exc:
            raise ActivationMapError(
                f"{path}: cannot read the image ({exc.message.splitlines()[0]})"
            ) from None
        pixels.append(
            np.clip(np.round(resize(image, (h, w)).numpy()), 0, 255).astype(np.uint8)
        )
        inputs.append(preprocess_for_inference(image, (h, w)))
    out = net(tf.stack(inputs), training=False)
    result = {"pixels": np.stack(pixels)}
    for key in ("G", "G_reid"):
        maps = np.asarray(out[key], np.float32)
        result[key] = np.stack([_upsample(map_heat(m), h, w) for m in maps])
    return result
