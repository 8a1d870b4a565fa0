"""The Python API: load a trained model and embed images, in a notebook or a service.

::

    import anet_tf

    model = anet_tf.load("runs/demo")          # a run folder, checkpoint or SavedModel
    vectors = model.embed(["a.jpg", "b.jpg"])  # float32 [2, D], L2-normalised
    attrs = model.predict_attributes(["a.jpg"])
    attrs["color"].labels, attrs["color"].probs

:func:`load` takes what the command line takes: a run folder or a checkpoint (as
``evaluate --run`` / ``--checkpoint``: the run's ``checkpoints/best``, else its
newest complete checkpoint; the dataset at the run's ``data.root`` gives the
attribute class names) or an exported SavedModel (as ``embed --model``: a version
folder, or a model base folder whose highest version is used).

Both kinds compute what ``anet-tf embed`` computes: the run's network is wrapped in
the serving module the export writes (:class:`anet_tf.export.saved_model.AnetServing`),
a SavedModel is called through its own signatures, so encoded files are decoded,
resized and normalised by the evaluation pipeline's functions inside the graph.
Images may be file paths, encoded bytes (JPEG, PNG, GIF, BMP, WebP) or RGB arrays
[H, W, 3] (uint8, or float in [0, 255]; any size, resized as a file would be).
An image that cannot be read or decoded raises :class:`ImageError` naming it and
the reason, in the words ``anet-tf embed`` uses when it skips one.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from anet_tf.search.errors import SearchError
from anet_tf.search.serving import outputs_to_numpy

__all__ = ["AttributePrediction", "ImageError", "Predictor", "load"]


class ImageError(SearchError):
    """Images that could not be read or decoded.

    Attributes:
        failed: ``(image, reason)`` for each, in input order; ``image`` is the path
            given, or ``images[i]`` for bytes and arrays.
    """

    def __init__(self, failed: list[tuple[str, str]]):
        self.failed = failed
        lines = [f"{image}: {reason}" for image, reason in failed]
        super().__init__("; ".join(lines))


@dataclass
class AttributePrediction:
    """One attribute's predictions for a batch of images.

    Attributes:
        classes: the class names, index = class id.
        labels: the top-1 class name of each image, str [N].
        probs: the softmax probabilities, float32 [N, len(classes)].
    """

    classes: list[str]
    labels: np.ndarray
    probs: np.ndarray


class _RunServing:
    """A run's network in the export's serving module, called as the SavedModel's
    signatures are called."""

    def __init__(self, source: str):
        from anet_tf.export.saved_model import build_serving_module
        from anet_tf.training.run_checkpoints import load_trained

        net, cfg, dataset = load_trained(source)
        self.module = build_serving_module(net, cfg, dataset)
        self.net = net
        self.config = cfg
        self.attribute_names = self.module.attribute_names
        self.attribute_classes = self.module.attribute_classes
        self.embedding_dim = self.module.embedding_dim

    def predict_bytes(self, contents: Sequence[bytes]) -> dict[str, np.ndarray]:
        import tensorflow as tf

        return outputs_to_numpy(self.module.serve_bytes(tf.constant(list(contents), tf.string)))

    def predict_pixels(self, pixels: np.ndarray) -> dict[str, np.ndarray]:
        import tensorflow as tf

        return outputs_to_numpy(self.module.serve_images(tf.constant(pixels, tf.float32)))


class _SavedModelServing:
    """An exported SavedModel: ``serving_default`` for files, ``serve_images`` for
    pixels."""

    def __init__(self, path: str):
        from anet_tf.export.saved_model import SIGNATURE_IMAGES
        from anet_tf.export.saved_model import saved_model_config
        from anet_tf.search.serving import ServingModel

        self.serving = ServingModel(path)
        self.net = self.serving._loaded
        self._pixels = self.net.signatures[SIGNATURE_IMAGES]
        self.config = saved_model_config(self.serving.path)
        self.attribute_names = self.serving.attribute_names
        self.attribute_classes = self.serving.attribute_classes
        self.embedding_dim = self.serving.embedding_dim

    def predict_bytes(self, contents: Sequence[bytes]) -> dict[str, np.ndarray]:
        return self.serving.predict_bytes(contents)

    def predict_pixels(self, pixels: np.ndarray) -> dict[str, np.ndarray]:
        import tensorflow as tf

        from anet_tf.export.saved_model import INPUT_IMAGES

        return outputs_to_numpy(self._pixels(**{INPUT_IMAGES: tf.constant(pixels, tf.float32)}))


def _is_saved_model(path: str) -> bool:
    from anet_tf.search.serving import resolve_model_dir

    try:
        resolve_model_dir(path)
    except SearchError:
        return False
    return True


def load(path: str | os.PathLike) -> Predictor:
    """The model of a run folder, a checkpoint or an exported SavedModel.

    Args:
        path: a run folder (``anet-tf fit --out``), a checkpoint folder or its
            ``net.weights.h5``, or a SavedModel (version or model base folder).

    Raises:
        FileNotFoundError: nothing at ``path``, or a folder that is none of these.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such run folder, checkpoint or SavedModel")
    if os.path.isdir(path) and _is_saved_model(path):
        return Predictor(_SavedModelServing(path), path)
    return Predictor(_RunServing(path), path)


