"""The embeddings file: what ``anet-tf embed`` writes and ``index build``,
``search`` and ``visualize`` read.

A NumPy ``.npz`` file (``numpy.load(path)`` reads it, no pickles):

=======================  =================  ========================================
key                      array              meaning
=======================  =================  ========================================
``format``               str []             ``anet-tf-embeddings/1.1`` (files of
                                            ``/1``, without the track arrays,
                                            read too)
``model``                str []             JSON: path, fingerprint, embedding_dim,
                                            feature, dataset, attributes, ...
``source``               str []             the SRC argument
``path``                 bytes [N]          absolute image paths, UTF-8
``embedding``            float32 [N, D]     L2-normalised embeddings
``pid``, ``camid``       int64 [N]          vehicle and camera ids, -1 unknown
``time``                 int64 [N]          capture time, seconds since 1970-01-01
                                            UTC, -1 unknown (files without it:
                                            all unknown)
``track_id``             str [N]            the image's track, "" none; a row of
                                            ``embed --per-track`` is a track
``track_length``         int64 [N]          crops the row stands for (1: an image)
``time_last``            int64 [N]          capture time of the row's last crop
                                            (= ``time`` for an image), -1 unknown
``attribute_names``      str [n]            the model's attributes
``<a>_classes``          str [m_a]          class names of attribute ``a``
``<a>_probs``            float32 [N, m_a]   predicted class probabilities
``<a>_label``            str [N]            predicted class (top-1)
``<a>_known``            str [N]            known class from the manifest or
                                            dataset, "" where unknown
``failed_path``          bytes [F]          images that could not be read, UTF-8
``failed_reason``        str [F]            why
=======================  =================  ========================================

:func:`load_embeddings` checks all of it (keys, shapes, kinds, the model record) and
refuses any other file (empty, truncated, not an ``.npz``, an array of pickled
Python objects, a key missing) with one :class:`SearchError` line naming the file;
pickles are never loaded.
"""

from __future__ import annotations

import dataclasses
import json
import os
import struct
import zipfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import field

import numpy as np

from anet_tf.io import atomic_file
from anet_tf.io import quote
from anet_tf.search.errors import SearchError
from anet_tf.search.errors import first_line
from anet_tf.search.errors import npz_array_problem

FORMAT = "anet-tf-embeddings/1.1"
# 1.1 added track_id, track_length and time_last; a 1 file reads with none.
READABLE_FORMATS = ("anet-tf-embeddings/1", FORMAT)


@dataclass
class Embeddings:
    """The contents of an embeddings file (the table of the module docstring)."""

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
    times: np.ndarray | None = None
    file: str = ""  # the file it was read from (:func:`load_embeddings`), for messages
    track_ids: np.ndarray | None = None
    track_lengths: np.ndarray | None = None
    times_last: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.times is None:
            self.times = np.full(len(self.paths), -1, np.int64)
        if self.track_ids is None:
            self.track_ids = np.full(len(self.paths), "", dtype=str)
        if self.track_lengths is None:
            self.track_lengths = np.ones(len(self.paths), np.int64)
        if self.times_last is None:
            self.times_last = np.asarray(self.times, np.int64).copy()

    def rows(self, keep) -> Embeddings:
        """The rows ``keep`` (indices) of these embeddings, everything else shared."""
        keep = np.asarray(keep)
        return dataclasses.replace(
            self,
            paths=[self.paths[i] for i in keep],
            embedding=self.embedding[keep],
            probs={a: v[keep] for a, v in self.probs.items()},
            predicted={a: v[keep] for a, v in self.predicted.items()},
            known={a: v[keep] for a, v in self.known.items()},
            pids=self.pids[keep],
            camids=self.camids[keep],
            times=self.times[keep],
            track_ids=self.track_ids[keep],
            track_lengths=self.track_lengths[keep],
            times_last=self.times_last[keep],
            failed=[],
        )

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def dim(self) -> int:
        return int(self.embedding.shape[1])


def unknown_known_labels(emb: Embeddings) -> dict[str, list[str]]:
    """Known labels that are not among the model's classes, per attribute (they
    match no filter)."""
    out = {}
    for name, classes in zip(emb.attribute_names, emb.attribute_classes, strict=True):
        values = set(np.unique(emb.known[name]).tolist()) - {""} - set(classes)
        if values:
            out[name] = sorted(values)
    return out


