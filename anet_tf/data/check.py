"""``anet-tf data check``: what a dataset holds and what is wrong with it.

One notion of a valid dataset, for ``fit`` and ``data check`` alike: both read it
with :func:`anet_tf.data.readers.load_dataset` (``fit`` stops at the first problem,
``data check`` lists them all, in the same words), then judge the splits as a whole
with :func:`split_problems` (an empty split, vehicles in both train and test, no
query that can be scored: ``fit`` refuses them in :func:`preflight`) and
:func:`split_warnings` (what training lives with and both say: training identities
with a single image, some queries without a match).

:func:`check` reads a dataset folder leniently (every problem at once, images
decoded) or takes an already-read :class:`ReidDataset`, and returns statistics,
problems and warnings as a JSON-serialisable dict; :func:`format_report` prints it
as tables.
"""

from __future__ import annotations

import math
import os
import sys

from anet_tf.data.generic import image_header_problem
from anet_tf.data.generic import image_problem
from anet_tf.data.generic import manifest_attributes
from anet_tf.data.generic import read_folder
from anet_tf.data.image_rules import MAX_IMAGE_PIXELS
from anet_tf.data.records import SPLITS
from anet_tf.data.records import DataError
from anet_tf.data.records import Record
from anet_tf.data.records import ReidDataset
from anet_tf.data.records import pattern_index

UNKNOWN_KEY = "(unknown)"
MAX_PRINTED_PROBLEMS = 50


def dataset_stats(ds: ReidDataset) -> dict:
    """Counts per split and attribute (plain dict, JSON-serialisable).

    Returns:
        ``{"name", "root", "attributes": {attr: [classes]}, "splits": {split: {
        "images", "identities", "cameras", "images_per_identity": {"min", "mean",
        "max"} (None when empty), "attributes": {attr: {class: count, ...,
        "(unknown)": count}}}}, "patterns": {"possible", "train_seen",
        "train_unknown_images"}, "queries_without_match", "tracks"}``. Cameras
        count the distinct camera ids other than -1. ``tracks`` is None for a
        dataset without track ids, else per split ``{"tracks", "images_in_tracks",
        "length": {"min", "median", "mean", "max"} (None when none)}``.
    """
    num_classes = ds.num_classes
    train_patterns = [pattern_index(r.attributes, num_classes) for r in ds.train]
    return {
        "name": ds.name,
        "root": ds.root,
        "attributes": {
            name: list(classes)
            for name, classes in zip(
                ds.attribute_names, ds.attribute_classes, strict=True
            )
        },
        "splits": {split: _split_stats(ds, ds.split(split)) for split in SPLITS},
        "patterns": {
            "possible": math.prod(num_classes) if num_classes else 0,
            "train_seen": len({p for p in train_patterns if p >= 0}),
            "train_unknown_images": sum(p < 0 for p in train_patterns),
        },
        "queries_without_match": len(_unmatched_queries(ds)),
        "tracks": _track_stats(ds),
    }


