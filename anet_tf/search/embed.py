"""Embeddings and predicted attributes of images, computed by an exported SavedModel.

``anet-tf embed SRC --model SAVED_MODEL -o FILE.npz`` reads images from

* a folder: every JPEG, PNG, BMP, GIF or WebP file under it (recursively, sorted);
  a folder holding ``manifest.csv`` (the generic dataset format) is read as that
  manifest;
* a manifest ``.csv`` with a ``path`` column (relative paths are relative to the
  file's folder) and optionally ``vehicle_id``, ``camera_id``, ``split`` and one
  column per attribute holding known class names (the generic dataset manifest is
  one); ``--split`` keeps the rows of one split;
* a text file listing image paths, one per line (``#`` starts a comment);
* ``dataset:SPLIT``: a split (train | query | gallery) of the dataset that a config
  names (``--config/--set``, default: the config stored in the SavedModel),

and runs them through the SavedModel's ``serving_default`` signature (image bytes
in, as TF Serving receives them), so the embeddings are those the served model
gives. An image that cannot be read or decoded is reported by path and left out;
the others are processed.

The output file (NumPy ``.npz``; ``numpy.load(path)`` reads it, no pickles):

=======================  =================  ========================================
key                      array              meaning
=======================  =================  ========================================
``format``               str []             ``anet-tf-embeddings/1``
``model``                str []             JSON: path, fingerprint, embedding_dim,
                                            feature, dataset, attributes, ...
``source``               str []             the SRC argument
``path``                 bytes [N]          absolute image paths, UTF-8
``embedding``            float32 [N, D]     L2-normalised embeddings
``pid``, ``camid``       int64 [N]          vehicle and camera ids, -1 unknown
``attribute_names``      str [n]            the model's attributes
``<a>_classes``          str [m_a]          class names of attribute ``a``
``<a>_probs``            float32 [N, m_a]   predicted class probabilities
``<a>_label``            str [N]            predicted class (top-1)
``<a>_known``            str [N]            known class from the manifest or
                                            dataset, "" where unknown
``failed_path``          bytes [F]          images that could not be read, UTF-8
``failed_reason``        str [F]            why
=======================  =================  ========================================
"""

from __future__ import annotations

import concurrent.futures
import csv
import hashlib
import json
import os
import re
import sys
import time
from collections.abc import Callable
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import field

import numpy as np

FORMAT = "anet-tf-embeddings/1"
DATASET_PREFIX = "dataset:"
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")
MANIFEST = "manifest.csv"
UNKNOWN = -1
# Metadata keys that do not change what the model computes: a re-export of the
# same weights under another version number keeps its fingerprint.
_VOLATILE_METADATA = (
    "model_name",
    "version",
    "anet_tf_version",
    "tensorflow_version",
    "keras_version",
)
_MANIFEST_COLUMNS = ("path", "vehicle_id", "camera_id", "split")


class SearchError(ValueError):
    """Bad input to embed, index or search, said for people (what, where, what
    would be right)."""


# ------------------------------------------------------------------------ sources


@dataclass
class ImageList:
    """Images to embed, with what is known about them.

    Args:
        paths: absolute image paths.
        pids: vehicle ids, -1 unknown.
        camids: camera ids, -1 unknown.
        known: attribute name -> known class name per image ("" unknown).
        source: what the list was read from (for the output file).
    """

    paths: list[str]
    pids: np.ndarray
    camids: np.ndarray
    known: dict[str, list[str]] = field(default_factory=dict)
    source: str = ""

    def __len__(self) -> int:
        return len(self.paths)


def is_image_file(path: str) -> bool:
    return path.lower().endswith(IMAGE_EXTENSIONS)


