"""VeRi-Wild in its release layout (Lou et al., 2019).

::

    <root>/images/<VVVVV>/<IIIIII>.jpg                  vehicle folder / image id
    <root>/train_test_split/train_list.txt              one VVVVV/IIIIII per line
    <root>/train_test_split/test_{3000,5000,10000}.txt        gallery lists
    <root>/train_test_split/test_{3000,5000,10000}_query.txt  query lists
    <root>/train_test_split/vehicle_info.txt            labels of every image

Splits: train = train_list.txt; query = test_N_query.txt; gallery = test_N.txt with
N = 3000 | 5000 | 10000 for the small | medium | large test set (nested sets; one
query image per identity, not repeated in the gallery).

Labels: ``pid = int(VVVVV)``; camid and attributes from vehicle_info.txt, whose
first line is the header ``id/image;Camera ID;Time;Model;Type;Color`` and whose
other lines are ``VVVVV/IIIIII;<camera>;<time>;<model>;<type>;<color>``. The camera
is used as written (1..174). Attributes are per image. Quirks handled: every field
is stripped (the raw Type column holds both "small-sized truck" and
" small-sized truck"); model names contain spaces (and, should one contain a ``;``,
the fields around it are fixed: the first three and the last two); list entries may
carry an extension. Class lists are built from the data: the sorted unique stripped
names of all rows of vehicle_info.txt (the whole dataset, so they do not depend on
the test size); an empty field is unknown (-1), not a class.
"""

from __future__ import annotations

import os
import re

from anet_tf.data.records import UNKNOWN
from anet_tf.data.records import DataError
from anet_tf.data.records import FileIndex
from anet_tf.data.records import ProblemLog
from anet_tf.data.records import Record
from anet_tf.data.records import ReidDataset
from anet_tf.data.records import check_attributes
from anet_tf.data.records import read_lines
from anet_tf.data.records import resolve_inside

OFFERED = ("color", "type", "model")
INFO_COLUMNS = {"model": 3, "type": 4, "color": 5}
TEST_SIZES = {"small": 3000, "medium": 5000, "large": 10000}
SPLIT_DIR = "train_test_split"
INFO_FILE = "vehicle_info.txt"
# VVVVV/IIIIII with an optional extension: plain names, so inside images/.
_KEY = re.compile(r"(\d+/\w[\w-]*)(?:\.\w+)?")
_LAYOUT_HINT = " (expected the VeRi-Wild release layout; see docs/datasets.md)"


def list_files(test_size: str) -> dict[str, str]:
    """The list file of each split, relative to the root, for a test size
    (small | medium | large, or the number of test identities: 3000 | 5000 | 10000)."""
    size = TEST_SIZES.get(str(test_size).strip(), None)
    if size is None and str(test_size).strip().isdigit():
        size = int(str(test_size).strip())
    if size is None:
        raise DataError(
            f"data.veriwild_test_size: expected small | medium | large (or 3000 | "
            f"5000 | 10000), got {test_size!r}"
        )
    return {
        "train": os.path.join(SPLIT_DIR, "train_list.txt"),
        "query": os.path.join(SPLIT_DIR, f"test_{size}_query.txt"),
        "gallery": os.path.join(SPLIT_DIR, f"test_{size}.txt"),
    }


# long: 16 lines of docstring; 72 lines of code reading the release's files in the order of docs/datasets.md.
def read_veriwild(
    root: str,
    attributes: list[str],
    test_size: str = "small",
    check_images: bool = True,
    strict: bool = True,
) -> ReidDataset:
    """Read VeRi-Wild from its release folder.

    Args:
        root: the release folder (holding images/ and train_test_split/).
        attributes: attributes of the branches, in order; a subset of color, type,
            model.
        test_size: small | medium | large (3000 | 5000 | 10000 test identities).
        check_images: check that every listed image file exists.
        strict: raise :class:`DataError` at the first problem; with False, record
            every problem in ``ReidDataset.problems``, skip exactly the bad entries
            (a missing list file skips its split) and go on.

    Raises:
        DataError: naming the file and line; whatever ``strict``, also for an
            attribute VeRi-Wild does not offer and a missing vehicle_info.txt.
    """
    check_attributes(attributes, OFFERED, "VeRi-Wild")
    files_of = list_files(test_size)
    log = ProblemLog(strict)
    entries: dict[str, tuple[str, list[tuple[int, str]]]] = {}
    for split, rel in files_of.items():
        path = os.path.join(root, rel)
        entries[split] = (path, [])
        try:
            lines = read_lines(path, hint=_missing_hint(rel))
        except DataError as exc:
            log.report(str(exc), skipped=f"split {split!r} skipped")
            continue
        seen: set[str] = set()
        for number, token in lines:
            key = _parse_key(root, token, f"{path}:{number}", log)
            if key is None:
                continue
            if key in seen:
                log.report(
                    f"{path}:{number}: {key} listed twice", skipped="repeat skipped"
                )
                continue
            seen.add(key)
            entries[split][1].append((number, key))
    needed = {key for _, items in entries.values() for _, key in items}
    info, classes = _read_vehicle_info(root, attributes, needed, log)

    files = FileIndex()
    images = os.path.join(os.path.abspath(root), "images", "")
    splits: dict[str, list[Record]] = {}
    if check_images and needed and not os.path.isdir(images):
        log.report(
            f"{os.path.dirname(images)}: image folder not found",
            skipped=f"all {len(needed)} listed images skipped",
        )
        entries = {split: (path, []) for split, (path, _) in entries.items()}
    for split, (list_path, items) in entries.items():
        records = splits[split] = []
        for number, key in items:
            if key not in info:
                log.report(
                    f"{list_path}:{number}: {key} has no row in "
                    f"{os.path.join(root, SPLIT_DIR, INFO_FILE)}",
                    skipped="skipped",
                )
                continue
            row = info[key]
            if row is None:  # its row was reported
                continue
            folder, image = key.split("/")
            path = f"{images}{folder}{os.sep}{image}.jpg"
            if check_images and not files.exists(path):
                log.report(
                    f"{list_path}:{number}: image not found: {path}", skipped="skipped"
                )
                continue
            records.append(Record(path, int(folder), row[0], row[1], split))
    return ReidDataset(
        name="veriwild",
        root=root,
        attribute_names=list(attributes),
        attribute_classes=classes,
        problems=log.messages,
        **splits,
    )


