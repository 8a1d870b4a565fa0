"""The embeddings file: what ``anet-tf embed`` writes and ``index build``,
``search`` and ``visualize`` read.

A NumPy ``.npz`` file (``numpy.load(path)`` reads it, no pickles):

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
``time``                 int64 [N]          capture time, seconds since 1970-01-01
                                            UTC, -1 unknown (files without it:
                                            all unknown)
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

import dataclasses
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import field

import numpy as np

from anet_tf.io import atomic_file
from anet_tf.search.errors import SearchError

FORMAT = "anet-tf-embeddings/1"


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

    def __post_init__(self) -> None:
        if self.times is None:
            self.times = np.full(len(self.paths), -1, np.int64)

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
            times=data["time"] if "time" in data.files else None,
        )
