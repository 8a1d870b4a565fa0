"""PKU VehicleID in its release layout (Liu et al., 2016).

::

    <root>/image/<IIIIIII>.jpg                           7-digit image id
    <root>/train_test_split/train_list.txt               "<image id> <vehicle id>"
    <root>/train_test_split/test_list_{800,1600,2400,3200,6000,13164}.txt
    <root>/attribute/model_attr.txt                      "<vehicle id> <model id>"
    <root>/attribute/color_attr.txt                      "<vehicle id> <colour id>"
    <root>/attribute/model_names.txt, color_names.txt    class names (optional)

Splits: train = train_list.txt. VehicleID has no fixed query/gallery split: every
image of the chosen test list goes to ``gallery`` and ``query`` stays empty; the
evaluation applies the standard protocol (one random image per identity forms the
gallery, all the others are queries, 10 random draws averaged), from the gallery
records' features and pids. There are no cameras: camid = -1.

Labels: ``pid = int(vehicle id)``. Attributes (color, model) are per vehicle and
only part of the vehicles have them (colour labels are a subset of model labels):
an unlabelled vehicle gets -1, which the attribute losses mask out. Class ids are
0-based as written. Class names come from attribute/<attr>_names.txt when present;
since the line format of those files is not documented, each file is read as
``<name> <id>`` when every line ends with an id and the ids are 0..m-1, else as
``<id> <name>`` when every line starts with such an id, else as one bare name per
line in id order (UTF-8, or GB18030 for the Chinese model names). Without the file
the README's classes are used: 7 colours (black, blue, gray, red, sliver [sic],
white, yellow) and 250 models named by their ids.
"""

from __future__ import annotations

import glob
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
from anet_tf.data.records import resolve_listed

OFFERED = ("color", "model")
TEST_LISTS = {"small": 800, "medium": 1600, "large": 2400}
SPLIT_DIR = "train_test_split"
ATTRIBUTE_DIR = "attribute"
NAME_ENCODINGS = ("utf-8-sig", "gb18030")
# Classes per the release README, used when attribute/<attr>_names.txt is absent.
DEFAULT_CLASSES = {
    "color": ["black", "blue", "gray", "red", "sliver", "white", "yellow"],
    "model": [str(i) for i in range(250)],
}
_LAYOUT_HINT = " (expected the VehicleID release layout; see docs/datasets.md)"
_TEST_LIST = re.compile(r"^test_list_(\d+)\.txt$")


def test_list_file(spec: str) -> str:
    """The file name of a test list: small | medium | large (800 | 1600 | 2400
    identities), a size such as "3200" or "13164", or a file name such as
    "test_list_6000.txt"."""
    text = str(spec).strip()
    if text in TEST_LISTS:
        return f"test_list_{TEST_LISTS[text]}.txt"
    if text.isdigit():
        return f"test_list_{int(text)}.txt"
    if (
        text.endswith(".txt")
        and os.path.basename(text) == text
        and text not in (".", "..")
    ):
        return text
    raise DataError(
        f"data.vehicleid_test_list: expected small | medium | large, a size such as "
        f"3200, or a list file name such as test_list_6000.txt, got {spec!r}"
    )


def shipped_test_lists(root: str) -> list[str]:
    """The test list files present in <root>/train_test_split, by size."""
    found = [
        os.path.basename(p) for p in glob.glob(os.path.join(root, SPLIT_DIR, "*.txt"))
    ]
    sized = sorted(
        (int(m.group(1)), name) for name in found if (m := _TEST_LIST.match(name))
    )
    return [name for _, name in sized]