def _missing_hint(rel: str) -> str:
    return (
        f"{_LAYOUT_HINT}; a later re-release names the lists train_list_start0.txt, "
        "test_N_id.txt, test_N_id_query.txt: rename them"
        if rel.endswith(".txt") and "vehicle_info" not in rel
        else _LAYOUT_HINT
    )


def _parse_key(root: str, token: str, where: str, log: ProblemLog) -> str | None:
    """``VVVVV/IIIIII`` (an extension tolerated) -> the key, or None if reported."""
    match = _KEY.fullmatch(token)
    if match:
        return match.group(1)
    try:
        resolve_inside(root, os.path.join("images", token), where)
    except DataError as exc:
        log.report(str(exc), skipped="skipped")
        return None
    log.report(
        f"{where}: expected 'VVVVV/IIIIII' (vehicle folder / image id), got {token!r}",
        skipped="skipped",
    )
    return None


def _read_vehicle_info(
    root: str, attributes: list[str], needed: set[str], log: ProblemLog
) -> tuple[dict[str, tuple[int, tuple[int, ...]] | None], list[list[str]]]:
    """key -> (camid, attribute classes) for the needed keys (None for a reported,
    rejected row), and the class names of each attribute (sorted unique stripped
    names of all rows)."""
    path = os.path.join(root, SPLIT_DIR, INFO_FILE)
    lines = read_lines(path, hint=_LAYOUT_HINT)
    if lines and lines[0][1].lower().startswith("id/image"):
        lines = lines[1:]
    columns = [INFO_COLUMNS[a] for a in attributes]
    combinations: set[tuple[str, ...]] = set()
    raw: dict[str, tuple[int, tuple[str, ...]] | None] = {}
    line_of: dict[str, int] = {}
    for number, line in lines:
        fields = line.split(";")
        if len(fields) < 6:
            log.report(
                f"{path}:{number}: expected 6 ';'-separated fields "
                f"(id/image;Camera ID;Time;Model;Type;Color), got {len(fields)}",
                skipped="row skipped",
            )
            continue
        if len(fields) > 6:  # a ';' inside the free-text model name
            fields = fields[:3] + [";".join(fields[3:-2])] + fields[-2:]
        key_text, camera = fields[0].strip(), fields[1].strip()
        match = _KEY.fullmatch(key_text)
        if not match:
            log.report(
                f"{path}:{number}: expected 'VVVVV/IIIIII' first, got {key_text!r}",
                skipped="row skipped",
            )
            continue
        key = match.group(1)
        if key in line_of:
            log.report(
                f"{path}:{number}: {key} repeats line {line_of[key]}",
                skipped="repeat skipped",
            )
            continue
        line_of[key] = number
        if not camera.lstrip("-").isdigit():
            log.report(
                f"{path}:{number}: Camera ID must be an integer, got {camera!r}",
                skipped="the image is skipped where listed",
            )
            if key in needed:
                raw[key] = None
            continue
        values = tuple([fields[c].strip() for c in columns])
        combinations.add(values)
        if key in needed:
            raw[key] = (int(camera), values)
    classes = [
        sorted({values[i] for values in combinations} - {""})
        for i in range(len(attributes))
    ]
    index = [{name: i for i, name in enumerate(c)} for c in classes]
    encoded = {
        values: tuple(
            ix[v] if v else UNKNOWN for ix, v in zip(index, values, strict=True)
        )
        for values in combinations
    }
    info = {
        key: None if row is None else (row[0], encoded[row[1]])
        for key, row in raw.items()
    }
    return info, classes