def list_images(src: str, split: str | None = None) -> ImageList:
    """The images of a folder, manifest ``.csv``, text list or single image file.

    Args:
        src: the folder or file (see the module docstring).
        split: keep only the manifest rows of this split.

    Raises:
        SearchError: the source does not exist, lists no image, or a manifest is
            malformed (naming file and line).
    """
    if src.startswith(DATASET_PREFIX):
        raise SearchError(
            f"{src}: a dataset split is a source of `anet-tf embed`; embed it there "
            f"and give the file here (e.g. --query-embeddings FILE.npz)"
        )
    if os.path.isdir(src):
        manifest = os.path.join(src, MANIFEST)
        if os.path.isfile(manifest):
            return _read_manifest(manifest, split, source=src)
        if split is not None:
            raise SearchError(
                f"--split {split}: {src} is a plain image folder (no {MANIFEST}); "
                f"a split needs a manifest with a 'split' column"
            )
        paths = _walk_images(src)
        if not paths:
            raise SearchError(
                f"{src}: no image files ({', '.join(IMAGE_EXTENSIONS)}) found"
            )
        return _unlabelled(paths, src)
    if not os.path.exists(src) and is_image_file(src):
        # reported by path when it is read, beside the images that can be
        return _unlabelled([os.path.abspath(src)], src)
    if not os.path.exists(src):
        raise SearchError(
            f"{src}: no such file or folder (give an image folder, a manifest .csv, "
            f"a text file listing images, or {DATASET_PREFIX}SPLIT)"
        )
    if src.lower().endswith(".csv"):
        return _read_manifest(src, split, source=src)
    if split is not None:
        raise SearchError(f"--split {split}: only a manifest .csv has splits")
    if is_image_file(src):
        return _unlabelled([os.path.abspath(src)], src)
    return _read_list(src)


def dataset_images(dataset, split: str) -> ImageList:
    """The images of one split of a :class:`~anet_tf.data.records.ReidDataset`,
    with their ids, cameras and known attribute class names."""
    try:
        records = dataset.split(split)
    except KeyError as exc:
        raise SearchError(str(exc).strip("'\"")) from None
    if not records:
        raise SearchError(f"the {split} split of {dataset.root} has no images")
    known = {}
    for a, (name, classes) in enumerate(
        zip(dataset.attribute_names, dataset.attribute_classes, strict=True)
    ):
        known[name] = [
            classes[r.attributes[a]] if r.attributes[a] >= 0 else "" for r in records
        ]
    return ImageList(
        paths=[os.path.abspath(r.path) for r in records],
        pids=np.asarray([r.pid for r in records], np.int64),
        camids=np.asarray([r.camid for r in records], np.int64),
        known=known,
        source=f"{DATASET_PREFIX}{split} ({dataset.name} at {dataset.root})",
    )


def _unlabelled(paths: list[str], source: str) -> ImageList:
    n = len(paths)
    minus = np.full(n, UNKNOWN, np.int64)
    return ImageList(paths, minus, minus.copy(), {}, source)


def _walk_images(folder: str) -> list[str]:
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if is_image_file(name) and not name.startswith("."):
                found.append(os.path.abspath(os.path.join(dirpath, name)))
    return found


def _read_list(path: str) -> ImageList:
    base = os.path.dirname(os.path.abspath(path))
    paths = []
    try:
        with open(path, encoding="utf-8-sig") as fh:
            for line in fh:
                line = line.strip()
                if line and not line.startswith("#"):
                    paths.append(os.path.normpath(os.path.join(base, line)))
    except UnicodeDecodeError:
        raise SearchError(
            f"{path}: not a UTF-8 text list of image paths (give an image folder, "
            f"a manifest .csv, a text list or an image file)"
        ) from None
    if not paths:
        raise SearchError(f"{path}: lists no image paths")
    return _unlabelled(paths, path)


def _read_manifest(path: str, split: str | None, source: str) -> ImageList:
    base = os.path.dirname(os.path.abspath(path))
    with open(path, encoding="utf-8-sig", newline="") as fh:
        reader = csv.reader(fh)
        header = [h.strip() for h in next(reader, [])]
        if "path" not in header:
            raise SearchError(
                f"{path}:1: a manifest needs a 'path' column; the header is {header}"
            )
        if split is not None and "split" not in header:
            raise SearchError(
                f"{path}:1: --split {split}: the manifest has no 'split' column"
            )
        col = {h: i for i, h in enumerate(header)}
        attributes = [h for h in header if h and h not in _MANIFEST_COLUMNS]
        paths, pids, camids = [], [], []
        known: dict[str, list[str]] = {a: [] for a in attributes}
        for line, row in enumerate(reader, start=2):
            if not any(cell.strip() for cell in row):
                continue
            if len(row) != len(header):
                raise SearchError(
                    f"{path}:{line}: {len(row)} cells, the header has {len(header)}"
                )
            if split is not None and row[col["split"]].strip() != split:
                continue
            paths.append(os.path.normpath(os.path.join(base, row[col["path"]].strip())))
            pids.append(_int_cell(row, col, "vehicle_id", path, line))
            camids.append(_int_cell(row, col, "camera_id", path, line))
            for a in attributes:
                known[a].append(row[col[a]].strip())
    if not paths:
        where = f" in split {split!r}" if split is not None else ""
        raise SearchError(f"{path}: no images{where}")
    return ImageList(
        paths,
        np.asarray(pids, np.int64),
        np.asarray(camids, np.int64),
        known,
        source if split is None else f"{source} (split {split})",
    )