# long: 16 lines of docstring; the body reads the release's lists in the order of docs/datasets.md.
def read_vehicleid(
    root: str,
    attributes: list[str],
    test_list: str = "small",
    check_images: bool = True,
    strict: bool = True,
) -> ReidDataset:
    """Read VehicleID from its release folder.

    Args:
        root: the release folder (holding image/, train_test_split/, attribute/).
        attributes: attributes of the branches, in order; a subset of color, model.
        test_list: the test list (see :func:`test_list_file`); its images form the
            gallery, the query split stays empty.
        check_images: check that every listed image file exists.
        strict: raise :class:`DataError` at the first problem; with False, record
            every problem in ``ReidDataset.problems``, skip exactly the bad entries
            (a missing list file skips its split) and go on.

    Raises:
        DataError: naming the file and line; whatever ``strict``, also for an
            attribute VehicleID does not offer and for a missing attribute file.
    """
    check_attributes(attributes, OFFERED, "VehicleID")
    root_abs = os.path.abspath(root)
    test_name = test_list_file(test_list)
    log = ProblemLog(strict)
    labels: list[dict[int, int]] = []
    classes: list[list[str]] = []
    for attribute in attributes:
        by_vehicle, names = _read_attribute(root, attribute, log)
        labels.append(by_vehicle)
        classes.append(names)

    files = FileIndex()
    splits: dict[str, list[Record]] = {"train": [], "query": [], "gallery": []}
    for split, name in (("train", "train_list.txt"), ("gallery", test_name)):
        path = os.path.join(root, SPLIT_DIR, name)
        try:
            if split == "gallery" and not os.path.isfile(path):
                shipped = shipped_test_lists(root)
                raise DataError(
                    f"{path}: test list not found (data.vehicleid_test_list="
                    f"{test_list!r}); lists present: {', '.join(shipped) or 'none'}"
                )
            lines = read_lines(path, hint=_LAYOUT_HINT)
        except DataError as exc:
            log.report(str(exc), skipped=f"split {split!r} skipped")
            continue
        image_dir = os.path.join(root, "image")
        if check_images and lines and not os.path.isdir(image_dir):
            log.report(
                f"{image_dir}: image folder not found",
                skipped=f"all {len(lines)} images of {path} skipped",
            )
            continue
        seen: dict[str, int] = {}
        for number, line in lines:
            where = f"{path}:{number}"
            parts = line.split()
            if len(parts) != 2 or not parts[1].isdigit():
                log.report(
                    f"{where}: expected '<image id> <vehicle id>', got {line!r}",
                    skipped="skipped",
                )
                continue
            image, vehicle = parts
            try:
                image_path = resolve_listed(
                    root_abs, os.path.join("image", image + ".jpg"), where
                )
            except DataError as exc:
                log.report(str(exc), skipped="skipped")
                continue
            if "/" in image or "\\" in image:
                log.report(
                    f"{where}: expected an image id, got {image!r}", skipped="skipped"
                )
                continue
            if image in seen:
                log.report(
                    f"{where}: image {image} repeats line {seen[image]}",
                    skipped="repeat skipped",
                )
                continue
            seen[image] = number
            if check_images and not files.exists(image_path):
                log.report(f"{where}: image not found: {image_path}", skipped="skipped")
                continue
            pid = int(vehicle)
            values = tuple(table.get(pid, UNKNOWN) for table in labels)
            splits[split].append(Record(image_path, pid, UNKNOWN, values, split))
    return ReidDataset(
        name="vehicleid",
        root=root,
        attribute_names=list(attributes),
        attribute_classes=classes,
        problems=log.messages,
        **splits,
    )


def _read_attribute(
    root: str, attribute: str, log: ProblemLog
) -> tuple[dict[int, int], list[str]]:
    """vehicle id -> class id from attribute/<attr>_attr.txt, and the class names."""
    path = os.path.join(root, ATTRIBUTE_DIR, f"{attribute}_attr.txt")
    names_path = os.path.join(root, ATTRIBUTE_DIR, f"{attribute}_names.txt")
    if os.path.isfile(names_path):
        names = read_class_names(names_path)
    else:
        names_path = "the release README"
        names = DEFAULT_CLASSES[attribute]
    by_vehicle: dict[int, int] = {}
    line_of: dict[int, int] = {}
    for number, line in read_lines(path, hint=_LAYOUT_HINT):
        where = f"{path}:{number}"
        parts = line.split()
        if len(parts) != 2 or not all(p.isdigit() for p in parts):
            log.report(
                f"{where}: expected '<vehicle id> <{attribute} id>', got {line!r}",
                skipped=f"line skipped (vehicle left without {attribute})",
            )
            continue
        vehicle, class_id = int(parts[0]), int(parts[1])
        if class_id >= len(names):
            log.report(
                f"{where}: {attribute} id {class_id} is out of range; {names_path} "
                f"names ids 0..{len(names) - 1}",
                skipped=f"vehicle {vehicle} left without {attribute} (-1)",
            )
            continue
        if vehicle in line_of:
            if by_vehicle[vehicle] != class_id:
                log.report(
                    f"{where}: vehicle {vehicle} gets {attribute} {class_id} but line "
                    f"{line_of[vehicle]} gave {by_vehicle[vehicle]}",
                    skipped="the repeat is skipped",
                )
            continue
        line_of[vehicle] = number
        by_vehicle[vehicle] = class_id
    return by_vehicle, names


def read_class_names(path: str) -> list[str]:
    """Class names of a VehicleID ``*_names.txt``, index = class id.

    The line format is not documented; the file is read as ``<name> <id>`` when every
    line ends with an id and those ids are 0..m-1, else as ``<id> <name>`` when every
    line starts with such ids, else as one bare name per line in id order.
    """
    lines = read_lines(path, encodings=NAME_ENCODINGS, hint=_LAYOUT_HINT)
    if not lines:
        raise DataError(f"{path}: no class names listed")
    expected = list(range(len(lines)))
    for pick_id, pick_name in (
        (lambda p: p[-1], lambda p: " ".join(p[:-1])),
        (lambda p: p[0], lambda p: " ".join(p[1:])),
    ):
        split = [line.split() for _, line in lines]
        if all(len(p) >= 2 and pick_id(p).isdigit() for p in split):
            ids = [int(pick_id(p)) for p in split]
            if sorted(ids) == expected:
                by_id = {i: pick_name(p) for i, p in zip(ids, split, strict=True)}
                return [by_id[i] for i in expected]
    return [line for _, line in lines]
