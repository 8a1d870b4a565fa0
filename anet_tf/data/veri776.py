"""VeRi-776 in its release layout (Liu et al., 2016).

::

    <root>/image_train/  image_query/  image_test/         the JPEGs
    <root>/name_train.txt  name_query.txt  name_test.txt   one file name per line
    <root>/train_label.xml  test_label.xml                 one <Item> per image
    <root>/list_color.txt  list_type.txt                   "<id> <name>", ids 1-based
    <root>/test_track.txt                                  optional: the test tracks

Splits: train = image_train + name_train.txt, query = image_query + name_query.txt,
gallery = image_test + name_test.txt. The queries are copies of test images, so
their labels come from test_label.xml by image name (and each query is in its own
gallery; the evaluator removes it with the same-id-same-camera rule).

Labels: ``pid = int(vehicleID)``, ``camid = NNN`` of ``cameraID="cNNN"`` (from the
file name ``VVVV_cNNN_...`` when the attribute is absent), attribute class =
``colorID - 1`` / ``typeID - 1`` (the lists number classes from 1). Quirks handled:

- the XML files declare ``encoding="gb2312"``, a multi-byte codec Python's expat
  refuses: the bytes are decoded here (gb18030, a superset) and the declaration is
  dropped before parsing the string;
- older copies label vehicles 0003, 0007 and 0041 with the illegal ``typeID="0"``;
  the dataset's errata give 2 (SUV): it is corrected with a ``UserWarning`` (not
  listed in ``ReidDataset.problems``, which holds what is wrong or skipped), never
  used as a class index. Any other id outside the class list is an error naming
  the file, line and Item;
- items are found wherever they are (``.//Item``); the root tag is not checked.

Tracks: where ``test_track.txt`` is present, each of its lines is one test track
(about 6 images of one vehicle by one camera), ``<track name> <image> <image> ...``;
its images get ``Record.track_id`` = the track name without ``.jpg``, and so do the
queries, which are copies of test images with the same names. The track name is
counted as an image where it names one (it repeats the track's first image). The
release has no list of training tracks; ``test_track_VeRi.txt`` (track names with
a time) is not read. A track spanning two vehicles or cameras, or an image in two
tracks, is an error naming the file and line.
"""

from __future__ import annotations

import dataclasses
import os
import re
import warnings
import xml.parsers.expat
from dataclasses import dataclass

from anet_tf.data.records import DataError
from anet_tf.data.records import FileIndex
from anet_tf.data.records import ProblemLog
from anet_tf.data.records import Record
from anet_tf.data.records import ReidDataset
from anet_tf.data.records import check_attributes
from anet_tf.data.records import read_lines
from anet_tf.data.records import resolve_listed

OFFERED = ("color", "type")
CLASS_FILES = {"color": "list_color.txt", "type": "list_type.txt"}
ITEM_FIELDS = {"color": "colorID", "type": "typeID"}
# (split, image folder, name list, label file)
SPLIT_FILES = (
    ("train", "image_train", "name_train.txt", "train_label.xml"),
    ("query", "image_query", "name_query.txt", "test_label.xml"),
    ("gallery", "image_test", "name_test.txt", "test_label.xml"),
)
TRACK_FILE = "test_track.txt"
# The typeID="0" erratum of older copies: these vehicles are SUVs (type id 2).
ERRATUM_VEHICLES = frozenset({3, 7, 41})
ERRATUM_TYPE_ID = 2

_IMAGE_NAME = re.compile(r"^(\d+)_c(\d+)_")
_DECLARATION = re.compile(r"^\s*<\?xml[^>]*\?>")
_ENCODING = re.compile(rb"""^\s*<\?xml[^>]*encoding\s*=\s*["']([A-Za-z0-9._-]+)["']""")
_LAYOUT_HINT = " (expected the VeRi-776 release layout; see docs/datasets.md)"