def _int_cell(row, col, name, path, line) -> int:
    if name not in col or not row[col[name]].strip():
        return UNKNOWN
    text = row[col[name]].strip()
    try:
        return int(text)
    except ValueError:
        raise SearchError(
            f"{path}:{line}: {name} must be an integer. Received: {text!r}"
        ) from None


# ------------------------------------------------------------------------- model


def resolve_model_dir(path: str) -> str:
    """The version folder of a SavedModel: ``path`` itself when it holds
    ``saved_model.pb``, else its highest numbered sub-folder (as TF Serving picks
    from a model base folder)."""
    if os.path.isfile(os.path.join(path, "saved_model.pb")):
        return os.path.abspath(path)
    versions = []
    if os.path.isdir(path):
        versions = [
            int(d)
            for d in os.listdir(path)
            if d.isdigit() and os.path.isfile(os.path.join(path, d, "saved_model.pb"))
        ]
    if not versions:
        raise SearchError(
            f"{path} is not a SavedModel: no saved_model.pb in it nor in a numbered "
            f"version folder under it (`anet-tf fit` writes RUN_DIR/export/anet/1)"
        )
    return os.path.abspath(os.path.join(path, str(max(versions))))


def model_fingerprint(saved_model_dir: str) -> str:
    """A short hash that changes when the model's weights or outputs change.

    It hashes ``variables/variables.index`` (which holds a CRC32C of every
    weight tensor) and the model's metadata without its name, version and library
    versions, so it is quick to compute for any model size and equal for
    re-exports of the same weights.
    """
    from anet_tf.export.saved_model import read_metadata

    digest = hashlib.sha256()
    index = os.path.join(saved_model_dir, "variables", "variables.index")
    try:
        with open(index, "rb") as fh:
            digest.update(fh.read())
    except OSError as exc:
        raise SearchError(
            f"{saved_model_dir}: cannot read the weights index: {exc}"
        ) from None
    metadata = {
        k: v
        for k, v in read_metadata(saved_model_dir).items()
        if k not in _VOLATILE_METADATA
    }
    digest.update(json.dumps(metadata, sort_keys=True).encode("utf-8"))
    return digest.hexdigest()[:16]


class ServingModel:
    """An exported anet-tf SavedModel called through ``serving_default``.

    Args:
        path: the version folder (``<base>/<model_name>/<version>``) or the model
            base folder (its highest version is used).
    """

    def __init__(self, path: str):
        from anet_tf.export.saved_model import SIGNATURE_BYTES
        from anet_tf.export.saved_model import read_metadata

        self.path = resolve_model_dir(path)
        try:
            self.metadata = read_metadata(self.path)
        except FileNotFoundError as exc:
            raise SearchError(str(exc)) from None
        self.fingerprint = model_fingerprint(self.path)
        import tensorflow as tf

        self._loaded = tf.saved_model.load(self.path)
        self._signature = self._loaded.signatures[SIGNATURE_BYTES]

    @property
    def attribute_names(self) -> list[str]:
        return [a["name"] for a in self.metadata["attributes"]]

    @property
    def attribute_classes(self) -> list[list[str]]:
        return [list(a["classes"]) for a in self.metadata["attributes"]]

    @property
    def embedding_dim(self) -> int:
        return int(self.metadata["embedding_dim"])

    @property
    def input_size(self) -> tuple[int, int]:
        h, w = self.metadata["input_size"]
        return int(h), int(w)

    def info(self) -> dict:
        """What an embeddings file and an index record about the model."""
        keys = ("model_name", "version", "dataset", "feature", "variant", "backbone")
        return {
            "path": self.path,
            "fingerprint": self.fingerprint,
            "embedding_dim": self.embedding_dim,
            **{k: self.metadata.get(k) for k in keys},
            "attributes": self.metadata["attributes"],
        }

    def predict_bytes(self, contents: Sequence[bytes]) -> dict[str, np.ndarray]:
        """Encoded images -> ``embedding`` [N, D], ``<a>_probs`` [N, m], ``<a>_label``
        (str [N]).

        Raises:
            tensorflow.errors.InvalidArgumentError: an image could not be decoded.
        """
        import tensorflow as tf

        from anet_tf.export.saved_model import INPUT_BYTES

        out = self._signature(**{INPUT_BYTES: tf.constant(list(contents), tf.string)})
        result = {}
        for key, value in out.items():
            value = value.numpy()
            if value.dtype == object:
                value = np.asarray([v.decode("utf-8") for v in value], dtype=str)
            result[key] = value
        return result


