"""VehicleID reader on a tiny copy of the release layout, quirks included."""

from __future__ import annotations

import os
import shutil

import pytest

from anet_tf.config import load_config
from anet_tf.data.readers import load_dataset
from anet_tf.data.records import UNKNOWN
from anet_tf.data.records import DataError
from anet_tf.data.vehicleid import read_class_names
from anet_tf.data.vehicleid import read_vehicleid


def _write(root, name, text, mode="a"):
    with open(os.path.join(root, name), mode) as fh:
        fh.write(text)


def test_reads_release_layout_with_partial_attributes(tmp_path, vehicleid_release):
    root = vehicleid_release.make(tmp_path)
    ds = read_vehicleid(root, ["color", "model"])
    assert ds.name == "vehicleid" and ds.problems == []
    assert ds.attribute_classes == [vehicleid_release.COLORS, vehicleid_release.MODELS]
    assert ds.num_classes == [7, 250]
    assert [(r.pid, r.camid, r.attributes) for r in ds.train] == [
        (1, -1, (0, 5)),
        (1, -1, (0, 5)),
        (2, -1, (UNKNOWN, 17)),
        (2, -1, (UNKNOWN, 17)),
        (3, -1, (UNKNOWN, UNKNOWN)),
    ]
    # No fixed query/gallery: the whole test list is the gallery.
    assert ds.query == []
    assert [(r.pid, r.attributes) for r in ds.gallery] == [
        (10, (3, 249)),
        (10, (3, 249)),
        (11, (UNKNOWN, 3)),
        (12, (UNKNOWN, UNKNOWN)),
    ]
    assert ds.gallery[0].path == os.path.join(root, "image", "0000010.jpg")
    assert all(r.split == "gallery" for r in ds.gallery)
    assert all(r.split == "train" for r in ds.train)


def test_test_list_choice(tmp_path, vehicleid_release):
    root = vehicleid_release.make(tmp_path)
    assert len(read_vehicleid(root, [], test_list="medium").gallery) == 6
    assert len(read_vehicleid(root, [], test_list="13164").gallery) == 2
    assert len(read_vehicleid(root, [], test_list="test_list_1600.txt").gallery) == 6
    message = (
        r"test_list_2400\.txt: test list not found.*lists present: "
        r"test_list_800\.txt, test_list_1600\.txt, test_list_13164\.txt"
    )
    with pytest.raises(DataError, match=message):
        read_vehicleid(root, [], test_list="large")
    with pytest.raises(DataError, match="vehicleid_test_list"):
        read_vehicleid(root, [], test_list="../test_list_800.txt")


def test_attribute_choice_and_unknown_attribute(tmp_path, vehicleid_release):
    root = vehicleid_release.make(tmp_path)
    ds = read_vehicleid(root, ["model"])
    assert ds.train[2].attributes == (17,)
    with pytest.raises(DataError, match=r"'type'.*offered: color, model"):
        read_vehicleid(root, ["color", "type"])


def test_class_names_are_optional(tmp_path, vehicleid_release):
    root = vehicleid_release.make(tmp_path)
    os.remove(os.path.join(root, "attribute", "color_names.txt"))
    ds = read_vehicleid(root, ["color"])
    assert ds.attribute_classes == [vehicleid_release.COLORS]  # the release README's colours
    os.remove(os.path.join(root, "attribute", "model_names.txt"))
    assert read_vehicleid(root, ["model"]).num_classes == [250]
    _write(root, "attribute/color_attr.txt", "12 7\n")
    with pytest.raises(
        DataError, match=r"color_attr\.txt:3: .*out of range; the release README"
    ):
        read_vehicleid(root, ["color"])


def test_class_name_formats(tmp_path):
    path = str(tmp_path / "names.txt")
    for text, expected in [
        ("blue 1\nblack 0\ndark gray 2\n", ["black", "blue", "dark gray"]),
        ("1 blue\n0 black\n2 dark gray\n", ["black", "blue", "dark gray"]),
        ("black\nblue\ndark gray\n", ["black", "blue", "dark gray"]),
        ("Audi A4 2012\nAudi A6 2015\n", ["Audi A4 2012", "Audi A6 2015"]),  # not ids
    ]:
        _write(tmp_path, "names.txt", text, mode="w")
        assert read_class_names(path) == expected