@dataclass(frozen=True)
class _Label:
    pid: int
    camid: int
    attributes: tuple[int, ...]


# long: 14 lines of docstring; 78 lines of code reading the release's files in the order of docs/datasets.md.
def read_veri776(
    root: str,
    attributes: list[str],
    check_images: bool = True,
    strict: bool = True,
) -> ReidDataset:
    """Read VeRi-776 from its release folder.

    Args:
        root: the release folder (holding image_train/, train_label.xml, ...).
        attributes: attributes of the branches, in order; a subset of color, type.
        check_images: check that every listed image file exists.
        strict: raise :class:`DataError` at the first problem; with False, record
            every problem in ``ReidDataset.problems``, skip exactly the bad entries
            (a split whose list or label file is unusable is skipped whole) and go on.

    Raises:
        DataError: naming the file and line; whatever ``strict``, also for an
            attribute VeRi-776 does not offer and for a missing or bad class list.
    """
    check_attributes(attributes, OFFERED, "VeRi-776")
    root_abs = os.path.abspath(root)
    log = ProblemLog(strict)
    classes = [read_class_list(os.path.join(root, CLASS_FILES[a])) for a in attributes]
    labels: dict[str, dict[str, _Label | None] | None] = {}
    files = FileIndex()
    splits: dict[str, list[Record]] = {}
    for split, folder, name_file, label_file in SPLIT_FILES:
        splits[split] = []
        label_path = os.path.join(root, label_file)
        if label_file not in labels:
            try:
                labels[label_file] = _read_labels(label_path, attributes, classes, log)
            except DataError as exc:
                labels[label_file] = None
                log.report(str(exc), skipped="the splits it labels are skipped")
        names_path = os.path.join(root, name_file)
        try:
            lines = read_lines(names_path, hint=_LAYOUT_HINT)
        except DataError as exc:
            log.report(str(exc), skipped=f"split {split!r} skipped")
            continue
        table = labels[label_file]
        if table is None:
            continue
        image_dir = os.path.join(root, folder)
        if check_images and lines and not os.path.isdir(image_dir):
            log.report(
                f"{image_dir}: image folder not found",
                skipped=f"all {len(lines)} images of {names_path} skipped",
            )
            continue
        seen: set[str] = set()
        for number, name in lines:
            where = f"{names_path}:{number}"
            try:
                path = resolve_listed(root_abs, os.path.join(folder, name), where)
            except DataError as exc:
                log.report(str(exc), skipped="skipped")
                continue
            if "/" in name or "\\" in name or " " in name:
                log.report(
                    f"{where}: expected one image file name, got {name!r}",
                    skipped="skipped",
                )
                continue
            if name in seen:
                log.report(f"{where}: {name} listed twice", skipped="repeat skipped")
                continue
            seen.add(name)
            if name not in table:
                log.report(
                    f"{where}: {name} has no <Item> in {label_path}", skipped="skipped"
                )
                continue
            label = table[name]
            if label is None:  # its <Item> was reported
                continue
            if check_images and not files.exists(path):
                log.report(f"{where}: image not found: {path}", skipped="skipped")
                continue
            splits[split].append(
                Record(path, label.pid, label.camid, label.attributes, split)
            )
    track_path = os.path.join(root, TRACK_FILE)
    if os.path.isfile(track_path) and labels.get("test_label.xml"):
        tracks = read_track_list(track_path, labels["test_label.xml"], log)
        for split in ("query", "gallery"):
            splits[split] = [
                dataclasses.replace(r, track_id=tracks.get(os.path.basename(r.path)))
                for r in splits[split]
            ]
    return ReidDataset(
        name="veri776",
        root=root,
        attribute_names=list(attributes),
        attribute_classes=classes,
        problems=log.messages,
        **splits,
    )