# -------------------------------------------------------------------- embeddings


@dataclass
class Embeddings:
    """What ``anet-tf embed`` computed (the ``.npz`` of the module docstring)."""

    paths: list[str]
    embedding: np.ndarray
    attribute_names: list[str]
    attribute_classes: list[list[str]]
    probs: dict[str, np.ndarray]
    predicted: dict[str, np.ndarray]
    known: dict[str, np.ndarray]
    pids: np.ndarray
    camids: np.ndarray
    model: dict
    failed: list[tuple[str, str]] = field(default_factory=list)
    source: str = ""

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def dim(self) -> int:
        return int(self.embedding.shape[1])


def _decode_error(exc: Exception) -> str:
    """The reason inside a TensorFlow decode error, without the graph's wrapping
    (``Graph execution error:``, ``Detected at node ...``, the Python frames)."""
    message = getattr(exc, "message", None) or str(exc)
    match = re.search(r"cannot decode image [^:]*: ([^\n\]]+)", message)
    if match:
        return match.group(1).strip()
    return decoder_reason(message) or type(exc).__name__


def decoder_reason(message: str) -> str | None:
    """The line of a TensorFlow error message that says what the decoder found
    (e.g. ``jpeg::Uncompress failed. Invalid JPEG data or crop window.``), or None."""
    for line in message.splitlines():
        text = re.sub(r"\{\{[^}]*\}\}", "", line).strip()
        if (
            not text
            or text.startswith(
                ("Graph execution error", "Detected at node", "File ", "[[", "<stack traces")
            )
            or text.endswith(" in <module>")
        ):
            continue
        return text[:200]
    return None


def _read_bytes(paths: Sequence[str]) -> list[bytes | str]:
    """Each file's bytes, or the reason it cannot be read."""
    out: list[bytes | str] = []
    for path in paths:
        try:
            with open(path, "rb") as fh:
                data = fh.read()
        except OSError as exc:
            out.append(exc.strerror or str(exc))
            continue
        out.append(data if data else "the file is empty")
    return out


class Progress:
    """A progress bar on stderr: redrawn in place on a terminal, one line per
    10 % otherwise (logs stay short)."""

    def __init__(self, total: int, label: str, enabled: bool = True, stream=None):
        self.total = max(total, 1)
        self.label = label
        self.enabled = enabled
        self.stream = stream or sys.stderr
        self.done = 0
        self.start = time.perf_counter()
        self._tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self._last_decile = -1

    def update(self, n: int) -> None:
        self.done += n
        if not self.enabled:
            return
        fraction = min(self.done / self.total, 1.0)
        elapsed = time.perf_counter() - self.start
        rate = self.done / elapsed if elapsed > 0 else 0.0
        eta = (self.total - self.done) / rate if rate > 0 else 0.0
        text = (
            f"{self.label} {self.done}/{self.total} [{'#' * int(30 * fraction):<30}] "
            f"{rate:.1f} img/s, {elapsed:.0f}s elapsed, ETA {eta:.0f}s"
        )
        if self._tty:
            self.stream.write("\r" + text)
            self.stream.flush()
        elif int(10 * fraction) > self._last_decile:
            self._last_decile = int(10 * fraction)
            self.stream.write(text + "\n")
            self.stream.flush()

    def close(self) -> None:
        if self.enabled and self._tty:
            self.stream.write("\n")
            self.stream.flush()


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

    bar = Progress(n, "embed", enabled=progress)
    starts = list(range(0, n, batch_size))
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(_read_bytes, images.paths[0:batch_size]) if n else None
        for b, start in enumerate(starts):
            contents = pending.result()
            if b + 1 < len(starts):
                nxt = starts[b + 1]
                pending = pool.submit(_read_bytes, images.paths[nxt : nxt + batch_size])
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
                            fail(i, _decode_error(exc))
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
    )


