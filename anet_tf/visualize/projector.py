"""The TensorBoard projector export: embeddings with thumbnail sprites and
attributes as metadata."""

from __future__ import annotations

import math
import os

import numpy as np

from anet_tf.visualize.common import VisualizeError
from anet_tf.visualize.common import load_rgb

SPRITE_MAX = 8192  # TensorBoard's limit on each side of the sprite image


def sprite_layout(n: int, thumb_size: int | None = None) -> tuple[int, int]:
    """(images per side of the sprite grid, thumbnail side in pixels) for ``n``
    images: at most 64 px, and the sprite within TensorBoard's 8192 px."""
    side = max(1, math.ceil(math.sqrt(n)))
    limit = SPRITE_MAX // side
    thumb = min(thumb_size or 64, limit)
    if thumb < 1:
        raise VisualizeError(
            f"{n} images do not fit a {SPRITE_MAX} px sprite; lower --max-images"
        )
    return side, thumb


def _tsv_cell(value) -> str:
    return str(value).replace("\t", " ").replace("\n", " ").replace("\r", " ")


def export_projector(
    emb,
    log_dir: str,
    *,
    max_images: int = 10000,
    thumb_size: int | None = None,
    seed: int = 0,
) -> dict:
    """Write ``emb`` for TensorBoard's projector (``tensorboard --logdir LOG_DIR``,
    tab PROJECTOR).

    Files: the embeddings as a TF checkpoint (``embedding.ckpt-1.*``),
    ``metadata.tsv`` (path, pid, camid, per attribute the predicted class and the
    known class), ``sprite.png`` (thumbnails in row-major order) and
    ``projector_config.pbtxt``.

    Args:
        emb: the embeddings (``anet-tf embed`` output, an
            :class:`anet_tf.search.embeddings.Embeddings`).
        log_dir: the TensorBoard log folder (created).
        max_images: a larger set is sampled down to this many (seeded).
        thumb_size: thumbnail side in pixels (default 64, less when the sprite
            would exceed 8192 px).

    Returns:
        ``{"count", "thumb_size", "metadata", "sprite", "config", "checkpoint"}``.
    """
    import tensorflow as tf
    from PIL import Image
    from tensorboard.plugins import projector

    n = len(emb)
    if n == 0:
        raise VisualizeError("no embeddings to export")
    keep = np.arange(n)
    if n > max_images:
        keep = np.sort(np.random.default_rng(seed).choice(n, max_images, replace=False))
    os.makedirs(log_dir, exist_ok=True)
    side, thumb = sprite_layout(len(keep), thumb_size)
    sprite = Image.new("RGB", (side * thumb, side * thumb), (255, 255, 255))
    for k, i in enumerate(keep):
        im = Image.fromarray(load_rgb(emb.paths[i])).resize(
            (thumb, thumb), Image.BILINEAR
        )
        sprite.paste(im, ((k % side) * thumb, (k // side) * thumb))
    sprite_path = os.path.join(log_dir, "sprite.png")
    sprite.save(sprite_path)
    metadata_path = os.path.join(log_dir, "metadata.tsv")
    names = emb.attribute_names
    with open(metadata_path, "w", encoding="utf-8") as fh:
        header = ["path", "pid", "camid", *names, *[f"{a}_known" for a in names]]
        fh.write("\t".join(header) + "\n")
        for i in keep:
            cells = [emb.paths[i], int(emb.pids[i]), int(emb.camids[i])]
            cells += [emb.predicted[a][i] for a in names]
            cells += [emb.known[a][i] or "?" for a in names]
            fh.write("\t".join(_tsv_cell(c) for c in cells) + "\n")
    variable = tf.Variable(
        np.asarray(emb.embedding[keep], np.float32), name="embedding"
    )
    checkpoint = tf.train.Checkpoint(embedding=variable)
    ckpt_path = checkpoint.save(os.path.join(log_dir, "embedding.ckpt"))
    config = projector.ProjectorConfig()
    info = config.embeddings.add()
    info.tensor_name = "embedding/.ATTRIBUTES/VARIABLE_VALUE"
    info.metadata_path = "metadata.tsv"
    info.sprite.image_path = "sprite.png"
    info.sprite.single_image_dim.extend([thumb, thumb])
    projector.visualize_embeddings(log_dir, config)
    return {
        "count": int(len(keep)),
        "thumb_size": thumb,
        "metadata": metadata_path,
        "sprite": sprite_path,
        "config": os.path.join(log_dir, "projector_config.pbtxt"),
        "checkpoint": ckpt_path,
    }
