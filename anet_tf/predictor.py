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
[H, W, 3] (any size, resized as a file would be), one or a list of them, or a batch
array [N, H, W, 3]. An array holds pixel levels on the 0-255 scale: uint8, or any
integer or float dtype whose values lie in [0, 255] (converted to float32 first);
NaN or Inf (also a float64 value too large for float32) and values outside [0, 255]
(a 16-bit image, say) are refused, not rescaled. An image that cannot be read,
decoded or used raises :class:`ImageError` naming it and the reason, in the words
``anet-tf embed`` uses when it skips one.
"""

from __future__ import annotations

import numbers
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from anet_tf.io import committed_folder
from anet_tf.search.errors import SearchError
from anet_tf.search.serving import outputs_to_numpy

__all__ = ["AttributePrediction", "ImageError", "Predictor", "load"]


class ImageError(SearchError):
    """Images that could not be read, decoded or used (one line: the first
    :data:`SHOWN` of them; ``failed`` has all).

    Attributes:
        failed: ``(image, reason)`` for each, in input order; ``image`` is the path
            given, ``images[i]`` for bytes and arrays, or ``images`` where the
            argument as a whole is wrong (an array that is neither [H, W, 3] nor
            [N, H, W, 3]).
    """

    SHOWN = 3

    def __init__(self, failed: list[tuple[str, str]]):
        self.failed = failed
        lines = [f"{image}: {reason}" for image, reason in failed[: self.SHOWN]]
        if len(failed) > self.SHOWN:
            lines.append(f"... ({len(failed)} images in all)")
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
        from anet_tf.training.run_checkpoints import Run

        run = Run(source)
        net, cfg = run.network(), run.config  # no dataset read: the run describes it
        self.module = build_serving_module(net, cfg, run.description())
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
    # A SavedModel version folder being replaced by a new export is read from its
    # last complete version, kept aside meanwhile.
    if not os.path.exists(committed_folder(path)):
        raise FileNotFoundError(f"{path}: no such run folder, checkpoint or SavedModel")
    if os.path.isdir(committed_folder(path)) and _is_saved_model(path):
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
            images: a path, encoded bytes or an RGB array [H, W, 3], a list of
                them, or a batch array [N, H, W, 3] (N may be 0: an empty result).
                An array holds pixel levels in [0, 255]: uint8, or any integer or
                float dtype with values in that range (converted to float32 before
                it is checked).
            batch_size: images per call of the network.

        Raises:
            ImageError: an image cannot be read, decoded or used (all such are
                named): an array not [H, W, 3] or [N, H, W, 3], an empty one, NaN
                or Inf pixels (as float32), values outside [0, 255], a dtype that
                is not a number.
            TypeError: ``images`` (or an item) is none of these (None, a number).
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
                pixels, reason = _pixels(item)
                if reason:
                    failed.append((i, reason))
                else:
                    by_shape.setdefault(pixels.shape, []).append(i)
                    items[i] = pixels  # float32, checked
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


_GIVE = (
    "give a file path, encoded image bytes, an RGB array [H, W, 3], a batch array "
    "[N, H, W, 3], or a list of these"
)
NON_FINITE = "the pixels contain NaN or Inf; send values in [0, 255]"


def _as_items(images) -> list[Any]:
    """A list of paths (str), encoded images (bytes) and arrays.

    Raises:
        TypeError: ``images`` or an item is not an image (one line).
        ImageError: an array that is neither [H, W, 3] nor [N, H, W, 3], or a
            batch of empty images (one line, for the whole argument).
    """
    if isinstance(images, (str, bytes, bytearray, os.PathLike)):
        images = [images]
    elif not isinstance(images, (list, tuple, np.ndarray)):
        if isinstance(images, (numbers.Number, np.generic)):
            raise TypeError(f"images: {_GIVE}. Received: {type(images).__name__}")
        if hasattr(images, "__array__") or hasattr(images, "__array_interface__"):
            images = np.asarray(images)  # e.g. a PIL image, a tensor
        elif hasattr(images, "__iter__") and not isinstance(images, dict):
            images = list(images)  # e.g. a generator
        else:
            raise TypeError(f"images: {_GIVE}. Received: {type(images).__name__}")
    if isinstance(images, np.ndarray):
        images = _array_items(images)
    items = []
    for i, image in enumerate(images):
        if isinstance(image, os.PathLike):
            image = os.fspath(image)
        if isinstance(image, (bytes, bytearray)):
            image = bytes(image)
        elif isinstance(image, str):
            image = str(image)  # np.str_ too
        elif not isinstance(image, np.ndarray):
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


def _array_items(array: np.ndarray) -> list[np.ndarray]:
    """The images of an array given as ``images``: one [H, W, 3], or the N of a
    batch [N, H, W, 3]; anything else is one ImageError for the argument."""
    shape = list(array.shape)
    if array.dtype.kind in "OUS":  # paths or encoded files, in an array
        if array.ndim == 1:
            return list(array)
        raise TypeError(f"images: {_GIVE}. Received: an array {shape} of {array.dtype}")
    if array.ndim == 3:
        return [array]
    if array.ndim != 4 or shape[-1] != 3:
        reason = (
            "an array is one RGB image [H, W, 3] or a batch [N, H, W, 3], "
            f"got shape {shape}"
        )
        raise ImageError([("images", reason)])
    if len(array) and min(shape[1:3]) < 1:
        raise ImageError([("images", f"the images are empty (shape {shape})")])
    return list(array)


def _pixels(array: np.ndarray) -> tuple[np.ndarray | None, str | None]:
    """``(float32 pixels, None)`` of an RGB image array, or ``(None, why not)``.

    The rule: shape [H, W, 3], H and W >= 1; an integer or float dtype; the values,
    once float32 (so a float64 too large for float32 is Inf), finite and in
    [0, 255].
    """
    shape = list(array.shape)
    if array.ndim != 3 or shape[-1] != 3:
        return None, f"an RGB image is an array [H, W, 3], got shape {shape}"
    if min(shape[:2]) < 1:
        return None, f"the image is empty (shape {shape})"
    if not (
        np.issubdtype(array.dtype, np.integer)
        or np.issubdtype(array.dtype, np.floating)
    ):
        return None, f"pixels must be numbers, got dtype {array.dtype}"
    with np.errstate(over="ignore", invalid="ignore"):
        pixels = np.asarray(array, np.float32)
    if not np.isfinite(pixels).all():
        return None, NON_FINITE
    low, high = float(pixels.min()), float(pixels.max())
    if low < 0 or high > 255:
        return None, (
            f"pixels are levels in [0, 255] (uint8, or any integer or float dtype on "
            f"that scale), got values in [{low:g}, {high:g}]; clip or rescale them"
        )
    return pixels, None


def _describe(item, i: int) -> str:
    return item if isinstance(item, str) else f"images[{i}]"


def _row(out: dict[str, np.ndarray], row: int) -> dict[str, np.ndarray]:
    return {key: value[row] for key, value in out.items()}