class Predictor:
    """A trained model that embeds images and predicts their attributes
    (:func:`load` makes one).

    Attributes:
        path: what was loaded.
        model: the Keras network (run folder or checkpoint) or the loaded
            SavedModel object (``tf.saved_model.load``).
        config: the :class:`anet_tf.config.Config` the model was trained with.
        attribute_names: the attributes it predicts (none for the baseline).
        attribute_classes: each attribute's class names.
        embedding_dim: the length of an embedding.
    """

    def __init__(self, serving, path: str):
        self._serving = serving
        self.path = path
        self.model = serving.net
        self.config = serving.config
        self.attribute_names: list[str] = list(serving.attribute_names)
        self.attribute_classes: list[list[str]] = [
            list(c) for c in serving.attribute_classes
        ]
        self.embedding_dim = int(serving.embedding_dim)

    def embed(self, images, batch_size: int = 32) -> np.ndarray:
        """The embeddings (the config's test feature, ``eval.feature``,
        L2-normalised) of ``images``, float32 [N, embedding_dim], in input order.

        Args:
            images: a path, encoded bytes or an RGB array, or a list of them.
            batch_size: images per call of the network.

        Raises:
            ImageError: an image cannot be read or decoded (all such are named).
        """
        from anet_tf.export.saved_model import EMBEDDING

        out = self._run(images, batch_size)
        return out[EMBEDDING].astype(np.float32)

    def predict_attributes(
        self, images, batch_size: int = 32
    ) -> dict[str, AttributePrediction]:
        """Each attribute's top-1 class name and probabilities for ``images``
        (the same arguments and errors as :meth:`embed`)."""
        from anet_tf.export.saved_model import label_key
        from anet_tf.export.saved_model import probs_key

        out = self._run(images, batch_size)
        return {
            name: AttributePrediction(
                classes=classes,
                labels=out[label_key(name)].astype(str),
                probs=out[probs_key(name)].astype(np.float32),
            )
            for name, classes in zip(
                self.attribute_names, self.attribute_classes, strict=True
            )
        }

    # ------------------------------------------------------------------ batching

    def _run(self, images, batch_size: int) -> dict[str, np.ndarray]:
        if batch_size < 1:
            raise ValueError(
                f"batch_size must be >= 1. Received: batch_size={batch_size}"
            )
        items = _as_items(images)
        failed: list[tuple[int, str]] = []
        results: list[dict | None] = [None] * len(items)
        for start in range(0, len(items), batch_size):
            chunk = list(range(start, min(start + batch_size, len(items))))
            self._run_chunk(items, chunk, results, failed)
        if failed:
            raise ImageError(
                [(_describe(items[i], i), reason) for i, reason in sorted(failed)]
            )
        return self._stack(results)

    def _run_chunk(self, items, chunk, results, failed) -> None:
        from anet_tf.search.embed import read_image_files

        encoded = []
        by_shape: dict[tuple, list[int]] = {}
        for i in chunk:
            item = items[i]
            if isinstance(item, np.ndarray):
                reason = _pixels_problem(item)
                if reason:
                    failed.append((i, reason))
                else:
                    by_shape.setdefault(item.shape, []).append(i)
                continue
            if isinstance(item, str):
                data = read_image_files([item])[0]
                if isinstance(data, str):
                    failed.append((i, data))
                    continue
                item = data
            encoded.append((i, item))
        for group in by_shape.values():  # one call per size
            out = self._serving.predict_pixels(np.stack([items[i] for i in group]))
            for row, i in enumerate(group):
                results[i] = _row(out, row)
        if encoded:
            self._run_encoded(encoded, results, failed)

    def _run_encoded(self, encoded, results, failed) -> None:
        """One request for the batch; when it fails (an image that does not
        decode), one per image, so exactly the bad ones are named."""
        import tensorflow as tf

        from anet_tf.search.embed import decode_failure

        try:
            out = self._serving.predict_bytes([data for _, data in encoded])
        except tf.errors.InvalidArgumentError:
            for i, data in encoded:
                try:
                    results[i] = _row(self._serving.predict_bytes([data]), 0)
                except tf.errors.InvalidArgumentError as exc:
                    failed.append((i, decode_failure(exc)))
            return
        for row, (i, _) in enumerate(encoded):
            results[i] = _row(out, row)

    def _stack(self, results: list[dict]) -> dict[str, np.ndarray]:
        from anet_tf.export.saved_model import EMBEDDING
        from anet_tf.export.saved_model import label_key
        from anet_tf.export.saved_model import probs_key

        if not results:
            out = {EMBEDDING: np.zeros((0, self.embedding_dim), np.float32)}
            for name, classes in zip(
                self.attribute_names, self.attribute_classes, strict=True
            ):
                out[probs_key(name)] = np.zeros((0, len(classes)), np.float32)
                out[label_key(name)] = np.zeros(0, dtype=str)
            return out
        return {key: np.stack([r[key] for r in results]) for key in results[0]}