def check_track_spans(emb: Embeddings, name: str) -> None:
    """Refuse a row whose ``time`` is after its ``time_last``, or with one of the
    two unknown (-1) and not the other: a track's span must read as one.

    Raises:
        SearchError: one line naming ``name`` (the file), the first such row and
            its track, and how many there are.
    """
    ids = np.asarray(emb.track_ids, dtype=str)
    first, last = np.asarray(emb.times, np.int64), np.asarray(emb.times_last, np.int64)
    for problem, bad in (
        (
            "its time is after its time_last",
            (first >= 0) & (last >= 0) & (first > last),
        ),
        (
            "one of time and time_last is unknown (-1), not both",
            (first < 0) != (last < 0),
        ),
    ):
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise SearchError(
                f"{name}: row {i} (track {quote(str(ids[i]))}, time {first[i]}, "
                f"time_last {last[i]}): {problem}; {int(bad.sum())} such row(s)"
            )


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
        "time": np.asarray(emb.times, np.int64),
        "track_id": _strings(list(emb.track_ids)),
        "track_length": np.asarray(emb.track_lengths, np.int64),
        "time_last": np.asarray(emb.times_last, np.int64),
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
    with atomic_file(path, "wb") as fh:
        np.savez(fh, **arrays)
    return path


def load_embeddings(path: str) -> Embeddings:
    """Read a file written by :func:`save_embeddings`.

    Raises:
        SearchError: the file is missing or is not an anet-tf embeddings file
            (one line naming it and what is wrong).
    """
    if not os.path.isfile(path):
        raise SearchError(
            f"{path}: no such embeddings file (write one with `anet-tf embed`)"
        )
    try:
        with open(path, "rb") as fh:
            return _read(fh, path)
    except _NotEmbeddings as exc:
        raise SearchError(
            f"{path}: not an anet-tf embeddings file ({exc}); write it with "
            f"`anet-tf embed`"
        ) from None


class _NotEmbeddings(Exception):
    """What is wrong with a file that is not an embeddings file."""


# What NumPy and zipfile raise for an archive that is not whole (RuntimeError: an
# encrypted member; NotImplementedError: an unknown compression or flag).
READ_ERRORS = (
    ValueError,
    OSError,
    EOFError,
    KeyError,
    RuntimeError,
    NotImplementedError,
    struct.error,
    zipfile.BadZipFile,
    zlib.error,
)
_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")


def _read(fh, path: str) -> Embeddings:
    head = fh.read(6)
    fh.seek(0)
    if not head:
        raise _NotEmbeddings("an empty file")
    if head.startswith(b"\x93NUMPY"):
        raise _NotEmbeddings("a single .npy array, not an .npz archive")
    if not head.startswith(_ZIP_MAGIC):
        raise _NotEmbeddings(f"not a NumPy .npz archive: it starts with {head!r}")
    try:
        data = np.load(fh, allow_pickle=False)
    except READ_ERRORS as exc:
        raise _NotEmbeddings(f"a damaged .npz archive: {first_line(exc)}") from None
    with data:
        arrays = _Arrays(data)
        fmt = arrays.text("format")
        if fmt not in READABLE_FORMATS:
            raise _NotEmbeddings(f"format {quote(fmt)}, {FORMAT} expected")
        model = _model_record(arrays.text("model"))
        paths = _decode(arrays.get("path", ndim=1, kinds="SU"), "path")
        n = len(paths)
        names = [str(v) for v in arrays.get("attribute_names", ndim=1).tolist()]
        recorded = [a["name"] for a in model["attributes"]]
        if names != recorded:
            raise _NotEmbeddings(
                f"attribute_names {names} differ from its model's attributes {recorded}"
            )
        classes = [
            arrays.get(f"{a}_classes", ndim=1).astype(str).tolist() for a in names
        ]
        failed_path = _decode(
            arrays.get("failed_path", ndim=1, kinds="SU", default=np.zeros(0, "S1")),
            "failed_path",
        )
        failed_reason = arrays.get("failed_reason", ndim=1, default=[]).astype(str)
        if len(failed_reason) != len(failed_path):
            raise _NotEmbeddings(
                f"{len(failed_path)} failed_path but {len(failed_reason)} failed_reason"
            )
        return Embeddings(
            paths=paths,
            embedding=arrays.get("embedding", ndim=2, rows=n, kinds="f"),
            attribute_names=names,
            attribute_classes=classes,
            probs={
                a: arrays.get(f"{a}_probs", ndim=2, rows=n, kinds="f", cols=len(c))
                for a, c in zip(names, classes, strict=True)
            },
            predicted={
                a: arrays.get(f"{a}_label", ndim=1, rows=n).astype(str) for a in names
            },
            known={
                a: arrays.get(f"{a}_known", ndim=1, rows=n).astype(str) for a in names
            },
            pids=arrays.get("pid", ndim=1, rows=n, kinds="iu"),
            camids=arrays.get("camid", ndim=1, rows=n, kinds="iu"),
            model=model,
            failed=list(zip(failed_path, failed_reason.tolist(), strict=True)),
            source=arrays.text("source", default=""),
            times=arrays.get("time", ndim=1, rows=n, kinds="iu", default=None),
            file=path,
            track_ids=_optional(arrays.get("track_id", ndim=1, rows=n, default=None)),
            track_lengths=arrays.get(
                "track_length", ndim=1, rows=n, kinds="iu", default=None
            ),
            times_last=arrays.get("time_last", ndim=1, rows=n, kinds="iu", default=None),
        )


