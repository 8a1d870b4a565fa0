"""The records every dataset reader produces, whatever the on-disk layout.

A reader (generic CSV manifest, synthetic, VeRi-776, VeRi-Wild, VehicleID) turns a
dataset folder into a :class:`ReidDataset`: three lists of :class:`Record` (train,
query, gallery) and the class names of each attribute. Everything downstream (the
tf.data pipeline, evaluation, ``data check``) sees only these records.
"""

from __future__ import annotations

from dataclasses import dataclass
from dataclasses import field
from typing import Optional

UNKNOWN = -1
SPLITS = ("train", "query", "gallery")


class DataError(ValueError):
    """A dataset problem, naming the file (and line) where it was found."""


@dataclass(frozen=True)
class Record:
    """One image.

    Args:
        path: absolute path of the image file.
        pid: vehicle identity as the dataset numbers it.
        camid: camera id; -1 where the dataset has no cameras (VehicleID).
        attributes: class index per attribute (order of ``ReidDataset.attribute_names``),
            -1 where unknown.
        split: train | query | gallery.
    """

    path: str
    pid: int
    camid: int
    attributes: tuple[int, ...]
    split: str


@dataclass
class ReidDataset:
    """A dataset as records plus attribute vocabularies.

    Args:
        name: reader name (synthetic, folder, veri776, ...).
        root: dataset folder.
        attribute_names: the attributes, one per branch, e.g. ["color", "type"].
        attribute_classes: class names per attribute; index = class id.
        train, query, gallery: the records of each split.
        problems: non-fatal findings a reader reported (each names file and line);
            readers never drop data silently.
    """

    name: str
    root: str
    attribute_names: list[str]
    attribute_classes: list[list[str]]
    train: list[Record] = field(default_factory=list)
    query: list[Record] = field(default_factory=list)
    gallery: list[Record] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def num_classes(self) -> list[int]:
        """m_i, the number of classes of each attribute."""
        return [len(c) for c in self.attribute_classes]

    def split(self, name: str) -> list[Record]:
        if name not in SPLITS:
            raise KeyError(f"unknown split {name!r}; valid: {', '.join(SPLITS)}")
        return getattr(self, name)

    def train_pids(self) -> list[int]:
        """Sorted identities of the training split (index = ID-classifier class)."""
        return sorted({r.pid for r in self.train})


def pattern_index(attributes: tuple[int, ...], num_classes: list[int]) -> int:
    """Index of the attribute pattern (section 3.2): the combination of all attribute
    classes in mixed radix, ``prod(m_i)`` patterns in all; -1 if any is unknown."""
    index = 0
    for value, m in zip(attributes, num_classes):
        if value < 0:
            return UNKNOWN
        if value >= m:
            raise ValueError(f"attribute class {value} out of range for {m} classes")
        index = index * m + value
    return index


def resolve_inside(root: str, relpath: str, where: str) -> str:
    """Join ``relpath`` to ``root`` and refuse a path that escapes ``root``.

    Args:
        where: "file:line" for the error message.
    """
    import os

    if os.path.isabs(relpath):
        raise DataError(f"{where}: absolute path {relpath!r} is not allowed; paths are relative to {root}")
    full = os.path.normpath(os.path.join(root, relpath))
    root_n = os.path.normpath(os.path.abspath(root))
    if os.path.commonpath([os.path.abspath(full), root_n]) != root_n:
        raise DataError(f"{where}: path {relpath!r} escapes the dataset root {root}")
    return os.path.abspath(full)


def optional_int(text: str) -> Optional[int]:
    text = text.strip()
    return int(text) if text else None