def unknown_known_labels(emb: Embeddings) -> dict[str, list[str]]:
    """Known labels that are not among the model's classes, per attribute (they
    match no filter)."""
    out = {}
    for name, classes in zip(emb.attribute_names, emb.attribute_classes, strict=True):
        values = set(np.unique(emb.known[name]).tolist()) - {""} - set(classes)
        if values:
            out[name] = sorted(values)
    return out


# ----------------------------------------------------------------------- file I/O


def _utf8(strings: Sequence[str]) -> np.ndarray:
    return np.asarray([s.encode("utf-8") for s in strings], dtype=bytes)


def _strings(values: Sequence[str]) -> np.ndarray:
    return (
        np.asarray(list(values), dtype=str) if len(values) else np.zeros(0, dtype=str)
    )


def save_embeddings(emb: Embeddings, path: str) -> str:
    """Write ``emb`` to ``path`` (``.npz``, the format of the module docstring);
    the file appears complete or not at all."""
    if not path.endswith(".npz"):
        raise SearchError(f"{path}: the embeddings file must end in .npz")
    arrays = {
        "format": np.asarray(FORMAT),
        "model": np.asarray(json.dumps(emb.model)),
        "source": np.asarray(emb.source),
        "path": _utf8(emb.paths) if emb.paths else np.zeros(0, dtype="S1"),
        "embedding": np.asarray(emb.embedding, np.float32),
        "pid": np.asarray(emb.pids, np.int64),
        "camid": np.asarray(emb.camids, np.int64),
        "attribute_names": _strings(emb.attribute_names),
        "failed_path": _utf8([p for p, _ in emb.failed])
        if emb.failed
        else np.zeros(0, dtype="S1"),
        "failed_reason": _strings([r for _, r in emb.failed]),
    }
    for name, classes in zip(emb.attribute_names, emb.attribute_classes, strict=True):
        arrays[f"{name}_classes"] = _strings(classes)
        arrays[f"{name}_probs"] = np.asarray(emb.probs[name], np.float32)
        arrays[f"{name}_label"] = _strings(emb.predicted[name])
        arrays[f"{name}_known"] = _strings(emb.known[name])
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "wb") as fh:
        np.savez(fh, **arrays)
    os.replace(tmp, path)
    return path


def load_embeddings(path: str) -> Embeddings:
    """Read a file written by :func:`save_embeddings`.

    Raises:
        SearchError: the file is missing or is not an anet-tf embeddings file.
    """
    if not os.path.isfile(path):
        raise SearchError(
            f"{path}: no such embeddings file (write one with `anet-tf embed`)"
        )
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise SearchError(
            f"{path}: not an anet-tf embeddings .npz file ({exc})"
        ) from None
    with data:
        if "format" not in data.files or str(data["format"]) != FORMAT:
            raise SearchError(
                f"{path}: not an anet-tf embeddings file (format {FORMAT} expected)"
            )
        names = [str(n) for n in data["attribute_names"]]
        return Embeddings(
            paths=[p.decode("utf-8") for p in data["path"].tolist()],
            embedding=data["embedding"],
            attribute_names=names,
            attribute_classes=[
                data[f"{n}_classes"].astype(str).tolist() for n in names
            ],
            probs={n: data[f"{n}_probs"] for n in names},
            predicted={n: data[f"{n}_label"].astype(str) for n in names},
            known={n: data[f"{n}_known"].astype(str) for n in names},
            pids=data["pid"],
            camids=data["camid"],
            model=json.loads(str(data["model"])),
            failed=list(
                zip(
                    [p.decode("utf-8") for p in data["failed_path"].tolist()],
                    data["failed_reason"].astype(str).tolist(),
                    strict=True,
                )
            ),
            source=str(data["source"]),
        )