def _optional(values: np.ndarray | None) -> np.ndarray | None:
    return None if values is None else values.astype(str)


class _Arrays:
    """The arrays of an open ``.npz``, each checked as it is read."""

    def __init__(self, data):
        self.data = data
        self.keys = set(data.files)

    def get(self, key, *, ndim, rows=None, kinds=None, cols=None, default=...):
        if key not in self.keys:
            if default is not ...:
                return default if default is None else np.asarray(default)
            raise _NotEmbeddings(f"no {key!r} array")
        try:
            value = self.data[key]
        except READ_ERRORS as exc:
            raise _NotEmbeddings(npz_array_problem(key, exc)) from None
        if value.ndim != ndim:
            raise _NotEmbeddings(
                f"{key!r} has {value.ndim} dimensions, {ndim} expected"
            )
        if rows is not None and len(value) != rows:
            raise _NotEmbeddings(f"{key!r} has {len(value)} rows for {rows} paths")
        if kinds is not None and value.dtype.kind not in kinds:
            expected = {"f": "floats", "iu": "integers", "SU": "strings"}[kinds]
            raise _NotEmbeddings(f"{key!r} holds {value.dtype}, {expected} expected")
        if cols is not None and value.shape[1] != cols:
            raise _NotEmbeddings(
                f"{key!r} has {value.shape[1]} columns for {cols} classes"
            )
        return value

    def text(self, key, default=...) -> str:
        if key not in self.keys and default is not ...:
            return default
        return str(self.get(key, ndim=0))


def _decode(values: np.ndarray, key: str) -> list[str]:
    """UTF-8 bytes (or str) as str; a value that is not UTF-8 refuses the file."""
    if values.dtype.kind != "S":
        return [str(v) for v in values.tolist()]
    items = values.tolist()
    try:
        return [v.decode("utf-8") for v in items]
    except UnicodeDecodeError:
        bad = next(i for i, v in enumerate(items) if not _is_utf8(v))
        raise _NotEmbeddings(f"{key} {bad} is not UTF-8") from None


def _is_utf8(value: bytes) -> bool:
    try:
        value.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _model_record(text: str) -> dict:
    try:
        model = json.loads(text)
    except json.JSONDecodeError as exc:
        raise _NotEmbeddings(f"its model record is not JSON: {exc.msg}") from None
    if not isinstance(model, dict):
        raise _NotEmbeddings("its model record is not a JSON object")
    absent = [
        k
        for k in ("path", "fingerprint", "embedding_dim", "attributes")
        if k not in model
    ]
    if absent:
        raise _NotEmbeddings(f"its model record has no {', '.join(absent)}")
    if not isinstance(model["embedding_dim"], int):
        raise _NotEmbeddings("its model record's embedding_dim is not a number")
    attributes = model["attributes"]
    if not isinstance(attributes, list) or not all(
        isinstance(a, dict) and "name" in a and "classes" in a for a in attributes
    ):
        raise _NotEmbeddings(
            "its model record's attributes are not a list of {name, classes}"
        )
    return model

