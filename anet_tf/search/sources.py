"""The images ``anet-tf embed`` and ``anet-tf search`` read, with what is known
about them.

A source is

* a folder: every JPEG, PNG, BMP, GIF or WebP file under it (recursively, sorted);
  a folder holding ``manifest.csv`` (the generic dataset format,
  :mod:`anet_tf.data.generic`) is read as that manifest;
* a manifest ``.csv`` with a ``path`` column (relative paths are relative to the
  file's folder) and optionally ``vehicle_id``, ``camera_id``, ``split`` and one
  column per attribute holding known class names (the generic dataset manifest is
  one; unlike a dataset, any of its columns but ``path`` may be missing and the
  rows keep their file order); ``--split`` keeps the rows of one split;
* a text file listing image paths, one per line (``#`` starts a comment);
* ``dataset:SPLIT``: a split (train | query | gallery) of the dataset a config
  names (:func:`dataset_images`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import field

import numpy as np

from anet_tf.data.generic import MANIFEST
from anet_tf.data.generic import NON_ATTRIBUTE_COLUMNS
from anet_tf.data.generic import check_utf8
from anet_tf.data.generic import manifest_rows
from anet_tf.data.generic import parse_time
from anet_tf.data.records import UNKNOWN
from anet_tf.data.records import DataError
from anet_tf.data.records import ProblemLog
from anet_tf.search.errors import SearchError

DATASET_PREFIX = "dataset:"
TIME_COLUMN = "time"
TRACK_COLUMN = "track_id"
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")


@dataclass
class ImageList:
    """Images to embed, with what is known about them.

    Args:
        paths: absolute image paths.
        pids: vehicle ids, -1 unknown.
        camids: camera ids, -1 unknown.
        known: attribute name -> known class name per image ("" unknown).
        source: what the list was read from (for the output file).
        times: capture times, seconds since 1970-01-01 UTC, -1 unknown (default:
            all unknown).
        track_ids: the track of each image ("" none; default: none), from a
            manifest's ``track_id`` column or the dataset's records.
    """

    paths: list[str]
    pids: np.ndarray
    camids: np.ndarray
    known: dict[str, list[str]] = field(default_factory=dict)
    source: str = ""
    times: np.ndarray | None = None
    track_ids: list[str] | None = None

    def __post_init__(self) -> None:
        if self.times is None:
            self.times = np.full(len(self.paths), UNKNOWN, np.int64)
        if self.track_ids is None:
            self.track_ids = [""] * len(self.paths)

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


def list_sources(sources: Sequence[str], split: str | None = None) -> ImageList:
    """The :class:`ImageList` of several sources (:func:`list_images` each),
    concatenated in order."""
    lists = [list_images(src, split) for src in sources]
    if len(lists) == 1:
        return lists[0]
    names = set().union(*(lst.known for lst in lists))
    known = {
        a: [v for lst in lists for v in lst.known.get(a, [""] * len(lst))]
        for a in names
    }
    return ImageList(
        paths=[p for lst in lists for p in lst.paths],
        pids=np.concatenate([lst.pids for lst in lists]),
        camids=np.concatenate([lst.camids for lst in lists]),
        known=known,
        source=" ".join(sources),
        times=np.concatenate([lst.times for lst in lists]),
        track_ids=[t for lst in lists for t in lst.track_ids],
    )


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
        times=np.asarray(
            [UNKNOWN if r.time is None else r.time for r in records], np.int64
        ),
        track_ids=[r.track_id or "" for r in records],
    )


# ----------------------------------------------------------------------- readers


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
    """A manifest in the generic dataset format (its columns and encoding, as
    :mod:`anet_tf.data.generic` defines them), of which only ``path`` is required."""
    try:
        check_utf8(path)  # names the line and column of a byte that is not UTF-8
    except DataError as exc:
        raise SearchError(str(exc)) from None
    base = os.path.dirname(os.path.abspath(path))
    with open(path, encoding="utf-8-sig", newline="") as fh:
        reader = _manifest_rows(fh, path)
        header = [h.strip() for h in next(reader, (1, []))[1]]
        if "path" not in header:
            raise SearchError(
                f"{path}:1: a manifest needs a 'path' column; the header is {header}"
            )
        if split is not None and "split" not in header:
            raise SearchError(
                f"{path}:1: --split {split}: the manifest has no 'split' column"
            )
        col = {h: i for i, h in enumerate(header)}
        attributes = [h for h in header if h and h not in NON_ATTRIBUTE_COLUMNS]
        paths, pids, camids, times, tracks = [], [], [], [], []
        known: dict[str, list[str]] = {a: [] for a in attributes}
        for line, row in reader:
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
            times.append(_time_cell(row, col, path, line))
            tracks.append(row[col[TRACK_COLUMN]].strip() if TRACK_COLUMN in col else "")
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
        np.asarray(times, np.int64),
        tracks,
    )


def _manifest_rows(fh, path: str):
    """:func:`~anet_tf.data.generic.manifest_rows`, stopping at the first bad
    record with a :class:`SearchError`."""
    try:
        yield from manifest_rows(fh, path, ProblemLog(strict=True))
    except DataError as exc:
        raise SearchError(str(exc)) from None


def _time_cell(row, col, path, line) -> int:
    if TIME_COLUMN not in col or not row[col[TIME_COLUMN]].strip():
        return UNKNOWN
    try:
        return parse_time(row[col[TIME_COLUMN]])
    except ValueError as exc:
        raise SearchError(f"{path}:{line}: {TIME_COLUMN}: {exc}") from None


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
