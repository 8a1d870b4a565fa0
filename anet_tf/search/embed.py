"""The embedding loop: images through an exported SavedModel, in batches.

``anet-tf embed SRC --model SAVED_MODEL -o FILE.npz`` reads the images of a source
(:mod:`anet_tf.search.sources`) and runs them through the SavedModel's
``serving_default`` signature (:class:`~anet_tf.search.serving.ServingModel`: image
bytes in, as TF Serving receives them), so the embeddings are those the served
model gives. An image that cannot be read or decoded is reported by path and left
out; the others are processed. The result is an
:class:`~anet_tf.search.embeddings.Embeddings`, the ``.npz`` file of
:mod:`anet_tf.search.embeddings`; ``--per-track`` turns it into one row per track
(:func:`per_track`).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import re
import sys
from collections.abc import Callable
from collections.abc import Sequence

import numpy as np

from anet_tf.data.decode_errors import decoder_reason
from anet_tf.data.image_rules import EMPTY
from anet_tf.evaluation.tracks import aggregate_features
from anet_tf.evaluation.tracks import aggregate_probs
from anet_tf.evaluation.tracks import track_groups
from anet_tf.progress import Progress
from anet_tf.search.embeddings import Embeddings
from anet_tf.search.errors import SearchError
from anet_tf.search.serving import ServingModel
from anet_tf.search.sources import ImageList


def decode_failure(exc: Exception) -> str:
    """The reason inside a TensorFlow decode error, without the graph's wrapping
    (``Graph execution error:``, ``Detected at node ...``, the Python frames)."""
    message = getattr(exc, "message", None) or str(exc)
    match = re.search(r"cannot decode image [^:]*: ([^\n\]]+)", message)
    if match:
        return match.group(1).strip()
    return decoder_reason(message) or type(exc).__name__


def read_image_files(paths: Sequence[str]) -> list[bytes | str]:
    """Each file's bytes, or the reason it cannot be read."""
    out: list[bytes | str] = []
    for path in paths:
        try:
            with open(path, "rb") as fh:
                data = fh.read()
        except OSError as exc:
            out.append(exc.strerror or str(exc))
            continue
        out.append(data if data else EMPTY)
    return out


