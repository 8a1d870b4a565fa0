"""The records every dataset reader produces, whatever the on-disk layout.

A reader (generic CSV manifest, synthetic, VeRi-776, VeRi-Wild, VehicleID) turns a
dataset folder into a :class:`ReidDataset`: three lists of :class:`Record` (train,
query, gallery) and the class names of each attribute. Everything downstream (the
tf.data pipeline, evaluation, ``data check``) sees only these records.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from dataclasses import field

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
        track_id: the track the image belongs to (crops of one vehicle by one
            camera, in time order, as a detector and tracker give them), None
            where the dataset has no tracks.
        time: capture time, seconds since 1970-01-01 UTC; None where unknown.
    """

    path: str
    pid: int
    camid: int
    attributes: tuple[int, ...]
    split: str
    track_id: str | None = None
    time: int | None = None


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
    if "\0" in relpath:  # os.path would raise "embedded null byte", naming nothing
        raise DataError(
            f"{where}: path {relpath!r} holds a NUL byte; the file is damaged or "
            f"not plain text (save it as UTF-8)"
        )
    if os.path.isabs(relpath):
        raise DataError(f"{where}: absolute path {relpath!r} is not allowed; paths are relative to {root}")
    full = os.path.normpath(os.path.join(root, relpath))
    root_n = os.path.normpath(os.path.abspath(root))
    if os.path.commonpath([os.path.abspath(full), root_n]) != root_n:
        raise DataError(f"{where}: path {relpath!r} escapes the dataset root {root}")
    # The same confinement after symbolic links are followed (a link inside the root
    # may point anywhere, e.g. at /etc/hostname). The root's own links are its own.
    real_root = os.path.realpath(root_n)
    real = os.path.realpath(full)
    if os.path.commonpath([real, real_root]) != real_root:
        raise DataError(
            f"{where}: path {relpath!r} is a link to {real}, outside the dataset root "
            f"{root}; copy the file into the dataset instead"
        )
    return os.path.abspath(full)


def optional_int(text: str) -> int | None:
    text = text.strip()
    return int(text) if text else None


# ------------------------------------------------------ helpers shared by the readers

# A relative path of plain names (letters, digits, "_", ".", "-"; no part starting
# with "."): it has no "..", no root and no backslash, so it cannot leave the root.
_PLAIN_PATH = re.compile(r"\w[\w.-]*(?:/\w[\w.-]*)*")


def resolve_listed(root: str, relpath: str, where: str) -> str:
    """:func:`resolve_inside` with a fast path for plain relative paths, for lists of
    hundreds of thousands of images.

    Args:
        root: the dataset folder, already absolute (``os.path.abspath``).
        relpath: the path read from a list file, "/"-separated.
        where: "file:line" for the error message.
    """
    if _PLAIN_PATH.fullmatch(relpath) and os.sep == "/":
        full = f"{root}/{relpath}"
        folder, name = full.rsplit("/", 1)
        links, folder_inside = _folder_links(root, folder)
        if folder_inside and name not in links:
            return full
    return resolve_inside(root, relpath, where)


_FOLDER_LINKS: dict[tuple[str, str, int], tuple[frozenset[str], bool]] = {}


def _folder_links(root: str, folder: str) -> tuple[frozenset[str], bool]:
    """(names of the symbolic links in ``folder``, whether the folder itself lies
    inside ``root`` once links are followed): one directory scan per folder and
    version of it (its mtime changes when an entry is added or removed)."""
    try:
        mtime = os.stat(folder).st_mtime_ns
    except OSError:
        return frozenset(), True  # a missing folder: the existence check reports it
    key = (root, folder, mtime)
    if key not in _FOLDER_LINKS:
        try:
            with os.scandir(folder) as it:
                links = frozenset(e.name for e in it if e.is_symlink())
        except OSError:
            links = frozenset()
        real_root = os.path.realpath(root)
        real = os.path.realpath(folder)
        _FOLDER_LINKS[key] = (links, os.path.commonpath([real, real_root]) == real_root)
    return _FOLDER_LINKS[key]


class ProblemLog:
    """Where a reader reports bad input.

    With ``strict`` (training, evaluation) the first problem raises :class:`DataError`.
    Without it (``data check``) every problem is recorded in ``messages`` and the
    reader skips exactly the bad entry and goes on, so one pass lists them all.
    """

    def __init__(self, strict: bool = True) -> None:
        self.strict = strict
        self.messages: list[str] = []

    def report(self, message: str, skipped: str = "") -> None:
        """A bad entry (the caller then skips it): raise if strict, else record it.

        Args:
            skipped: what the reader skips because of it, when that is more than
                the entry the message names (e.g. "split 'query' skipped"); added
                to the recorded message only.
        """
        if self.strict:
            raise DataError(message)
        self.messages.append(f"{message}; {skipped}" if skipped else message)


def check_attributes(
    requested: list[str], offered: tuple[str, ...], dataset: str
) -> None:
    """Refuse an attribute the dataset does not label, listing the ones it does."""
    unknown = ", ".join(repr(a) for a in requested if a not in offered)
    if unknown:
        raise DataError(
            f"data.attributes: {dataset} does not offer {unknown}; "
            f"offered: {', '.join(offered)}"
        )


def read_lines(
    path: str, encodings: tuple[str, ...] = ("utf-8-sig",), hint: str = ""
) -> list[tuple[int, str]]:
    """The non-empty lines of a text file, stripped, with their 1-based numbers.

    Args:
        encodings: tried in order; the first that decodes the whole file wins.
        hint: appended to the "file not found" message (e.g. the expected layout).
    """
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found{hint}") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read: {exc}") from None
    error = None
    for encoding in encodings:
        try:
            text = data.decode(encoding)
            break
        except UnicodeDecodeError as exc:
            error = error or exc
    else:
        line = data.count(b"\n", 0, error.start) + 1
        raise DataError(
            f"{path}:{line}: not valid {' or '.join(encodings)} text ({error.reason})"
        )
    lines = []
    for number, line in enumerate(text.split("\n"), start=1):
        line = line.strip()
        if line:
            lines.append((number, line))
    return lines


class FileIndex:
    """Answers "does this image exist" from one directory listing per folder, which
    is much faster than one ``stat`` per image on datasets of 400k files."""

    def __init__(self) -> None:
        self._folders: dict[str, frozenset[str]] = {}

    def exists(self, path: str) -> bool:
        folder, name = os.path.split(path)
        names = self._folders.get(folder)
        if names is None:
            try:
                names = frozenset(os.listdir(folder))
            except OSError:
                names = frozenset()
            self._folders[folder] = names
        return name in names