def read_track_list(
    path: str, labels: dict[str, _Label | None], log: ProblemLog
) -> dict[str, str]:
    """image name -> track id from ``test_track.txt`` (format in the module
    docstring); ``labels``: the test images' labels, to check that a track is one
    vehicle in one camera. A bad entry is reported to ``log`` and left out."""
    tracks: dict[str, str] = {}
    line_of: dict[str, int] = {}
    names: dict[str, int] = {}
    for number, line in read_lines(path, hint=_LAYOUT_HINT):
        tokens = line.split()
        track = tokens[0][:-4] if tokens[0].lower().endswith(".jpg") else tokens[0]
        where = f"{path}:{number}"
        if track in names:
            log.report(
                f"{where}: track {track!r} is already listed on line {names[track]}",
                skipped="line skipped",
            )
            continue
        names[track] = number
        members = tokens if tokens[0] in labels else tokens[1:]
        first: tuple[str, _Label] | None = None
        for name in dict.fromkeys(members):
            if name not in labels:
                log.report(
                    f"{where}: {name} has no <Item> in test_label.xml",
                    skipped="skipped",
                )
                continue
            label = labels[name]
            if label is None:  # its <Item> was reported
                continue
            if name in tracks:
                log.report(
                    f"{where}: {name} is already in track {tracks[name]!r} on line "
                    f"{line_of[name]}; an image belongs to one track",
                    skipped="skipped",
                )
                continue
            first = first or (name, label)
            for what, mine, theirs in (
                ("vehicles", label.pid, first[1].pid),
                ("cameras", label.camid, first[1].camid),
            ):
                if mine != theirs:
                    log.report(
                        f"{where}: track {track!r} spans two {what}: {name} and "
                        f"{first[0]}; a track is one vehicle seen by one camera",
                        skipped="skipped",
                    )
                    break
            else:
                tracks[name] = track
                line_of[name] = number
    return tracks


def read_class_list(path: str) -> list[str]:
    """Class names of list_color.txt / list_type.txt: ``<id> <name>`` lines with ids
    1..m (any order); returns the names so that class ``id - 1`` is the index."""
    by_id: dict[int, tuple[str, int]] = {}
    for number, line in read_lines(path, hint=_LAYOUT_HINT):
        parts = line.split(None, 1)
        if len(parts) != 2 or not parts[0].isdigit():
            raise DataError(f"{path}:{number}: expected '<id> <name>', got {line!r}")
        class_id = int(parts[0])
        if class_id in by_id:
            raise DataError(
                f"{path}:{number}: id {class_id} already given at line "
                f"{by_id[class_id][1]}"
            )
        by_id[class_id] = (parts[1].strip(), number)
    if not by_id:
        raise DataError(f"{path}: no classes listed")
    if sorted(by_id) != list(range(1, len(by_id) + 1)):
        raise DataError(
            f"{path}: ids must be 1..{len(by_id)} without gaps, got {sorted(by_id)}"
        )
    return [by_id[i][0] for i in range(1, len(by_id) + 1)]


def parse_label_xml(path: str) -> list[tuple[int, dict[str, str]]]:
    """Every ``<Item>`` element of a VeRi label file (wherever it is, like
    ``.//Item``) as ``(line number, attributes)``.

    The bytes are decoded with the declared encoding (gb2312 is read as its superset
    gb18030) and the declaration is dropped, since expat refuses multi-byte codecs.
    """
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found{_LAYOUT_HINT}") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read: {exc}") from None
    match = _ENCODING.match(data)
    encoding = match.group(1).decode("ascii").lower() if match else "utf-8"
    if encoding in ("gb2312", "gbk", "gb18030"):
        encoding = "gb18030"
    try:
        text = data.decode(encoding)
    except LookupError:
        raise DataError(f"{path}:1: unknown encoding {encoding!r} declared") from None
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise DataError(
            f"{path}:{line}: not valid {encoding} text ({exc.reason})"
        ) from None
    text = _DECLARATION.sub("", text.lstrip("\ufeff"), count=1)
    items: list[tuple[int, dict[str, str]]] = []
    parser = xml.parsers.expat.ParserCreate()

    def start(tag: str, attrib: dict[str, str]) -> None:
        if tag == "Item":
            items.append((parser.CurrentLineNumber, attrib))

    parser.StartElementHandler = start
    try:
        parser.Parse(text, True)
    except xml.parsers.expat.ExpatError as exc:
        reason = xml.parsers.expat.errors.messages[exc.code]
        raise DataError(
            f"{path}:{exc.lineno}: malformed XML ({reason}, column {exc.offset + 1})"
        ) from None
    return items


