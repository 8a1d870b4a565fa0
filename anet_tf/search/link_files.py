"""The files of ``anet-tf link``: the tracks it reads, the travel times it obeys
and the global ids it writes.

* Tracks: an embeddings file (:mod:`anet_tf.search.embeddings`) whose rows carry
  a ``track_id``: one row per track as ``anet-tf embed --per-track`` writes
  (``time`` and ``time_last`` the track's first and last time, ``track_length``
  its crops), or one row per crop, which :func:`load_tracks` groups into tracks as
  ``--per-track`` would (:mod:`anet_tf.evaluation.tracks`). A row without a track
  id is a track of its own; a file where no row has one is refused.
* Travel times: a CSV ``camera_a,camera_b,min_s,max_s``, one camera pair a line
  (:func:`read_travel_times`; :mod:`anet_tf.search.link` says how a window is used).
* Linked tracks: a CSV ``track_id,camera_id,start,end,global_id`` (times in
  seconds since 1970-01-01 UTC, -1 unknown), or the same as JSON when the output
  ends in ``.json`` (:func:`write_links`).

Every bad input is one :class:`SearchError` line naming the file (and line), and
nothing is written.
"""

from __future__ import annotations

import csv
import json
import math
import os
from dataclasses import dataclass

import numpy as np

from anet_tf.evaluation.tracks import aggregate_features
from anet_tf.evaluation.tracks import aggregate_probs
from anet_tf.evaluation.tracks import track_groups
from anet_tf.io import atomic_file
from anet_tf.io import quote
from anet_tf.search.embeddings import check_track_spans
from anet_tf.search.embeddings import load_embeddings
from anet_tf.search.errors import SearchError

TRAVEL_HEADER = ["camera_a", "camera_b", "min_s", "max_s"]
LINK_COLUMNS = ["track_id", "camera_id", "start", "end", "global_id"]
OUTPUT_KINDS = (".csv", ".json")


@dataclass
class Tracks:
    """The tracks of a file, one entry per track.

    Args:
        track_ids: the track ids (a row without one: ``row:<index>``).
        features: mean L2-normalised feature, float32 [T, D].
        cameras: camera id, int64 [T] (-1 unknown).
        start, end: first and last capture time, int64 [T] (-1 unknown).
        lengths: crops in the track, int64 [T].
        pids: known vehicle id (its first crop's), int64 [T] (-1 unknown).
        probs: per attribute, the mean class probabilities [T, C_a].
        file: the file it was read from.
        fingerprint: the fingerprint of the model that embedded them.
    """

    track_ids: list[str]
    features: np.ndarray
    cameras: np.ndarray
    start: np.ndarray
    end: np.ndarray
    lengths: np.ndarray
    pids: np.ndarray
    probs: dict[str, np.ndarray]
    file: str = ""
    fingerprint: str = ""

    def __len__(self) -> int:
        return len(self.track_ids)


def load_tracks(path: str) -> Tracks:
    """The tracks of an embeddings file (module docstring).

    Raises:
        SearchError: not an embeddings file, no row with a track id, a track
            seen by two cameras, a row whose ``time`` is after its ``time_last``
            or with one of the two unknown (one line naming the file and track).
    """
    emb = load_embeddings(path)
    ids = np.asarray(emb.track_ids, dtype=str)
    if not len(ids) or not (ids != "").any():
        raise SearchError(
            f"{path}: no track rows (no row has a track_id); write it with "
            f"`anet-tf embed --per-track` from images with a track_id column"
        )
    check_track_spans(emb, path)
    first, last = np.asarray(emb.times, np.int64), np.asarray(emb.times_last, np.int64)
    groups = track_groups(ids.tolist())
    heads = np.asarray([g[0] for g in groups], np.int64)
    cameras = np.asarray(emb.camids, np.int64)
    for g in groups:
        if len(np.unique(cameras[g])) > 1:
            raise SearchError(
                f"{path}: track {quote(str(ids[g[0]]))} has rows of cameras "
                f"{sorted(set(cameras[g].tolist()))}; a track is one camera's"
            )
    return Tracks(
        track_ids=[ids[i] if ids[i] else f"row:{i}" for i in heads],
        features=aggregate_features(emb.embedding, groups),
        cameras=cameras[heads],
        start=np.asarray([_known(first[g], min) for g in groups], np.int64),
        end=np.asarray([_known(last[g], max) for g in groups], np.int64),
        lengths=np.asarray([emb.track_lengths[g].sum() for g in groups], np.int64),
        pids=np.asarray(emb.pids, np.int64)[heads],
        probs={a: aggregate_probs(p, groups) for a, p in emb.probs.items()},
        file=path,
        fingerprint=str(emb.model["fingerprint"]),
    )


