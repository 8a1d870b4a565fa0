"""What every gallery backend shares: the rows a gallery holds, attribute filters,
the model check, matches and the index settings.

A gallery is a set of rows, one per embedded image: the L2-normalised embedding,
the image path, vehicle id (``pid``), camera id (``camid``), capture time, and per
attribute the predicted class, the known class (as class indices, -1 unknown) and
the predicted class probabilities; plus the record of the model that embedded
them.

A gallery holds images or tracks, never both (:func:`holds_tracks`). A gallery of
tracks is built from files of ``anet-tf embed --per-track`` (one row per track: its
mean embedding, its first crop's path, vehicle and camera); each row also keeps
``track_id``, ``time_last`` (``time`` is the track's first time) and
``track_length`` (its crops), a search returns them with each match, and a time
window keeps the tracks whose span [time, time_last] overlaps it.

Two backends store it:

* a faiss index folder (:mod:`anet_tf.search.index`), the target of any path that
  is not a Milvus URI;
* a Milvus collection (:mod:`anet_tf.search.milvus`), the target of a Milvus URI:
  a Milvus Lite database file (``gallery.db``, run in-process) or a server or
  cluster (``http://host:19530``).

Both answer :meth:`Gallery.search` with the same arguments and the same meaning
(on the same rows, their exact kinds return the same top-k ids), and
:mod:`anet_tf.search.targets` opens, builds and adds to either by target, so the
commands are written once.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import field
from dataclasses import replace

import numpy as np

from anet_tf.search.embeddings import Embeddings
from anet_tf.search.embeddings import check_track_spans
from anet_tf.search.embeddings import unknown_known_labels
from anet_tf.search.errors import IndexMismatchError
from anet_tf.search.errors import SearchError
from anet_tf.search.sources import parse_time

KINDS = ("flat", "ivf", "ivfpq", "hnsw", "ivfpqr")
# ivfpqr (faiss only): IVF-PQ with an HNSW coarse quantizer whose shortlist of
# k_factor * k is re-ranked on finer codes (benchmarks/search_scale.py, docs/search.md).
REFINES = ("flat", "fp16", "sq8", "sq4", "fp16-disk")
# The refine whose fp16 codes stay on disk (INDEX/refine.npy, memory-mapped), not in
# the faiss index: only the IVF-PQ is held in memory (anet_tf/search/index.py).
REFINE_ON_DISK = "fp16-disk"
IVFPQR_K_FACTOR = 50
IVFPQR_EF_SEARCH = 128
# ivfpqr's PQ bytes per image (at most; D/4 below 512-d) above IVFPQR_FP16_BYTES
# of refine codes, where its default refine goes to disk
IVFPQR_LARGE_M = 128
# Refine codes of at most this many bytes in all are fp16 in memory (2·D bytes an
# image), more fp16 on disk (refine.npy, memory-mapped): at 10^7 x 512-d, with
# PQ128, it kept 1.3 GB in memory at recall@10 0.956, where SQ8 in memory would
# take 5.9 GB for SQ8's ~0.91 (docs/search.md).
IVFPQR_FP16_BYTES = 2**31
LABEL_SOURCES = ("predicted", "known")
HNSW_M = 32
HNSW_EF_CONSTRUCTION = 200
HNSW_EF_SEARCH = 64
# The columns a gallery of tracks has besides an image gallery's.
TRACK_COLUMNS = ("track_id", "time_last", "track_length")


# ------------------------------------------------------------------------- filters


def parse_where(specs: str | Sequence[str] | None) -> dict[str, list[str]]:
    """``"color=red|blue,type=sedan"`` (or several such strings) -> ``{"color":
    ["red", "blue"], "type": ["sedan"]}``.

    Conditions are joined by ``,`` (and across strings) with AND; ``|`` separates
    the classes one attribute may take. Repeating an attribute intersects.

    Raises:
        SearchError: a condition without ``=`` or without a value.
    """
    if specs is None:
        return {}
    if isinstance(specs, str):
        specs = [specs]
    where: dict[str, list[str]] = {}
    for spec in specs:
        for cond in spec.split(","):
            cond = cond.strip()
            if not cond:
                continue
            name, sep, values = cond.partition("=")
            name = name.strip()
            allowed = [v.strip() for v in values.split("|") if v.strip()]
            if not sep or not name or not allowed:
                raise SearchError(
                    f"--where {spec!r}: {cond!r} is not ATTRIBUTE=CLASS[|CLASS...] "
                    f"(e.g. color=red,type=sedan|suv)"
                )
            if name in where:
                allowed = [v for v in where[name] if v in allowed]
            where[name] = allowed
    return where


def where_codes(
    model: dict, where: dict[str, list[str]], labels: str = "predicted"
) -> dict[str, list[int]]:
    """``where`` as the class indices each filtered column may hold: ``{"<a>_pred"
    (or "<a>_known"): [class index, ...]}``; an empty list matches nothing.

    Raises:
        SearchError: an attribute or class the model does not have, listing the
            valid ones; an unknown label source.
    """
    if labels not in LABEL_SOURCES:
        raise SearchError(
            f"labels must be one of {', '.join(LABEL_SOURCES)}. "
            f"Received: labels={labels!r}"
        )
    attributes = {a["name"]: list(a["classes"]) for a in model["attributes"]}
    codes = {}
    for name, values in where.items():
        if name not in attributes:
            names = ", ".join(attributes) or "no attributes"
            raise SearchError(
                f"--where: the model has no attribute {name!r}; it predicts {names}"
            )
        classes = attributes[name]
        bad = [v for v in values if v not in classes]
        if bad:
            raise SearchError(
                f"--where: {name} has no class {', '.join(map(repr, bad))}; its "
                f"classes are {', '.join(classes)}"
            )
        suffix = "pred" if labels == "predicted" else "known"
        codes[f"{name}_{suffix}"] = [classes.index(v) for v in values]
    return codes


def parse_cameras(
    specs: int | str | Sequence[int | str] | None, flag: str = "--camera"
) -> tuple[int, ...] | None:
    """Camera ids from ``"3,7"``, ``"3-7"`` (a range, both ends kept), ints, or a
    list of those (their union), sorted; None for None.

    Raises:
        SearchError: a part that is not a camera id (an integer >= 0) or a range
            ``A-B`` with ``A <= B``, naming ``flag``.
    """
    if specs is None:
        return None
    if isinstance(specs, (int, np.integer, str)):
        specs = [specs]
    cameras: set[int] = set()
    for spec in specs:
        if isinstance(spec, (int, np.integer)) and not isinstance(spec, bool):
            parts = [str(int(spec))]
        else:
            parts = [p.strip() for p in str(spec).split(",")]
        for part in parts:
            low, dash, high = part.partition("-")
            try:
                first, last = int(low), int(high if dash else low)
            except ValueError:
                first, last = -1, -1
            if not part or first < 0 or last < first:
                raise SearchError(
                    f"{flag} {spec!r}: {part!r} is not a camera id (an integer >= 0) "
                    f"or a range A-B (e.g. 3,7 or 3-7)"
                )
            cameras.update(range(first, last + 1))
    return tuple(sorted(cameras))


@dataclass(frozen=True)
class Selection:
    """What a search keeps, checked and in class indices: hashable, so a backend
    keeps what it made of it (faiss: the bitmap) for the next query.

    Attributes:
        codes: ``((column, (class index, ...)), ...)``: per ``<a>_pred`` (or
            ``<a>_known``) column the classes kept (:func:`where_codes`).
        cameras: the cameras kept (None: any, unknown ones too).
        not_cameras: cameras left out (with any of them, unknown cameras too).
        since, until: capture times kept, [since, until) in seconds since
            1970-01-01 UTC (with either, unknown times are left out).
        spans: the items are tracks, spans of time [time, time_last]: the time
            window keeps those that overlap it (``time < until`` and
            ``time_last >= since``); else an item's one time must be in it.
    """

    codes: tuple[tuple[str, tuple[int, ...]], ...] = ()
    cameras: tuple[int, ...] | None = None
    not_cameras: tuple[int, ...] = ()
    since: int | None = None
    until: int | None = None
    spans: bool = False

    def __bool__(self) -> bool:
        return bool(self.codes) or self.on_camera or self.on_time

    @property
    def on_camera(self) -> bool:
        return self.cameras is not None or bool(self.not_cameras)

    @property
    def on_time(self) -> bool:
        return self.since is not None or self.until is not None

    @property
    def kept_cameras(self) -> tuple[int, ...] | None:
        """``cameras`` less ``not_cameras`` (None: any camera but those)."""
        if self.cameras is None:
            return None
        return tuple(c for c in self.cameras if c not in self.not_cameras)

    @property
    def nothing(self) -> bool:
        """Whether it keeps no item whatever the gallery holds."""
        return any(not allowed for _, allowed in self.codes) or (
            self.kept_cameras == ()
        )

    def without_camera(self, camid: int) -> Selection:
        """This selection leaving out camera ``camid`` too."""
        dropped = tuple(sorted({*self.not_cameras, int(camid)}))
        return replace(self, not_cameras=dropped)


def camera_time_filter(cameras=None, not_cameras=None, since=None, until=None) -> dict:
    """The camera and capture-time conditions of a search, checked: ``cameras``
    (kept) and ``not_cameras`` (left out) as :func:`parse_cameras` takes them,
    ``since`` (inclusive) and ``until`` (exclusive) as seconds since 1970-01-01
    UTC or text :func:`~anet_tf.search.sources.parse_time` reads (ISO 8601 or
    seconds, as ``index remove`` takes them). Returns the keyword arguments of
    :meth:`Gallery.search` (``cameras``, ``not_cameras``, ``since``, ``until``).

    Raises:
        SearchError: a camera or time that cannot be read; an empty window
            (``since`` not before ``until``); cameras all left out again.
    """
    times = {}
    for flag, value in (("since", since), ("until", until)):
        if value is None or isinstance(value, (int, np.integer)):
            times[flag] = None if value is None else int(value)
            continue
        try:
            times[flag] = parse_time(str(value))
        except ValueError as exc:
            raise SearchError(f"--{flag}: {exc}") from None
    if None not in times.values() and times["since"] >= times["until"]:
        raise SearchError(
            f"--since {since} is not before --until {until}: the capture-time window "
            f"[since, until) is empty"
        )
    kept = parse_cameras(cameras, "--camera")
    dropped = parse_cameras(not_cameras, "--not-camera") or ()
    if kept is not None and not set(kept) - set(dropped):
        raise SearchError(
            f"--camera {','.join(map(str, kept))} and --not-camera "
            f"{','.join(map(str, dropped))}: no camera is left"
        )
    return {"cameras": kept, "not_cameras": dropped, **times}


# ---------------------------------------------------------------------- the model


def check_same_model(
    expected: dict, got: dict, expected_name: str, got_name: str, advice: str | None = None
) -> None:
    """Raise :class:`IndexMismatchError` unless both model records agree on the
    embedding dimension and fingerprint; ``advice`` (what to do) replaces the
    default, which is a query's (search with the index's model)."""
    d_e, d_g = int(expected["embedding_dim"]), int(got["embedding_dim"])
    if advice is None:
        advice = (
            f"Search with the model the index was built with (--model "
            f"{expected['path']}), or embed the gallery again with this model and "
            f"rebuild the index"
        )
    if d_e != d_g:
        raise IndexMismatchError(
            f"{expected_name} holds {d_e}-d embeddings of the model {expected['path']} "
            f"(fingerprint {expected['fingerprint']}), but {got_name} "
            f"{got['path']} gives {d_g}-d embeddings: they were made by different "
            f"models. {advice}"
        )
    if expected["fingerprint"] != got["fingerprint"]:
        raise IndexMismatchError(
            f"{expected_name} was built with the model {expected['path']} "
            f"(fingerprint {expected['fingerprint']}), but {got_name} {got['path']} "
            f"has fingerprint {got['fingerprint']} (other weights or outputs): "
            f"similarities across models mean nothing. {advice}"
        )


# ------------------------------------------------------------------------ the rows


@dataclass
class Rows:
    """Gallery rows as columns (what :func:`gallery_rows` makes of embeddings
    files): ``vectors`` float32 [N, D], and in ``columns`` path (bytes, UTF-8),
    pid, camid, time (int64, -1 unknown), per attribute ``<a>_pred`` and
    ``<a>_known`` (int16 class indices, -1 unknown) and ``<a>_probs`` (float32
    [N, m_a]); a gallery of tracks adds :data:`TRACK_COLUMNS` (track_id as UTF-8
    bytes, time_last and track_length int64)."""

    vectors: np.ndarray
    columns: dict[str, np.ndarray]
    model: dict
    sources: list[str]
    warnings: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.vectors)

    @property
    def paths(self) -> list[str]:
        return [p.decode("utf-8") for p in self.columns["path"].tolist()]

    @property
    def tracks(self) -> bool:
        """Whether the rows are tracks (:func:`holds_tracks`)."""
        return "track_id" in self.columns


def holds_tracks(emb: Embeddings) -> bool:
    """Whether an embeddings file is one of tracks, as ``anet-tf embed --per-track``
    writes: some row has a track id and no track id is on two rows. A file of
    images from a manifest with track ids (its crops share their track's id) is a
    file of images; so is a file without track ids."""
    ids = [t for t in np.asarray(emb.track_ids, dtype=str).tolist() if t]
    return bool(ids) and len(set(ids)) == len(ids)


def _what(tracks: bool) -> str:
    return "tracks" if tracks else "images"


def check_rows_kind(embeddings: Sequence[Embeddings], tracks: bool, where: str) -> None:
    """Refuse a file of tracks for a gallery of images or the other way round
    (:func:`holds_tracks`), naming the file and ``where`` (the gallery).

    Raises:
        SearchError: one line naming the first file of the other kind.
    """
    for i, emb in enumerate(embeddings, start=1):
        if holds_tracks(emb) == tracks:
            continue
        made = (
            "one row per track (anet-tf embed --per-track)"
            if not tracks
            else "one row per image"
        )
        raise SearchError(
            f"{emb.file or emb.source or f'embeddings file {i}'}: a file of "
            f"{_what(not tracks)} ({made}), but {where} holds {_what(tracks)}; a "
            f"gallery holds images or tracks, not both: build a gallery of "
            f"{_what(not tracks)} apart (anet-tf index build); nothing was written"
        )


def _class_codes(values: np.ndarray, classes: list[str]) -> np.ndarray:
    lookup = {c: i for i, c in enumerate(classes)}
    return np.asarray([lookup.get(v, -1) for v in values.tolist()], np.int16)


def gallery_rows(
    embeddings: Sequence[Embeddings],
    model: dict | None = None,
    what: str = "file",
    tracks: bool | None = None,
) -> Rows:
    """The rows of one or more embeddings files of one model, in order.

    Args:
        embeddings: the files' contents.
        model: the model they must come from (an existing gallery's); default the
            first file's.
        what: how to name the model of ``model`` in a refusal.
        tracks: whether the gallery they go to holds tracks (an existing
            gallery's); default: as the first file (:func:`holds_tracks`).

    Raises:
        IndexMismatchError: the files come from different models (or not from
            ``model``), or a file's vectors do not have its model's dimension.
        SearchError: no embeddings; an embedding with NaN or Inf
            (:func:`check_finite`); files of tracks and of images together
            (:func:`check_rows_kind`).
    """
    embeddings = list(embeddings)
    if not embeddings or not sum(len(e) for e in embeddings):
        raise SearchError("no embeddings to index")
    if tracks is None:
        tracks = holds_tracks(embeddings[0])
        check_rows_kind(embeddings, tracks, embeddings[0].file or "embeddings file 1")
    else:
        check_rows_kind(embeddings, tracks, what)
    if tracks:
        for i, emb in enumerate(embeddings, start=1):
            check_track_spans(emb, emb.file or emb.source or f"embeddings file {i}")
    model = _check_models(embeddings, model, what)
    for emb in embeddings:
        check_finite(emb)
    vectors = np.ascontiguousarray(
        np.concatenate([e.embedding for e in embeddings], 0).astype(np.float32)
    )
    if vectors.shape[1] != int(model["embedding_dim"]):
        raise IndexMismatchError(
            f"the embeddings are {vectors.shape[1]}-d, their model records "
            f"{model['embedding_dim']}"
        )
    names = [a["name"] for a in model["attributes"]]
    classes = [list(a["classes"]) for a in model["attributes"]]
    columns: dict[str, np.ndarray] = {
        "path": np.asarray(
            [p.encode("utf-8") for e in embeddings for p in e.paths], dtype=bytes
        ),
        "pid": np.concatenate([e.pids for e in embeddings]).astype(np.int64),
        "camid": np.concatenate([e.camids for e in embeddings]).astype(np.int64),
        "time": np.concatenate([e.times for e in embeddings]).astype(np.int64),
    }
    if tracks:
        columns.update(_track_columns(embeddings))
    warnings = []
    for name, cls in zip(names, classes, strict=True):
        columns[f"{name}_pred"] = np.concatenate(
            [np.argmax(e.probs[name], axis=1) for e in embeddings]
        ).astype(np.int16)
        columns[f"{name}_known"] = np.concatenate(
            [_class_codes(e.known[name], cls) for e in embeddings]
        )
        columns[f"{name}_probs"] = np.concatenate(
            [np.asarray(e.probs[name], np.float32) for e in embeddings]
        )
    for e in embeddings:
        for name, values in unknown_known_labels(e).items():
            warnings.append(
                f"{e.source}: known {name} labels {values} are not classes of the "
                f"model ({', '.join(classes[names.index(name)])}); they match no filter"
            )
    return Rows(vectors, columns, model, [e.source for e in embeddings], warnings)


def _track_columns(embeddings: Sequence[Embeddings]) -> dict[str, np.ndarray]:
    """The columns only a gallery of tracks has: track id, last time, length."""
    columns: dict[str, np.ndarray] = {}
    columns["track_id"] = np.asarray(
        [t.encode("utf-8") for e in embeddings for t in e.track_ids.tolist()],
        dtype=bytes,
    )
    columns["time_last"] = np.concatenate(
        [e.times_last for e in embeddings]
    ).astype(np.int64)
    columns["track_length"] = np.concatenate(
        [e.track_lengths for e in embeddings]
    ).astype(np.int64)
    return columns


def _check_models(embeddings: Sequence[Embeddings], model: dict | None, what: str) -> dict:
    """The model of a gallery's new rows: ``model`` (an existing gallery's), or the
    first file's; every file must come from it (:func:`check_same_model`)."""
    if model is None:
        model, start, expected = embeddings[0].model, 1, "embeddings file 1"
        advice = (
            "A gallery holds the embeddings of one model: embed every part with the "
            f"same --model (anet-tf embed), e.g. {model['path']}, then build it"
        )
    else:
        start, expected = 0, what
        advice = (
            f"Embed these images with the gallery's model (--model {model['path']}), "
            "or build a new gallery for this model"
        )
    for i, emb in enumerate(embeddings[start:], start=start + 1):
        check_same_model(model, emb.model, expected, f"file {i} ({emb.source}), model", advice)
    return model


def check_finite(emb: Embeddings) -> None:
    """Refuse embeddings with a NaN or infinite value (a gallery row that would
    match nothing, or everything), naming the file and the first such row.

    Raises:
        SearchError: naming the file (or source), the row, its path and how many.
    """
    bad = ~np.isfinite(np.asarray(emb.embedding, np.float32)).all(axis=1)
    if not bad.any():
        return
    row = int(np.argmax(bad))
    value = "NaN" if np.isnan(emb.embedding[row]).any() else "an infinite value"
    raise SearchError(
        f"{emb.file or emb.source}: row {row} ({emb.paths[row]}) has {value} in its "
        f"embedding ({int(bad.sum())} of {len(bad)} rows are not finite); embed those "
        f"images again or leave them out; nothing was written"
    )


def check_new_paths(rows: Rows, existing: Sequence[str], target: str) -> None:
    """Refuse rows whose image path is already in the gallery ``target`` (whose
    paths among the new ones are ``existing``) or repeated among the new rows:
    ``index add`` appends new sightings, and an image is one row."""
    paths = rows.paths
    seen: set[str] = set()
    repeated = [p for p in paths if p in seen or seen.add(p)]
    if repeated:
        raise SearchError(
            f"index add: {repeated[0]} is given {paths.count(repeated[0])} times "
            f"({len(set(repeated))} paths repeated); nothing was added"
        )
    if existing:
        raise SearchError(
            f"index add: {len(existing)} of the {len(paths)} images are already in "
            f"{target} (e.g. {sorted(existing)[0]}); an image is added once: remove "
            f"them from the file (or from the gallery) first; nothing was added"
        )


# ------------------------------------------------------------------------- matches


@dataclass
class Match:
    """One gallery item found for a query; ``probability`` (P(same vehicle) of
    its score) and ``decision`` (``"same"`` or ``"different"``) are set by
    :meth:`OperatingPoint.decide <anet_tf.search.decisions.OperatingPoint.decide>`
    and None otherwise."""

    rank: int
    id: int
    score: float
    path: str
    pid: int
    camid: int
    predicted: dict[str, str]
    known: dict[str, str]
    time: int = -1
    confidence: dict[str, float] = field(default_factory=dict)
    track_id: str | None = None  # a gallery of tracks: the track (None: an image)
    time_last: int = -1
    track_length: int = 1
    probability: float | None = None
    decision: str | None = None

    def to_dict(self) -> dict:
        track = (
            {}
            if self.track_id is None
            else {
                "track_id": self.track_id,
                "time_last": self.time_last,
                "track_length": self.track_length,
            }
        )
        return {
            "rank": self.rank,
            "id": self.id,
            "score": round(float(self.score), 6),
            "path": self.path,
            "pid": self.pid,
            "camid": self.camid,
            "time": self.time,
            "attributes": self.predicted,
            "confidence": {a: round(float(p), 6) for a, p in self.confidence.items()},
            "known": self.known,
            **track,
            **(
                {}
                if self.decision is None
                else {
                    "probability": round(float(self.probability), 6),
                    "decision": self.decision,
                }
            ),
        }


def make_match(model: dict, rank: int, item: int, score: float, row: dict) -> Match:
    """The :class:`Match` of a row (a dict of the :class:`Rows` columns' values)."""
    predicted, known, confidence = {}, {}, {}
    for a in model["attributes"]:
        name, classes = a["name"], list(a["classes"])
        p, k = int(row[f"{name}_pred"]), int(row[f"{name}_known"])
        predicted[name] = classes[p] if p >= 0 else ""
        known[name] = classes[k] if k >= 0 else ""
        probs = row.get(f"{name}_probs")
        if probs is not None and p >= 0 and len(probs) > p and probs[p] == probs[p]:
            confidence[name] = float(probs[p])  # (NaN: not recorded)
    path = row["path"]
    track = {}
    if "track_id" in row:
        tid = row["track_id"]
        track = {
            "track_id": tid.decode("utf-8") if isinstance(tid, bytes) else str(tid),
            "time_last": int(row["time_last"]),
            "track_length": int(row["track_length"]),
        }
    return Match(
        rank=rank,
        id=int(item),
        score=float(score),
        path=path.decode("utf-8") if isinstance(path, bytes) else str(path),
        pid=int(row["pid"]),
        camid=int(row["camid"]),
        predicted=predicted,
        known=known,
        time=int(row.get("time", -1)),
        confidence=confidence,
        **track,
    )


# --------------------------------------------------------------------- the backend


class Gallery:
    """What both backends answer. A subclass sets ``meta`` (format, kind, dim,
    params, model, sources) and ``path`` (where it is), and implements
    ``__len__``, :meth:`search` and :meth:`row`."""

    meta: dict
    path: str | None
    collection: str | None = None

    @property
    def kind(self) -> str:
        return self.meta["kind"]

    @property
    def dim(self) -> int:
        return int(self.meta["dim"])

    @property
    def model(self) -> dict:
        return self.meta["model"]

    @property
    def attribute_names(self) -> list[str]:
        return [a["name"] for a in self.meta["model"]["attributes"]]

    @property
    def holds_tracks(self) -> bool:
        """Whether the gallery's rows are tracks (its record says ``"rows":
        "tracks"``; a gallery without the key, older ones too, holds images)."""
        return self.meta.get("rows") == "tracks"

    @property
    def attribute_classes(self) -> list[list[str]]:
        return [list(a["classes"]) for a in self.meta["model"]["attributes"]]

    @property
    def where(self) -> str:
        """How to name this gallery in a message."""
        if self.collection is None:
            return str(self.path)
        return f"{self.path} (collection {self.collection})"

    def check_model(self, model: dict, what: str = "the query model") -> None:
        """Refuse embeddings of another model than the gallery's.

        Args:
            model: ``ServingModel.info()`` or an embeddings file's ``model``.
            what: how to name that model in the message.

        Raises:
            IndexMismatchError: naming both models and what to do.
        """
        check_same_model(self.model, model, "the index", what)

    def check_filter(self, where: dict[str, list[str]], labels: str = "predicted"):
        """:func:`where_codes` of this gallery's model (raises on a bad filter)."""
        return where_codes(self.model, where, labels)

    def selection(
        self,
        where: dict[str, list[str]] | None = None,
        labels: str = "predicted",
        *,
        cameras=None,
        not_cameras=None,
        since=None,
        until=None,
        by_query_camera: bool = False,
    ) -> Selection:
        """The :class:`Selection` of an attribute filter (:meth:`check_filter`)
        and camera and time conditions (:func:`camera_time_filter`), checked
        against this gallery; ``by_query_camera``: the search leaves out each
        query's own camera, a condition on the camera too.

        Raises:
            SearchError: a bad attribute filter, camera or time; a condition on
                cameras or times where the gallery records none.
        """
        codes = self.check_filter(where or {}, labels)
        chosen = Selection(
            tuple((col, tuple(sorted(set(v)))) for col, v in sorted(codes.items())),
            **camera_time_filter(cameras, not_cameras, since, until),
            spans=self.holds_tracks,
        )
        if chosen.on_camera or by_query_camera:
            self._check_recorded("camid")
        if chosen.on_time:
            self._check_recorded("time")
        return chosen

    def records(self, column: str) -> bool:  # pragma: no cover - per backend
        """Whether any item has a known value (>= 0) of ``column`` (camid, time)."""
        raise NotImplementedError

    def _check_recorded(self, column: str) -> None:
        if self.records(column):
            return
        flag, what, where = {
            "camid": ("--camera", "camera ids", "a camera_id column"),
            "time": ("--since/--until", "capture times", "a time column"),
        }[column]
        raise SearchError(
            f"{flag}: the gallery {self.where} records no {what} (every item's is "
            f"unknown), so no item would match; embed the gallery from a manifest with "
            f"{where} (or a dataset that has them) to filter on them"
        )

    @staticmethod
    def query_groups(
        selection: Selection, query_cameras, count: int
    ) -> list[tuple[np.ndarray, Selection]]:
        """The queries (positions) searched with one selection: all with
        ``selection``, or, given each query's camera (``query_cameras``, -1
        unknown), those of one camera with that camera left out (those of an
        unknown camera with ``selection`` as it is).

        Raises:
            SearchError: not one camera per query.
        """
        if query_cameras is None:
            return [(np.arange(count), selection)]
        cams = np.asarray(query_cameras, np.int64).reshape(-1)
        if len(cams) != count:
            raise SearchError(
                f"query_cameras: {len(cams)} camera ids for {count} queries; give one "
                f"per query (-1 where unknown)"
            )
        return [
            (
                np.flatnonzero(cams == c),
                selection.without_camera(c) if c >= 0 else selection,
            )
            for c in np.unique(cams)
        ]

    def check_queries(self, queries, top_k: int) -> np.ndarray:
        queries = np.ascontiguousarray(np.asarray(queries, np.float32))
        if queries.ndim != 2 or queries.shape[1] != self.dim:
            raise IndexMismatchError(
                f"queries of shape {tuple(queries.shape)} do not fit the index of "
                f"{self.dim}-d embeddings"
            )
        if top_k < 1:
            raise SearchError(f"top_k must be >= 1. Received: top_k={top_k}")
        bad = np.flatnonzero(~np.isfinite(queries).all(axis=1)) if queries.size else []
        if len(bad):
            raise SearchError(
                f"query {int(bad[0]) + 1} of {len(queries)} has a NaN or Inf in its "
                f"embedding ({len(bad)} such queries); embed it again"
            )
        return queries

    def prepare_search(
        self, queries, top_k: int, where, labels: str, filters: dict, query_cameras
    ) -> tuple[np.ndarray, list, np.ndarray, np.ndarray]:
        """What every backend's ``search`` starts with: the checked queries, their
        groups by selection (:meth:`selection` of ``where``, ``labels`` and the
        camera/time ``filters``; :meth:`query_groups`), and the empty results
        (scores -inf, ids -1, [Q, top_k])."""
        queries = self.check_queries(queries, top_k)
        chosen = self.selection(
            where, labels, **filters, by_query_camera=query_cameras is not None
        )
        q = len(queries)
        scores = np.full((q, top_k), -np.inf, np.float32)
        ids = np.full((q, top_k), -1, np.int64)
        return queries, self.query_groups(chosen, query_cameras, q), scores, ids

    def row(self, item: int) -> dict:  # pragma: no cover - per backend
        raise NotImplementedError

    def match(self, item: int, rank: int, score: float) -> Match:
        """The :class:`Match` of item ``item``."""
        return make_match(self.model, rank, item, score, self.row(item))

    def matches(self, scores: np.ndarray, ids: np.ndarray) -> list[list[Match]]:
        """Rows of :meth:`search` as lists of :class:`Match` (padding dropped)."""
        return [
            [
                self.match(int(i), rank + 1, float(s))
                for rank, (s, i) in enumerate(zip(row_s, row_i, strict=True))
                if i >= 0
            ]
            for row_s, row_i in zip(scores, ids, strict=True)
        ]


def default_ivfpq_params(n: int, dim: int) -> dict:
    """nlist about 4·sqrt(N) (a power of two, capped at N/39 so each list trains on
    39+ points), m the largest divisor of D up to min(64, D/4) (D/m dims per
    sub-quantizer, m bytes per image), 8 bits, nprobe = min(32, nlist)."""
    nlist = 2 ** max(0, round(math.log2(max(1.0, 4 * math.sqrt(n)))))
    nlist = max(1, min(nlist, n // 39 or 1))
    return {"nlist": nlist, "m": _pq_m(dim, 64), "bits": 8, "nprobe": min(32, nlist)}


def _pq_m(dim: int, most: int) -> int:
    """The largest divisor of ``dim`` up to min(``most``, D/4): the PQ
    sub-quantizers (bytes per image) of an IVF-PQ."""
    return max(d for d in range(1, max(1, min(most, dim // 4)) + 1) if dim % d == 0)


def index_params(kind: str, n: int, dim: int, **given) -> dict:
    """The settings of an index ``kind`` for ``n`` vectors of ``dim`` dimensions:
    the defaults (:func:`default_ivfpq_params` for the IVF
    kinds; M=32, efConstruction=200, efSearch=64 for HNSW) with the ``given`` ones
    (not None) on top.

    Raises:
        SearchError: an unknown kind; a PQ ``m`` that does not divide ``dim``.
    """
    if kind not in KINDS:
        raise SearchError(f"kind must be one of {', '.join(KINDS)}. Received: {kind!r}")
    if kind == "flat":
        return {}
    if kind == "hnsw":
        params = {
            "M": HNSW_M,
            "ef_construction": HNSW_EF_CONSTRUCTION,
            "ef_search": HNSW_EF_SEARCH,
        }
    else:
        params = default_ivfpq_params(n, dim)
        if kind == "ivf":
            params = {"nlist": params["nlist"], "nprobe": params["nprobe"]}
        if kind == "ivfpqr":
            in_memory = 2 * n * dim <= IVFPQR_FP16_BYTES
            if not in_memory:
                # past the in-memory refine, twice the PQ bytes (up to D/4, 128):
                # at 10^7 PQ64's shortlist lost the true top-10, PQ128's did not
                # (docs/search.md, "The refine on disk")
                params["m"] = _pq_m(dim, IVFPQR_LARGE_M)
            params.update(
                refine="fp16" if in_memory else "fp16-disk",
                k_factor=IVFPQR_K_FACTOR,
                ef_search=IVFPQR_EF_SEARCH,
                # OPQ rotating to D/2 dims before the IVF-PQ (0: none; measured
                # at D = 512, so not below 256 dims)
                opq=dim // 2 if dim >= 256 and (dim // 2) % params["m"] == 0 else 0,
            )
    for key, value in given.items():
        if value is not None and key in params:
            params[key] = value if key == "refine" else int(value)
    if params.get("refine") not in (None, *REFINES):
        raise SearchError(
            f"refine must be one of {', '.join(REFINES)}. "
            f"Received: {params['refine']!r}"
        )
    if "nlist" in params and given.get("nprobe") is None:
        params["nprobe"] = min(32, params["nlist"])
    if kind in ("ivfpq", "ivfpqr") and dim % params["m"]:
        raise SearchError(
            f"IVF-PQ: m={params['m']} sub-quantizers must divide the dimension {dim}"
        )
    return params