def _as_items(images) -> list[Any]:
    """A list of paths (str), encoded images (bytes) and arrays."""
    single = isinstance(images, (str, bytes, bytearray, os.PathLike)) or (
        isinstance(images, np.ndarray) and images.ndim == 3
    )
    if single:
        images = [images]
    elif isinstance(images, np.ndarray) and images.ndim == 4:
        images = list(images)
    items = []
    for i, image in enumerate(images):
        if isinstance(image, os.PathLike):
            image = os.fspath(image)
        if isinstance(image, (bytes, bytearray)):
            image = bytes(image)
        elif not isinstance(image, (str, np.ndarray)):
            try:
                image = np.asarray(image)  # e.g. a PIL image
            except Exception:  # noqa: BLE001 - said below, naming the item
                image = None
            if image is None or image.dtype == object:
                raise TypeError(
                    f"images[{i}]: give a file path, encoded image bytes or an RGB "
                    f"array [H, W, 3]. Received: {type(images[i]).__name__}"
                )
        items.append(image)
    return items


def _pixels_problem(array: np.ndarray) -> str | None:
    if array.ndim != 3 or array.shape[-1] != 3:
        return f"an RGB image is an array [H, W, 3], got shape {list(array.shape)}"
    if min(array.shape[:2]) < 1:
        return f"the image is empty (shape {list(array.shape)})"
    if not (
        np.issubdtype(array.dtype, np.integer)
        or np.issubdtype(array.dtype, np.floating)
    ):
        return f"pixels must be numbers, got dtype {array.dtype}"
    if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
        return "the pixels contain NaN or Inf; send values in [0, 255]"
    return None


def _describe(item, i: int) -> str:
    return item if isinstance(item, str) else f"images[{i}]"


def _row(out: dict[str, np.ndarray], row: int) -> dict[str, np.ndarray]:
    return {key: value[row] for key, value in out.items()}