def _known(times: np.ndarray, pick) -> int:
    known = times[times >= 0]
    return int(pick(known)) if known.size else -1


def read_travel_times(path: str) -> dict[tuple[int, int], tuple[float, float]]:
    """``{(camera_a, camera_b): (min_s, max_s)}`` from a travel-times CSV (module
    docstring); blank lines are skipped.

    Raises:
        SearchError: the file is missing or empty, its header is not
            ``camera_a,camera_b,min_s,max_s``, or a line is bad (a cell that is
            not a number, min_s > max_s, a pair listed twice): names file and line.
    """
    if not os.path.isfile(path):
        raise SearchError(f"{path}: no such travel-times file")
    windows: dict[tuple[int, int], tuple[float, float]] = {}
    seen: dict[tuple[int, int], int] = {}
    try:
        with open(path, encoding="utf-8", newline="") as fh:
            rows = list(csv.reader(fh))
    except (UnicodeDecodeError, csv.Error) as exc:
        raise SearchError(f"{path}: not a UTF-8 CSV file ({exc})") from None
    header = [c.strip() for c in rows[0]] if rows else []
    if header != TRAVEL_HEADER:
        raise SearchError(
            f"{path}, line 1: the header must be {','.join(TRAVEL_HEADER)}. "
            f"Received: {quote(','.join(header))}"
        )
    for line, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        where = f"{path}, line {line}"
        if len(row) != len(TRAVEL_HEADER):
            raise SearchError(
                f"{where}: {len(row)} cells, {len(TRAVEL_HEADER)} expected "
                f"({','.join(TRAVEL_HEADER)})"
            )
        a, b = (_cell(row[k], TRAVEL_HEADER[k], where, int) for k in (0, 1))
        low, high = (_cell(row[k], TRAVEL_HEADER[k], where, float) for k in (2, 3))
        if low > high:
            raise SearchError(f"{where}: min_s {low:g} is above max_s {high:g}")
        if (a, b) in seen:
            raise SearchError(
                f"{where}: cameras {a},{b} are already given on line {seen[a, b]}"
            )
        seen[a, b] = line
        windows[a, b] = (low, high)
    return windows


def _cell(text: str, column: str, where: str, kind):
    try:
        value = kind(text.strip())
    except ValueError:
        what = "an integer camera id" if kind is int else "a number of seconds"
        raise SearchError(f"{where}: {column} {quote(text)} is not {what}") from None
    if kind is float and not math.isfinite(value):
        raise SearchError(f"{where}: {column} {quote(text)} is not a finite number")
    return value


def check_output(path: str) -> None:
    """Refuse an output path that does not end in .csv or .json (before any work)."""
    if not path.lower().endswith(OUTPUT_KINDS):
        raise SearchError(f"{path}: the output must end in .csv or .json")


def write_links(
    path: str, tracks: Tracks, ids: np.ndarray, settings: dict | None = None
) -> str:
    """Write each track's global id to ``path`` (CSV, or JSON for ``.json``: the
    rows under ``tracks`` beside ``settings``); the file appears whole or not at
    all."""
    check_output(path)
    rows = [
        [t, int(c), int(s), int(e), int(g)]
        for t, c, s, e, g in zip(
            tracks.track_ids, tracks.cameras, tracks.start, tracks.end, ids, strict=True
        )
    ]
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    with atomic_file(path, "w", encoding="utf-8", newline="") as fh:
        if path.lower().endswith(".json"):
            payload = {
                **(settings or {}),
                "vehicles": int(len(np.unique(ids))),
                "tracks": [dict(zip(LINK_COLUMNS, r, strict=True)) for r in rows],
            }
            json.dump(payload, fh, indent=2)
            fh.write("\n")
        else:
            writer = csv.writer(fh, lineterminator="\n")
            writer.writerow(LINK_COLUMNS)
            writer.writerows(rows)
    return path