def _track_stats(ds: ReidDataset) -> dict | None:
    """Tracks per split and their lengths (crops per track); None without any."""
    if not any(r.track_id is not None for s in SPLITS for r in ds.split(s)):
        return None
    out = {}
    for split in SPLITS:
        lengths: dict[str, int] = {}
        for r in ds.split(split):
            if r.track_id is not None:
                lengths[r.track_id] = lengths.get(r.track_id, 0) + 1
        counts = sorted(lengths.values())
        out[split] = {
            "tracks": len(counts),
            "images_in_tracks": sum(counts),
            "length": {
                "min": counts[0],
                "median": counts[len(counts) // 2],
                "mean": round(sum(counts) / len(counts), 3),
                "max": counts[-1],
            }
            if counts
            else None,
        }
    return out


def check(
    source: str | os.PathLike | ReidDataset,
    attributes: list[str] | None = None,
    verify_images: bool = True,
    max_pixels: int = MAX_IMAGE_PIXELS,
) -> dict:
    """Statistics and every problem of a dataset.

    Args:
        source: a folder in the generic format (read leniently: rows with errors
            are reported and left out of the statistics), or a dataset any reader
            returned (its ``problems`` are kept).
        attributes: for a folder, the attributes to check; default all attribute
            columns of its manifest.
        verify_images: decode every image (of the folder's rows, or of every record
            of a dataset); reads every file, so it takes a while on large datasets.
        max_pixels: the largest image accepted (``data.max_image_pixels``).

    Returns:
        ``{"stats": dataset_stats(...), "problems": [str, ...], "warnings": [str,
        ...], "ok": bool}``, ``ok`` when there is no problem (warnings do not
        count: ``fit`` trains with them).
    """
    if isinstance(source, ReidDataset):
        dataset = source
        problems = list(dataset.problems)
        if verify_images:
            problems += image_problems(dataset, max_pixels)
    else:
        root = os.fspath(source)
        if not os.path.isdir(root):
            raise DataError(
                f"{root}: "
                + ("is a file, not a dataset folder" if os.path.exists(root) else "no such folder")
            )
        if attributes is None:
            attributes = manifest_attributes(root)
        dataset = read_folder(
            root,
            attributes,
            check_images=True,
            strict=False,
            verify_images=verify_images,
            max_pixels=max_pixels,
        )
        problems = list(dataset.problems)
    problems += split_problems(dataset)
    return {
        "stats": dataset_stats(dataset),
        "problems": problems,
        "warnings": split_warnings(dataset),
        "ok": not problems,
    }


def preflight(ds: ReidDataset, max_pixels: int, verbose: bool = True) -> None:
    """The checks ``fit`` runs before any training, so a bad input is named in
    seconds instead of after hours: every image of every split by its header and
    last bytes (:func:`image_header_problem`: missing, empty, undecodable format,
    truncated, over ``max_pixels``: the rules the readers apply in the graph),
    raising :class:`DataError` with the count and
    the first paths; then the splits as a whole, raising the first of
    :func:`split_problems` (the words ``data check`` lists it in) and printing
    :func:`split_warnings` to stderr. Damaged data inside a complete-looking file is
    found only by decoding: ``anet-tf data check``.
    """
    import time
    from concurrent.futures import ThreadPoolExecutor

    t0 = time.perf_counter()
    first_split: dict[str, str] = {}
    for split in SPLITS:
        for r in ds.split(split):
            first_split.setdefault(r.path, split)
    seen = list(first_split)
    with ThreadPoolExecutor(max_workers=8) as pool:  # file-system latency, not CPU
        found = list(pool.map(lambda p: image_header_problem(p, max_pixels), seen, chunksize=256))
    bad = [f"{p} ({first_split[p]}) {problem}" for p, problem in zip(seen, found) if problem]
    if bad:
        shown = "; ".join(bad[:3]) + ("; ..." if len(bad) > 3 else "")
        raise DataError(
            f"{len(bad)} of {len(seen)} images cannot be used: {shown} (anet-tf data "
            "check lists them all)"
        )
    problems = split_problems(ds)
    if problems:
        raise DataError(problems[0])
    if verbose:
        print(f"[anet-tf] checked {len(seen)} images (headers) in {time.perf_counter() - t0:.1f} s")
    for warning in split_warnings(ds):
        print(f"[anet-tf] warning: {warning}", file=sys.stderr)


def image_problems(ds: ReidDataset, max_pixels: int = MAX_IMAGE_PIXELS) -> list[str]:
    """Images of any split that are missing, cannot be decoded, are larger than
    ``max_pixels`` or in a format the input pipeline cannot read, each named by its
    path."""
    problems = []
    for split in SPLITS:
        for r in ds.split(split):
            problem = image_problem(r.path, max_pixels)
            if problem:
                problems.append(f"{r.path}: {split} image {problem}")
    return problems


def split_problems(ds: ReidDataset) -> list[str]:
    """What ``fit`` refuses in the splits as a whole, which no single manifest line
    shows: an empty split, vehicles in both train and test, queries none of which
    has a gallery match (nothing to score)."""
    where = f"{ds.root} ({ds.name})"
    problems = []
    for split in SPLITS:
        if split == "query" and ds.name == "vehicleid":
            continue  # VehicleID draws its queries from the gallery list (10 trials)
        if not ds.split(split):
            problems.append(f"{where}: the {split} split is empty")
    unmatched = _unmatched_queries(ds)
    if unmatched and len(unmatched) == len(ds.query):
        problems.append(f"{_unmatched_message(ds, unmatched)}: none can be scored")
    train_ids = {r.pid for r in ds.train}
    test_ids = {r.pid for r in ds.query} | {r.pid for r in ds.gallery}
    shared = sorted(train_ids & test_ids)
    if shared:
        problems.append(
            f"{where}: {len(shared)} vehicle ids are in both train and query/gallery "
            f"(e.g. {', '.join(map(str, shared[:5]))}); the test would measure "
            f"vehicles seen in training: keep every test vehicle out of train"
        )
    return problems


def split_warnings(ds: ReidDataset) -> list[str]:
    """What ``fit`` trains with but says (``data check`` lists it and stays OK):
    training identities with a single image, queries without a gallery match (some,
    not all: :func:`split_problems`)."""
    where = f"{ds.root} ({ds.name})"
    warnings = []
    counts: dict[int, int] = {}
    for r in ds.train:
        counts[r.pid] = counts.get(r.pid, 0) + 1
    single = sorted(pid for pid, n in counts.items() if n == 1)
    if single:
        warnings.append(
            f"{where}: {len(single)} of {len(counts)} training identities have a "
            f"single image (e.g. {', '.join(map(str, single[:5]))}): they are sampled "
            "with repeats and give the triplet loss no real positive"
        )
    unmatched = _unmatched_queries(ds)
    if unmatched and len(unmatched) < len(ds.query):
        warnings.append(_unmatched_message(ds, unmatched))
    return warnings


def _unmatched_message(ds: ReidDataset, unmatched: list[Record]) -> str:
    examples = ", ".join(r.path for r in unmatched[:3])
    return (
        f"{ds.root} ({ds.name}): {len(unmatched)} of {len(ds.query)} queries have no "
        f"gallery image of the same vehicle from another camera, so evaluation skips "
        f"them (e.g. {examples})"
    )


def format_report(report: dict) -> str:
    """The report of :func:`check` as human-readable tables."""
    stats = report["stats"]
    lines = [f"dataset {stats['name']} at {stats['root']}"]
    settings = report.get("checked_for")
    if settings:
        lines.append(
            "checked as fit reads it with "
            + ", ".join(f"{k}={_setting(v)}" for k, v in settings.items())
        )
    lines.append("")
    header = ("split", "images", "ids", "cameras", "img/id min", "mean", "max")
    rows = []
    for split, s in stats["splits"].items():
        per_id = s["images_per_identity"] or {"min": "-", "mean": "-", "max": "-"}
        mean = per_id["mean"]
        rows.append(
            (
                split,
                s["images"],
                s["identities"],
                s["cameras"],
                per_id["min"],
                f"{mean:.1f}" if isinstance(mean, float) else mean,
                per_id["max"],
            )
        )
    lines += _table(header, rows)

    for name, classes in stats["attributes"].items():
        lines += ["", f"attribute {name} ({len(classes)} classes)"]
        rows = [
            (
                cls,
                *(stats["splits"][split]["attributes"][name][cls] for split in SPLITS),
            )
            for cls in [*classes, UNKNOWN_KEY]
        ]
        lines += _table(("class", *SPLITS), rows)
    if stats.get("tracks"):
        rows = []
        for split, t in stats["tracks"].items():
            length = t["length"] or dict.fromkeys(("min", "median", "mean", "max"), "-")
            rows.append(
                (split, t["tracks"], t["images_in_tracks"], length["min"],
                 length["median"], length["mean"], length["max"])
            )  # fmt: skip
        lines += ["", "tracks (crops of one vehicle by one camera)"]
        lines += _table(
            ("split", "tracks", "images", "length min", "median", "mean", "max"), rows
        )
    patterns = stats["patterns"]
    if stats["attributes"]:
        lines += [
            "",
            f"attribute patterns: {patterns['possible']} possible, "
            f"{patterns['train_seen']} seen in train, "
            f"{patterns['train_unknown_images']} train images with an unknown "
            f"attribute",
        ]

    for title in ("warnings", "problems"):
        found = report.get(title, [])
        if title == "warnings" and not found:
            continue
        lines += ["", f"{title}: {len(found)}"]
        lines += [f"  - {p}" for p in found[:MAX_PRINTED_PROBLEMS]]
        if len(found) > MAX_PRINTED_PROBLEMS:
            lines.append(f"  ... and {len(found) - MAX_PRINTED_PROBLEMS} more")
    lines += ["", "OK" if report["ok"] else "NOT OK"]
    return "\n".join(lines)


# ------------------------------------------------------------------------ helpers


def _setting(value) -> str:
    """A value as ``--set`` takes it: ``[color, type]``, ``anet``."""
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(map(str, value)) + "]"
    return str(value)


def _split_stats(ds: ReidDataset, records: list[Record]) -> dict:
    per_id: dict[int, int] = {}
    for r in records:
        per_id[r.pid] = per_id.get(r.pid, 0) + 1
    counts = list(per_id.values())
    attributes = {}
    for i, (name, classes) in enumerate(
        zip(ds.attribute_names, ds.attribute_classes, strict=True)
    ):
        histogram = {cls: 0 for cls in classes}
        histogram[UNKNOWN_KEY] = 0
        for r in records:
            value = r.attributes[i]
            histogram[classes[value] if value >= 0 else UNKNOWN_KEY] += 1
        attributes[name] = histogram
    return {
        "images": len(records),
        "identities": len(per_id),
        "cameras": len({r.camid for r in records if r.camid >= 0}),
        "images_per_identity": {
            "min": min(counts),
            "mean": round(sum(counts) / len(counts), 3),
            "max": max(counts),
        }
        if counts
        else None,
        "attributes": attributes,
    }


def _unmatched_queries(ds: ReidDataset) -> list[Record]:
    """Queries without a gallery image of the same vehicle from another camera (any
    camera where the dataset has none): the evaluation protocol cannot score them."""
    cameras: dict[int, set[int]] = {}
    for r in ds.gallery:
        cameras.setdefault(r.pid, set()).add(r.camid)
    unmatched = []
    for q in ds.query:
        gallery_cams = cameras.get(q.pid, set())
        if q.camid < 0:
            ok = bool(gallery_cams)
        else:
            ok = bool(gallery_cams - {q.camid})
        if not ok:
            unmatched.append(q)
    return unmatched


def _table(header: tuple, rows: list[tuple]) -> list[str]:
    cells = [tuple(str(c) for c in header)] + [tuple(str(c) for c in r) for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    out = []
    for k, row in enumerate(cells):
        first = row[0].ljust(widths[0])
        rest = "  ".join(c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True))
        out.append(f"{first}  {rest}".rstrip())
        if k == 0:
            out.append("-" * len(out[0]))
    return out
