"""The generic folder dataset format, for users' own data (``data.name: folder``).

Layout of a dataset folder::

    <root>/manifest.csv             path,vehicle_id,camera_id,split,<attr1>,<attr2>,...
    <root>/attributes/<attr>.txt    class names of <attr>, one per line (index = order)
    <root>/images/...               the images (any layout; ``path`` is relative)

``path`` is relative to the root and may not leave it; ``split`` is train, query or
gallery; ``camera_id`` is an integer, or empty on every row of a dataset without
cameras (then -1, as VehicleID); an attribute cell holds a class *name* from the
attribute's class file, or is empty when unknown (the attribute losses mask it).
Every image is listed once (a repeated path is an error). A cell holds at most
``csv.field_size_limit()`` characters (131,072) and no NUL byte. Blank lines of
either file are ignored. The columns of :data:`NON_ATTRIBUTE_COLUMNS` (``time``,
the capture time, :func:`parse_time`; ``track_id``) are never attributes; any
other extra column is one, read when ``data.attributes`` names it.

Tracks: a non-empty ``track_id`` names the track a crop belongs to, the crops of one
vehicle by one camera as a detector and tracker give them (``Record.track_id``). A
track lies in one camera and one vehicle, and its crops carry a ``time`` and are
listed in time order within each split; anything else is an error naming the line.

:func:`read_folder` reads it for training (stops at the first error) or, with
``strict=False``, gathers every problem at once for ``anet-tf data check``;
:func:`write_folder` writes it, so the synthetic generator and any converter share
this one definition of the format.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime
import os
import stat
from collections.abc import Iterable
from collections.abc import Iterator

from anet_tf.data.image_rules import DAMAGED
from anet_tf.data.image_rules import MAX_IMAGE_PIXELS
from anet_tf.data.image_rules import file_problem
from anet_tf.data.records import SPLITS
from anet_tf.data.records import UNKNOWN
from anet_tf.data.records import DataError
from anet_tf.data.records import FileIndex
from anet_tf.data.records import ProblemLog
from anet_tf.data.records import Record
from anet_tf.data.records import ReidDataset
from anet_tf.data.records import read_lines
from anet_tf.data.records import resolve_listed

MANIFEST = "manifest.csv"
ATTRIBUTE_DIR = "attributes"
COLUMNS = ("path", "vehicle_id", "camera_id", "split")
# Columns with a meaning of their own, never taken for attributes: the four above,
# the capture time (docs/search.md) and a tracker's id of the detection.
TIME_COLUMN = "time"
TRACK_COLUMN = "track_id"
NON_ATTRIBUTE_COLUMNS = (*COLUMNS, TIME_COLUMN, TRACK_COLUMN)


def attribute_file(root: str, attribute: str) -> str:
    """The class file of ``attribute``: ``<root>/attributes/<attribute>.txt``."""
    return os.path.join(root, ATTRIBUTE_DIR, f"{attribute}.txt")


def read_attribute_classes(root: str, attribute: str) -> list[str]:
    """The class names of ``attribute``, in file order (index = class id).

    Raises:
        DataError: the file is missing, empty, or lists a class twice.
    """
    path = attribute_file(root, attribute)
    lines = read_lines(
        path, hint=f"; it must list the {attribute} class names, one per line"
    )
    classes: list[str] = []
    first_line: dict[str, int] = {}
    for number, name in lines:
        if name in first_line:
            raise DataError(
                f"{path}:{number}: class {name!r} is listed twice (first on line "
                f"{first_line[name]})"
            )
        first_line[name] = number
        classes.append(name)
    if not classes:
        raise DataError(f"{path}: no class names; list one {attribute} class per line")
    return classes


def check_utf8(path: str) -> None:
    """Raise :class:`DataError` naming the line and column of the first byte of
    ``path`` that is not UTF-8 (a manifest saved as Latin-1 or cp1252, say)."""
    with open(path, "rb") as f:
        data = f.read()
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise DataError(
            f"{path}:{line}: not UTF-8 text (byte 0x{data[exc.start]:02x} at column "
            f"{column}); save the file as UTF-8"
        ) from None


def manifest_attributes(root: str) -> list[str]:
    """The attribute columns of ``<root>/manifest.csv`` (header order, without the
    :data:`NON_ATTRIBUTE_COLUMNS`), or [] when the manifest is missing or empty;
    :func:`anet_tf.data.check.check` of a folder uses them by default.

    Raises:
        DataError: the header is not UTF-8 text or has a cell :func:`manifest_rows`
            refuses.
    """
    header = manifest_header(root)
    return attribute_columns(header or [])


def manifest_header(root: str) -> list[str] | None:
    """The stripped header cells of ``<root>/manifest.csv``; None when there is no
    manifest.

    Raises:
        DataError: the header is not UTF-8 text or has a cell :func:`manifest_rows`
            refuses.
    """
    path = os.path.join(root, MANIFEST)
    if not os.path.isfile(path):
        return None
    check_utf8(path)
    with open(path, newline="", encoding="utf-8-sig") as f:
        _, header = next(manifest_rows(f, path, ProblemLog(strict=True)), (1, []))
    return [h.strip() for h in header]


def attribute_columns(header: list[str]) -> list[str]:
    """The columns of a manifest header that can be attributes (header order)."""
    return [h for h in header if h and h not in NON_ATTRIBUTE_COLUMNS]


def manifest_rows(
    fh: Iterable[str], path: str, log: ProblemLog
) -> Iterator[tuple[int, list[str]]]:
    """``(line, cells)`` of every record of a manifest opened with ``newline=""``,
    the header first; ``line`` is the record's last line (a quoted cell may span
    lines), as ``csv.reader``'s ``line_num``.

    A record that cannot be used is reported to ``log`` (which raises in strict
    mode) naming the file, line and column, and left out: a cell longer than
    ``csv.field_size_limit()`` (131,072 characters unless changed; an unclosed
    quote is the usual cause), a cell holding a NUL byte (a file saved as UTF-16,
    or a damaged one), or any other ``csv.Error``. When a quote is still open where
    the error struck, the rest of the file cannot be parsed reliably and is not
    read; nor is it after a bad header, whose rows mean nothing without it.

    Args:
        fh: the open manifest (an iterator of its lines).
        path: the manifest's path, for messages.
        log: where bad records are reported.
    """
    lines = _RecordLines(fh)
    reader = csv.reader(lines)
    header: list[str] | None = None
    while True:
        lines.record.clear()
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            message, stop = _csv_error(exc, path, reader.line_num, lines.record, header)
            stop = stop or header is None
            log.report(message, skipped=_STOP if stop else "row left out")
            if stop:
                return
            continue
        line = reader.line_num
        nul = any("\0" in text for text in lines.record)
        k = next((k for k, cell in enumerate(row) if "\0" in cell), -1) if nul else -1
        if k >= 0:
            log.report(
                f"{path}:{line}: {_column_name(header, k)} holds a NUL byte at "
                f"character {row[k].index(chr(0)) + 1}; a manifest is plain text (a "
                f"file saved as UTF-16 has one after every letter: save it as UTF-8)",
                skipped="row left out" if header is not None else _STOP,
            )
            if header is None:
                return
            continue
        if header is None:
            header = [h.strip() for h in row]
        yield line, row


_STOP = "the rest of the file is not read"


def _csv_error(
    exc: csv.Error,
    path: str,
    line: int,
    record: list[str],
    header: list[str] | None,
) -> tuple[str, bool]:
    """The message of a record ``csv.reader`` refused, and whether the reading must
    stop (a quote still open: the following lines would be misread)."""
    lengths, quoted = _cell_lengths("".join(record))
    limit = csv.field_size_limit()
    long = [k for k, n in enumerate(lengths) if n > limit]
    if not long or "field larger than field limit" not in str(exc):
        return f"{path}:{line}: not readable as CSV ({exc})", quoted
    k = long[0]
    start = line - len(record) + 1
    column = _column_name(header, k)
    if quoted:
        message = (
            f"{path}:{start}: {column} opens a quote that is not closed by line "
            f"{line}, where the cell passes the {limit:,} characters a manifest cell "
            f"may hold; close the quote"
        )
    else:
        lines = f" (lines {start}-{line})" if start < line else ""
        message = (
            f"{path}:{line}: {column} is {lengths[k]:,} characters long{lines}, more "
            f"than the {limit:,} a manifest cell may hold"
        )
    return message, quoted


def _cell_lengths(text: str) -> tuple[list[int], bool]:
    """Characters per cell of the CSV record ``text`` as ``csv.reader`` splits it
    with its default dialect (``,`` separated; a ``"`` at the start of a cell quotes
    it, ``""`` inside is one quote), and whether a quote is still open at the end."""
    if '"' not in text:
        return [len(cell) for cell in text.rstrip("\r\n").split(",")], False
    lengths = [0]
    quoted = False
    at_start = True
    i = 0
    while i < len(text):
        c = text[i]
        if quoted:
            if c != '"':
                lengths[-1] += 1
            elif text[i + 1 : i + 2] == '"':
                lengths[-1] += 1
                i += 1
            else:
                quoted = False
        elif c == ",":
            lengths.append(0)
            at_start = True
            i += 1
            continue
        elif c == '"' and at_start:
            quoted = True
        elif c not in "\r\n":
            lengths[-1] += 1
        at_start = False
        i += 1
    return lengths, quoted


class _RecordLines:
    """The lines of ``fh``, keeping those of the record being parsed in ``record``
    (cleared by the caller before each record) to locate a bad cell."""

    def __init__(self, fh: Iterable[str]) -> None:
        self._lines = iter(fh)
        self.record: list[str] = []

    def __iter__(self) -> _RecordLines:
        return self

    def __next__(self) -> str:
        line = next(self._lines)
        self.record.append(line)
        return line


def _column_name(header: list[str] | None, k: int) -> str:
    """``the 'path' cell (column 1)``, or ``cell 3 of the header``."""
    if header is None:
        return f"cell {k + 1} of the header"
    if k < len(header) and header[k]:
        return f"the {header[k]!r} cell (column {k + 1})"
    return f"the cell in column {k + 1}"


def image_header_problem(path: str, max_pixels: int = MAX_IMAGE_PIXELS) -> str | None:
    """Why the image at ``path`` cannot feed the input pipeline, judged from its
    header and its last bytes only (fast: no decoding), or None.

    The rules of :mod:`anet_tf.data.image_rules`, in the words the readers and the
    serving signature use (``cannot be decoded: <reason>``): an empty file, a
    format ``tf.io.decode_image`` cannot read, a JPEG or PNG cut short (no
    end-of-image marker / IEND chunk), a header announcing no pixels or more than
    ``max_pixels``; or ``not found``. Damage inside a complete-looking file needs
    :func:`image_problem`.
    """
    return _image_problem(path, max_pixels, decode=False)


def image_problem(path: str, max_pixels: int = MAX_IMAGE_PIXELS) -> str | None:
    """Why the image at ``path`` cannot feed the input pipeline, or None if it can.

    The header check of :func:`image_header_problem`, then a full decode with PIL
    (only decoding finds damaged scan data in a complete-looking file).
    """
    return _image_problem(path, max_pixels, decode=True)


def _image_problem(path: str, max_pixels: int, decode: bool) -> str | None:
    """:func:`image_header_problem`, then with ``decode`` the full decode."""
    try:
        info = os.stat(path)
    except (OSError, ValueError):
        return "not found"
    if not stat.S_ISREG(info.st_mode):
        return "not found"
    try:
        with open(path, "rb") as fh:
            problem = file_problem(fh, info.st_size, max_pixels)
    except OSError as exc:
        return f"cannot be read ({exc.strerror or exc})"
    if problem or not decode:
        return f"cannot be decoded: {problem}" if problem else None
    from PIL import Image

    try:
        with Image.open(path) as image:
            image.load()
    except Image.DecompressionBombError as exc:
        return f"cannot be decoded: PIL refuses it as a decompression bomb ({exc})"
    except Exception as exc:  # PIL raises many types for broken files
        return f"cannot be decoded: {DAMAGED} ({type(exc).__name__}: {exc})"
    return None


def read_folder(
    root: str,
    attributes: list[str],
    check_images: bool = True,
    *,
    strict: bool = True,
    verify_images: bool = False,
    max_pixels: int = MAX_IMAGE_PIXELS,
) -> ReidDataset:
    """Read a folder dataset (format in the module docstring).

    Args:
        root: the dataset folder.
        attributes: the attributes that become branches, in this order; each needs a
            manifest column and a class file.
        check_images: check that every listed image file exists.
        strict: raise :class:`DataError` at the first error (training). With False,
            every problem is collected in ``problems`` and the rows with errors are
            left out of the returned splits (``data check``).
        verify_images: also decode every image (slow: reads all files).
        max_pixels: with ``verify_images``, the largest image accepted
            (``data.max_image_pixels``).

    Returns:
        A :class:`ReidDataset` named "folder"; in strict mode its ``problems`` are
        empty. What training lives with (a training identity with a single image)
        is for :func:`anet_tf.data.check.split_warnings`.

    Raises:
        DataError: naming the file and line, in strict mode.
    """
    log = ProblemLog(strict)
    root_abs = os.path.abspath(root)
    dataset = ReidDataset(
        name="folder", root=root_abs, attribute_names=[], attribute_classes=[]
    )
    manifest = os.path.join(root, MANIFEST)
    if not os.path.isfile(manifest):
        log.report(
            f"{manifest}: manifest not found; a folder dataset needs it, with header "
            f"{','.join(COLUMNS)},<attributes...>"
        )
        dataset.problems = log.messages
        return dataset

    try:
        rows = _read_manifest(
            root, manifest, attributes, dataset, log, check_images,
            max_pixels if verify_images else None,
        )
    except UnicodeDecodeError as exc:
        log.report(f"{manifest}: not UTF-8 text ({exc.reason}); save it as UTF-8")
        rows = []
    if rows is None:
        dataset.problems = log.messages
        return dataset

    _check_cameras(rows, manifest, log)
    _check_repeats(rows, root, manifest, log)
    _check_tracks(rows, manifest, log)
    for _, record in rows:
        if record.camid is None:
            record = dataclasses.replace(record, camid=UNKNOWN)
        dataset.split(record.split).append(record)
    dataset.problems = log.messages
    return dataset


def collect_problems(
    root: str, attributes: list[str], verify_images: bool = True
) -> list[str]:
    """Every problem of a folder dataset at once, each naming file and line, for
    ``data check``; images are decoded too unless ``verify_images`` is False."""
    return read_folder(
        root, attributes, check_images=True, strict=False, verify_images=verify_images
    ).problems


def write_folder(dataset: ReidDataset, root: str | None = None) -> str:
    """Write ``manifest.csv`` and ``attributes/*.txt`` for a dataset whose images
    already lie inside ``root`` (default ``dataset.root``); returns ``root``.

    Rows are written train, query, gallery in record order, with ``/`` separators,
    so the same records always give the same bytes. A camera id of -1 is written
    empty, an unknown attribute (-1) as an empty cell.

    Raises:
        DataError: an image outside ``root``, or class names that would not read
            back (empty, duplicated, spanning lines).
    """
    root = os.path.abspath(root or dataset.root)
    os.makedirs(os.path.join(root, ATTRIBUTE_DIR), exist_ok=True)
    for name, classes in zip(
        dataset.attribute_names, dataset.attribute_classes, strict=True
    ):
        bad = [c for c in classes if not c.strip() or "\n" in c or c != c.strip()]
        if bad or len(set(classes)) != len(classes):
            raise DataError(
                f"attribute {name!r}: class names must be unique, non-empty, single "
                f"line and without surrounding spaces, got {classes}"
            )
        with open(attribute_file(root, name), "w", encoding="utf-8", newline="\n") as f:
            f.write("".join(f"{c}\n" for c in classes))

    records = [r for split in SPLITS for r in dataset.split(split)]
    extra = [
        column
        for column, given in (
            (TIME_COLUMN, any(r.time is not None for r in records)),
            (TRACK_COLUMN, any(r.track_id is not None for r in records)),
        )
        if given
    ]
    with open(os.path.join(root, MANIFEST), "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow([*COLUMNS, *extra, *dataset.attribute_names])
        for split in SPLITS:
            for record in dataset.split(split):
                relpath = os.path.relpath(os.path.abspath(record.path), root)
                if relpath.split(os.sep)[0] == os.pardir or os.path.isabs(relpath):
                    raise DataError(
                        f"image {record.path} is outside the dataset root {root}; "
                        f"copy it inside before writing the manifest"
                    )
                cells = [
                    classes[a] if a >= 0 else ""
                    for a, classes in zip(
                        record.attributes, dataset.attribute_classes, strict=True
                    )
                ]
                camera = "" if record.camid < 0 else str(record.camid)
                tracked = {
                    TIME_COLUMN: "" if record.time is None else str(record.time),
                    TRACK_COLUMN: record.track_id or "",
                }
                writer.writerow(
                    [
                        relpath.replace(os.sep, "/"),
                        record.pid,
                        camera,
                        split,
                        *(tracked[c] for c in extra),
                        *cells,
                    ]
                )
    return root


# ------------------------------------------------------------------------ helpers


def _read_manifest(
    root: str,
    manifest: str,
    attributes: list[str],
    dataset: ReidDataset,
    log: ProblemLog,
    check_images: bool,
    decode_limit: int | None,
) -> list[tuple[int, Record]] | None:
    """Header, attribute class files and rows; None when the header is unusable.
    Fills ``dataset.attribute_names`` and ``attribute_classes``. ``decode_limit``:
    decode every image, refusing more pixels than that (None: no decode)."""
    check_utf8(manifest)
    with open(manifest, newline="", encoding="utf-8-sig") as f:
        reported = len(log.messages)
        records = manifest_rows(f, manifest, log)
        first = next(records, None)
        if first is None and len(log.messages) > reported:
            return None  # the header was reported
        header = [h.strip() for h in first[1]] if first else []
        if not _header_ok(header, manifest, log):
            return None
        for attribute in attributes:
            try:
                _check_attribute_column(attribute, header, manifest)
                classes = read_attribute_classes(root, attribute)
            except DataError as exc:
                log.report(str(exc))
                continue
            dataset.attribute_names.append(attribute)
            dataset.attribute_classes.append(classes)
        return _read_rows(
            records,
            header,
            root,
            manifest,
            dataset,
            log,
            check_images,
            decode_limit,
        )


def _check_attribute_column(attribute: str, header: list[str], manifest: str) -> None:
    """Refuse a requested attribute that is no attribute column of ``header``."""
    if attribute in NON_ATTRIBUTE_COLUMNS:
        raise DataError(
            f"{manifest}:1: data.attributes names {attribute!r}, a column with a "
            f"meaning of its own ({', '.join(NON_ATTRIBUTE_COLUMNS)} are never "
            f"attributes)"
        )
    if attribute not in header:
        raise DataError(
            f"{manifest}:1: attribute {attribute!r} is requested but the header has "
            f"no such column; its attribute columns are: "
            f"{', '.join(attribute_columns(header)) or 'none'}"
        )


def _header_ok(header: list[str], manifest: str, log: ProblemLog) -> bool:
    missing = [c for c in COLUMNS if c not in header]
    duplicated = sorted({h for h in header if header.count(h) > 1})
    if not header or missing or duplicated or "" in header:
        what = (
            f"lacks column(s) {', '.join(missing)}"
            if missing
            else f"repeats column(s) {', '.join(duplicated)}"
            if duplicated
            else "has an empty column name"
        )
        log.report(
            f"{manifest}:1: header {what}; expected {','.join(COLUMNS)} followed by "
            f"one column per attribute, got {','.join(header) or 'an empty line'}"
        )
        return False
    return True


def _read_rows(
    records: Iterator[tuple[int, list[str]]],
    header: list[str],
    root: str,
    manifest: str,
    dataset: ReidDataset,
    log: ProblemLog,
    check_images: bool,
    decode_limit: int | None,
) -> list[tuple[int, Record]]:
    """Parse the data rows into (line, record); ``camid`` is None where empty."""
    class_index = [
        {name: i for i, name in enumerate(classes)}
        for classes in dataset.attribute_classes
    ]
    files = FileIndex()
    root_abs = os.path.abspath(root)
    rows: list[tuple[int, Record]] = []
    for line, row in records:
        if not any(cell.strip() for cell in row):
            continue
        where = f"{manifest}:{line}"
        if len(row) != len(header):
            log.report(
                f"{where}: expected {len(header)} fields ({','.join(header)}), got "
                f"{len(row)}"
            )
            continue
        cells = {h: cell.strip() for h, cell in zip(header, row, strict=True)}
        errors = len(log.messages)

        path = ""
        for column in ("path", "vehicle_id", "split"):
            if not cells[column]:
                log.report(f"{where}: empty {column}; every row needs one")
        if cells["path"]:
            try:
                path = resolve_listed(root_abs, cells["path"], where)
            except DataError as exc:
                log.report(str(exc))
        pid = _parse_int(cells["vehicle_id"], "vehicle_id", where, log)
        camid = _parse_int(cells["camera_id"], "camera_id", where, log)
        if cells["split"] and cells["split"] not in SPLITS:
            log.report(
                f"{where}: unknown split {cells['split']!r}; valid: {', '.join(SPLITS)}"
            )
        values = _attribute_cells(cells, dataset.attribute_names, class_index, where, log)
        if path and check_images:
            if not files.exists(path):
                log.report(
                    f"{where}: image {cells['path']!r} not found (looked for {path})"
                )
            elif decode_limit is not None:
                problem = image_problem(path, decode_limit)
                if problem:
                    log.report(f"{where}: image {cells['path']!r} {problem}")
        track_id, time = _track_cells(cells, where, log)
        if len(log.messages) > errors:
            continue
        rows.append(
            (
                line,
                Record(
                    path, pid, camid, tuple(values), cells["split"], track_id, time
                ),
            )
        )
    return rows


def _attribute_cells(
    cells: dict[str, str],
    names: list[str],
    class_index: list[dict[str, int]],
    where: str,
    log: ProblemLog,
) -> list[int]:
    """The class numbers of a row's attribute cells: UNKNOWN where a cell is empty,
    and where its class is not in the attribute's file (reported)."""
    values = []
    for name, index in zip(names, class_index, strict=True):
        text = cells[name]
        if text in index:
            values.append(index[text])
            continue
        values.append(UNKNOWN)
        if text:
            log.report(
                f"{where}: unknown {name} class {text!r}; valid (from "
                f"{os.path.join(ATTRIBUTE_DIR, name + '.txt')}): {', '.join(index)}"
                f"; leave the cell empty if unknown"
            )
    return values


def _track_cells(
    cells: dict[str, str], where: str, log: ProblemLog
) -> tuple[str | None, int | None]:
    """(track id, capture time) of a row: None where the cell is empty or absent; a
    time that does not parse, and a crop of a track without a time, are reported."""
    track_id = cells.get(TRACK_COLUMN) or None
    text = cells.get(TIME_COLUMN, "")
    time = None
    if text:
        try:
            time = parse_time(text)
        except ValueError as exc:
            log.report(f"{where}: {TIME_COLUMN}: {exc}")
    elif track_id is not None:
        log.report(
            f"{where}: crop of track {track_id!r} without a {TIME_COLUMN}; every crop "
            f"of a track needs its capture time (a '{TIME_COLUMN}' cell)"
        )
    return track_id, time


def parse_time(text: str) -> int:
    """A capture time as seconds since 1970-01-01 UTC: an ISO 8601 date and time
    (``2026-12-03T08:15:00Z``, ``2026-12-03 09:15:00+01:00``; without an offset it
    is UTC) or a number of seconds (``1796285700``).

    Raises:
        ValueError: neither.
    """
    text = text.strip()
    try:
        return int(float(text))
    except (ValueError, OverflowError):
        pass
    try:
        moment = datetime.datetime.fromisoformat(text)
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=datetime.timezone.utc)
        return int(moment.timestamp())
    except (ValueError, OverflowError):
        raise ValueError(
            f"{text!r} is not a time (ISO 8601, e.g. 2026-12-03T08:15:00Z, or seconds "
            f"since 1970-01-01 UTC)"
        ) from None


def _check_tracks(
    rows: list[tuple[int, Record]], manifest: str, log: ProblemLog
) -> None:
    """A track is one vehicle in one camera, its crops in time order (within each
    split); a row that breaks this is reported naming the track's line it
    disagrees with, and left out."""
    first: dict[str, tuple[int, Record]] = {}
    last: dict[tuple[str, str], tuple[int, Record]] = {}
    kept = []
    for line, record in rows:
        track = record.track_id
        if track is None:
            kept.append((line, record))
            continue
        where = f"{manifest}:{line}: track {track!r}"
        start_line, start = first.setdefault(track, (line, record))
        if record.camid != start.camid:
            log.report(
                f"{where} spans two cameras: camera_id {record.camid} here, "
                f"{start.camid} on line {start_line}; a track is one vehicle seen by "
                f"one camera",
                skipped="row left out",
            )
            continue
        if record.pid != start.pid:
            log.report(
                f"{where} spans two vehicles: vehicle_id {record.pid} here, "
                f"{start.pid} on line {start_line}; a track is one vehicle seen by "
                f"one camera",
                skipped="row left out",
            )
            continue
        before = last.get((record.split, track))
        if before is not None and record.time < before[1].time:
            log.report(
                f"{where} is not in time order: time {record.time} here, "
                f"{before[1].time} on line {before[0]} above it; list a track's "
                f"crops in time order",
                skipped="row left out",
            )
            continue
        last[(record.split, track)] = (line, record)
        kept.append((line, record))
    rows[:] = kept


def _parse_int(text: str, column: str, where: str, log: ProblemLog):
    """The integer in ``text``, None when empty; reports non-integers."""
    if not text:
        return None
    try:
        return int(text)
    except ValueError:
        log.report(f"{where}: {column} {text!r} is not an integer")
        return None


def _check_cameras(
    rows: list[tuple[int, Record]], manifest: str, log: ProblemLog
) -> None:
    """Cameras are given on every row or on none (then -1 everywhere)."""
    with_camera = [line for line, r in rows if r.camid is not None]
    without = [line for line, r in rows if r.camid is None]
    if with_camera and without:
        for line in without:
            log.report(
                f"{manifest}:{line}: empty camera_id, but {len(with_camera)} other "
                f"rows have one (first on line {with_camera[0]}); camera_id may be "
                f"empty only on every row of a dataset without cameras"
            )
        rows[:] = [(line, r) for line, r in rows if r.camid is not None]


def _check_repeats(
    rows: list[tuple[int, Record]], root: str, manifest: str, log: ProblemLog
) -> None:
    """Every image is listed once. A repeat is refused in strict mode (training
    would weigh the image twice, or test on an image it trains on, or count a
    gallery match twice) and left out otherwise, naming both lines."""
    first: dict[str, int] = {}
    kept = []
    for line, record in rows:
        earlier = first.setdefault(record.path, line)
        if earlier == line:
            kept.append((line, record))
            continue
        more = f" (anet-tf data check {root} lists every repeat)" if log.strict else ""
        log.report(
            f"{manifest}:{line}: image {os.path.relpath(record.path, root)} is "
            f"already listed on line {earlier}; list every image once{more}",
            skipped="repeat left out",
        )
    rows[:] = kept