def test_missing_file(tmp_path, vehicleid_release):
    root = vehicleid_release.make(tmp_path)
    os.remove(os.path.join(root, "train_test_split", "train_list.txt"))
    with pytest.raises(DataError, match=r"train_list\.txt: file not found"):
        read_vehicleid(root, ["color"])
    ds = read_vehicleid(root, ["color"], strict=False)
    assert ds.train == [] and len(ds.gallery) == 4
    assert len(ds.problems) == 1 and "split 'train' skipped" in ds.problems[0]
    os.remove(os.path.join(root, "attribute", "model_attr.txt"))
    with pytest.raises(DataError, match=r"model_attr\.txt: file not found"):
        read_vehicleid(root, ["model"], strict=False)


def test_malformed_lines(tmp_path, vehicleid_release):
    root = vehicleid_release.make(tmp_path)
    _write(root, "train_test_split/train_list.txt", "0000006\n")
    with pytest.raises(
        DataError, match=r"train_list\.txt:6: expected '<image id> <vehicle id>'"
    ):
        read_vehicleid(root, [])
    root = vehicleid_release.make(tmp_path / "b")
    _write(root, "attribute/model_attr.txt", "12 x\n")
    with pytest.raises(
        DataError, match=r"model_attr\.txt:5: expected '<vehicle id> <model id>'"
    ):
        read_vehicleid(root, ["model"])


def test_out_of_range_colour_id(tmp_path, vehicleid_release):
    root = vehicleid_release.make(tmp_path)
    _write(root, "attribute/color_attr.txt", "11 7\n")
    with pytest.raises(
        DataError, match=r"color_attr\.txt:3: color id 7 is out of range"
    ):
        read_vehicleid(root, ["color"])
    ds = read_vehicleid(root, ["color"], strict=False)
    assert ds.gallery[2].pid == 11 and ds.gallery[2].attributes == (UNKNOWN,)
    assert ds.problems[0].endswith("vehicle 11 left without color (-1)")


def test_missing_image(tmp_path, vehicleid_release):
    root = vehicleid_release.make(tmp_path)
    os.remove(os.path.join(root, "image", "0000012.jpg"))
    with pytest.raises(DataError, match=r"test_list_800\.txt:3: image not found"):
        read_vehicleid(root, [])
    assert len(read_vehicleid(root, [], check_images=False).gallery) == 4
    ds = read_vehicleid(root, [], strict=False)
    assert [r.pid for r in ds.gallery] == [10, 10, 12]
    assert len(ds.problems) == 1
    shutil.rmtree(os.path.join(root, "image"))
    with pytest.raises(DataError, match=r"image: image folder not found"):
        read_vehicleid(root, [])
    ds = read_vehicleid(root, [], strict=False)  # one problem per list, not per image
    assert len(ds.problems) == 2 and ds.problems[1].endswith(
        "test_list_800.txt skipped"
    )


@pytest.mark.parametrize(
    "line, message",
    [
        ("../../outside 5", "escapes the dataset root"),
        ("/etc/passwd 5", "absolute"),
        ("00\x0099 5", "holds a NUL byte"),
    ],
)
def test_path_escaping_root_is_rejected(tmp_path, line, message, vehicleid_release):
    root = vehicleid_release.make(tmp_path)
    _write(root, "train_test_split/test_list_800.txt", line + "\n")
    with pytest.raises(DataError, match=rf"test_list_800\.txt:5: .*{message}"):
        read_vehicleid(root, [])


def test_non_strict_lists_every_problem(tmp_path, vehicleid_release):
    root = vehicleid_release.make(tmp_path)
    _write(root, "train_test_split/train_list.txt", "0000001 1\n0000099 4\nx\n")
    _write(root, "attribute/color_attr.txt", "10 4\n")  # contradicts line 2
    ds = read_vehicleid(root, ["color", "model"], strict=False)
    assert len(ds.problems) == 4, ds.problems
    assert (
        "color_attr.txt:3: vehicle 10 gets color 4 but line 2 gave 3" in ds.problems[0]
    )
    assert "train_list.txt:6: image 0000001 repeats line 1" in ds.problems[1]
    assert "train_list.txt:7: image not found" in ds.problems[2]
    assert "train_list.txt:8: expected" in ds.problems[3]
    assert len(ds.train) == 5 and ds.gallery[0].attributes == (3, 249)


def test_load_dataset_from_config(tmp_path, vehicleid_release):
    root = vehicleid_release.make(tmp_path)
    cfg = load_config(
        "vehicleid", [f"data.root={root}", "data.vehicleid_test_list='1600'"]
    )
    ds = load_dataset(cfg)
    assert ds.attribute_names == ["color", "model"]
    assert (len(ds.train), len(ds.query), len(ds.gallery)) == (5, 0, 6)