def _read_labels(
    path: str, attributes: list[str], classes: list[list[str]], log: ProblemLog
) -> dict[str, _Label | None]:
    """image name -> label from one label XML; None for a reported, rejected Item."""
    table: dict[str, _Label | None] = {}
    lines_of: dict[str, int] = {}
    corrected: list[tuple[int, int]] = []  # (line, vehicle) of typeID="0" errata
    for line, item in parse_label_xml(path):
        name = item.get("imageName", "").strip()
        if not name:
            log.report(f"{path}:{line}: <Item> without imageName", skipped="skipped")
            continue
        where = f"{path}:{line}: <Item imageName={name!r}>"
        if name in lines_of:
            log.report(
                f"{where} repeats line {lines_of[name]}",
                skipped="the repeat is skipped",
            )
            continue
        lines_of[name] = line
        try:
            table[name], erratum = _item_label(item, name, attributes, classes)
        except ValueError as exc:
            table[name] = None
            log.report(f"{where}: {exc}", skipped="the image is skipped where listed")
            continue
        if erratum:
            corrected.append((line, table[name].pid))
    if corrected:
        vehicles = ", ".join(f"{v:04d}" for v in sorted({v for _, v in corrected}))
        warnings.warn(
            f'{path}:{corrected[0][0]}: typeID="0" on {len(corrected)} Item(s) of '
            f"vehicle(s) {vehicles}, the known erratum of older VeRi-776 copies; "
            f"corrected to {ERRATUM_TYPE_ID} (SUV) as the dataset's errata say",
            stacklevel=3,
        )
    return table


def _item_label(
    item: dict[str, str], name: str, attributes: list[str], classes: list[list[str]]
) -> tuple[_Label, bool]:
    """The label of one <Item>, and whether the typeID="0" erratum was corrected;
    ValueError saying what is wrong."""
    vehicle = item.get("vehicleID", "").strip()
    if not vehicle.isdigit():
        raise ValueError(f"vehicleID must be a number, got {vehicle!r}")
    pid = int(vehicle)
    from_name = _IMAGE_NAME.match(name)
    camera = item.get("cameraID")
    if camera is None and from_name:
        camera = "c" + from_name.group(2)
    camera = (camera or "").strip()
    if not (camera[:1] in ("c", "C") and camera[1:].isdigit()):
        raise ValueError(f"cameraID must look like 'c001', got {camera!r}")
    camid = int(camera[1:])
    if from_name and (int(from_name.group(1)), int(from_name.group(2))) != (pid, camid):
        raise ValueError(
            f"vehicleID={vehicle!r} cameraID={camera!r} disagree with the image name"
        )
    values = []
    erratum = False
    for attribute, names in zip(attributes, classes, strict=True):
        key = ITEM_FIELDS[attribute]
        text = item.get(key, "").strip()
        if not text.isdigit():
            raise ValueError(f"{key} must be a number, got {text!r}")
        class_id = int(text)
        if class_id == 0 and attribute == "type" and pid in ERRATUM_VEHICLES:
            class_id, erratum = ERRATUM_TYPE_ID, True
        if not 1 <= class_id <= len(names):
            raise ValueError(
                f"{key}={text!r} is out of range; {CLASS_FILES[attribute]} defines "
                f"ids 1..{len(names)}"
            )
        values.append(class_id - 1)
    return _Label(pid, camid, tuple(values)), erratum