# long: 17 lines of docstring; the body is one loop (read, decode, batch, call, collect) whose error handling is per image.
def embed_images(
    model: ServingModel,
    images: ImageList,
    *,
    batch_size: int = 32,
    progress: bool = True,
    on_failure: Callable[[str, str], None] | None = None,
) -> Embeddings:
    """Embed ``images`` in batches through the model's ``serving_default``.

    The next batch's files are read while the model runs. A batch whose request
    fails (an image that does not decode) is retried image by image, so exactly the
    bad images are left out.

    Args:
        model: the SavedModel.
        images: what to embed.
        batch_size: images per request.
        progress: draw a progress bar on stderr.
        on_failure: called with (path, reason) for each image left out.

    Returns:
        The :class:`Embeddings` of the images that could be processed, in input
        order, with ``failed`` listing the others.
    """
    import tensorflow as tf

    if batch_size < 1:
        raise SearchError(f"batch_size must be >= 1. Received: batch_size={batch_size}")
    names = model.attribute_names
    n = len(images)
    kept: list[int] = []
    chunks: dict[str, list[np.ndarray]] = {}
    failed: list[tuple[int, str]] = []

    def fail(i: int, reason: str) -> None:
        failed.append((i, reason))
        if on_failure is not None:
            on_failure(images.paths[i], reason)

    def keep(indices: list[int], out: dict) -> None:
        kept.extend(indices)
        for key, value in out.items():
            chunks.setdefault(key, []).append(value)

    bar = Progress(n, "embed", enabled=progress, stream=sys.stderr)
    starts = list(range(0, n, batch_size))
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(read_image_files, images.paths[0:batch_size]) if n else None
        for b, start in enumerate(starts):
            contents = pending.result()
            if b + 1 < len(starts):
                nxt = starts[b + 1]
                pending = pool.submit(read_image_files, images.paths[nxt : nxt + batch_size])
            ok = []
            for offset, data in enumerate(contents):
                if isinstance(data, str):
                    fail(start + offset, data)
                else:
                    ok.append((start + offset, data))
            if ok:
                try:
                    keep([i for i, _ in ok], model.predict_bytes([d for _, d in ok]))
                except tf.errors.InvalidArgumentError:
                    for i, data in ok:
                        try:
                            keep([i], model.predict_bytes([data]))
                        except tf.errors.InvalidArgumentError as exc:
                            fail(i, decode_failure(exc))
            bar.update(len(contents))
    bar.close()
    from anet_tf.export.saved_model import EMBEDDING
    from anet_tf.export.saved_model import label_key
    from anet_tf.export.saved_model import probs_key

    dim = model.embedding_dim
    stacked = {k: np.concatenate(v, axis=0) for k, v in chunks.items()}
    embedding = stacked.get(EMBEDDING, np.zeros((0, dim), np.float32)).astype(
        np.float32
    )
    probs = {}
    predicted = {}
    for name, classes in zip(names, model.attribute_classes, strict=True):
        probs[name] = stacked.get(
            probs_key(name), np.zeros((0, len(classes)), np.float32)
        )
        predicted[name] = stacked.get(label_key(name), np.zeros(0, dtype=str)).astype(
            str
        )
    order = np.asarray(kept, np.int64)
    known = {}
    for name in names:
        if name in images.known:
            column = np.asarray(images.known[name], dtype=str)
            known[name] = column[order] if len(order) else np.zeros(0, dtype=str)
        else:
            known[name] = np.full(len(order), "", dtype=str)
    return Embeddings(
        paths=[images.paths[i] for i in kept],
        embedding=embedding,
        attribute_names=list(names),
        attribute_classes=model.attribute_classes,
        probs=probs,
        predicted=predicted,
        known=known,
        pids=np.asarray(images.pids, np.int64)[order],
        camids=np.asarray(images.camids, np.int64)[order],
        model=model.info(),
        failed=[(images.paths[i], reason) for i, reason in sorted(failed)],
        source=images.source,
        times=np.asarray(images.times, np.int64)[order],
        track_ids=np.asarray(images.track_ids, dtype=str)[order]
        if len(order)
        else np.zeros(0, dtype=str),
    )


def per_track(emb: Embeddings) -> Embeddings:
    """One row per track of ``emb`` (``anet-tf embed --per-track``), tracks in the
    order of their first crop; an image without a track id is a track of its own.

    A row's embedding is the mean of its crops' L2-normalised embeddings,
    L2-normalised (:func:`~anet_tf.evaluation.tracks.aggregate_features`); its
    probabilities the mean of its crops' and its label their argmax; ``path``,
    ``pid``, ``camid`` and the known labels are its first crop's; ``time`` and
    ``time_last`` the earliest and latest known capture time; ``track_length`` its
    number of crops.

    Raises:
        SearchError: no image of ``emb`` has a track id.
    """
    if not any(emb.track_ids):
        raise SearchError(
            f"{emb.source or 'the images'}: --per-track needs track ids (a "
            f"'track_id' column in the manifest, or a dataset with tracks); none of "
            f"its {len(emb)} images has one"
        )
    groups = track_groups(emb.track_ids.tolist())
    first = emb.rows([g[0] for g in groups])
    times = np.asarray(emb.times, np.int64)
    spans = []
    for g in groups:
        known = times[g][times[g] >= 0]
        spans.append((known.min(), known.max()) if known.size else (-1, -1))
    probs = {a: aggregate_probs(p, groups) for a, p in emb.probs.items()}
    predicted = {
        a: np.asarray(classes, dtype=str)[probs[a].argmax(axis=1)]
        if len(groups) and len(classes)
        else first.predicted[a]
        for a, classes in zip(emb.attribute_names, emb.attribute_classes, strict=True)
    }
    return dataclasses.replace(
        first,
        embedding=aggregate_features(emb.embedding, groups),
        probs=probs,
        predicted=predicted,
        times=np.asarray([s for s, _ in spans], np.int64),
        times_last=np.asarray([e for _, e in spans], np.int64),
        track_lengths=np.asarray([len(g) for g in groups], np.int64),
        failed=list(emb.failed),
    )
