"""VeRi-Wild reader on a tiny copy of the release layout, quirks included."""

from __future__ import annotations

import os

import pytest

from anet_tf.config import load_config
from anet_tf.data.readers import load_dataset
from anet_tf.data.records import UNKNOWN
from anet_tf.data.records import DataError
from anet_tf.data.veriwild import read_veriwild


def test_reads_release_layout_with_quirks(tmp_path, veriwild_release):
    root = veriwild_release.make(tmp_path)
    ds = read_veriwild(root, ["color", "type", "model"])
    assert ds.name == "veriwild" and ds.problems == []
    assert ds.attribute_classes == [
        ["black", "blue", "dark gray", "red", "white"],
        ["SUV", "minivan", "sedan", "small-sized truck"],  # leading space stripped
        ["Audi A6L", "Buick Excelle GT", "Volkswagen Lavida"],
    ]
    assert (len(ds.train), len(ds.query), len(ds.gallery)) == (4, 2, 3)
    assert [(r.pid, r.camid, r.attributes) for r in ds.train] == [
        (1, 3, (0, 2, 0)),
        (1, 7, (0, 2, 0)),
        (2, 12, (2, 3, 1)),
        (2, 3, (2, 3, 1)),
    ]
    assert [(r.pid, r.camid) for r in ds.query] == [(10, 1), (11, 5)]
    assert [(r.pid, r.camid, r.attributes) for r in ds.gallery] == [
        (10, 2, (4, 0, 2)),
        (10, 174, (4, 0, UNKNOWN)),  # empty model field
        (11, 6, (3, 2, 0)),
    ]
    assert ds.train[1].path == os.path.join(root, "images", "00001", "000002.jpg")
    for split in ("train", "query", "gallery"):
        assert all(r.split == split and os.path.isfile(r.path) for r in ds.split(split))


def test_test_sizes_and_attribute_choice(tmp_path, veriwild_release):
    root = veriwild_release.make(tmp_path)
    ds = read_veriwild(root, ["model"], test_size="medium")
    assert (len(ds.query), len(ds.gallery)) == (3, 4)
    assert ds.query[2].attributes == (1,)
    assert len(read_veriwild(root, [], test_size="5000").gallery) == 4
    with pytest.raises(DataError, match="veriwild_test_size.*small | medium | large"):
        read_veriwild(root, [], test_size="huge")
    with pytest.raises(DataError, match=r"test_10000_query\.txt: file not found"):
        read_veriwild(root, [], test_size="large")


def test_unknown_attribute_lists_offered(tmp_path, veriwild_release):
    root = veriwild_release.make(tmp_path)
    with pytest.raises(DataError, match=r"'brand'.*offered: color, type, model"):
        read_veriwild(root, ["color", "brand"])


def test_missing_file(tmp_path, veriwild_release):
    root = veriwild_release.make(tmp_path)
    os.remove(os.path.join(root, veriwild_release.SPLIT, "test_3000.txt"))
    with pytest.raises(DataError, match=r"test_3000\.txt: file not found.*rename"):
        read_veriwild(root, ["color"])
    ds = read_veriwild(root, ["color"], strict=False)
    assert (len(ds.train), len(ds.query), len(ds.gallery)) == (4, 2, 0)
    assert len(ds.problems) == 1 and "split 'gallery' skipped" in ds.problems[0]
    os.remove(os.path.join(root, veriwild_release.SPLIT, "vehicle_info.txt"))
    with pytest.raises(DataError, match=r"vehicle_info\.txt: file not found"):
        read_veriwild(root, ["color"], strict=False)


def test_malformed_lines(tmp_path, veriwild_release):
    root = veriwild_release.make(tmp_path)
    veriwild_release.append(root, "train_list.txt", "00001 000003\n")
    with pytest.raises(DataError, match=r"train_list\.txt:5: expected 'VVVVV/IIIIII'"):
        read_veriwild(root, ["color"])
    root = veriwild_release.make(tmp_path / "b")
    veriwild_release.append(root, "vehicle_info.txt", "00001/000009;4;Audi;sedan\n")
    with pytest.raises(
        DataError, match=r"vehicle_info\.txt:14: expected 6 ';'-separated"
    ):
        read_veriwild(root, ["color"])
    root = veriwild_release.make(tmp_path / "c")
    veriwild_release.append(root, "vehicle_info.txt", "00001/000009;c4;t;Audi;sedan;red\n")
    with pytest.raises(
        DataError, match=r"vehicle_info\.txt:14: Camera ID must be an integer"
    ):
        read_veriwild(root, ["color"])


def test_missing_image_and_row(tmp_path, veriwild_release):
    root = veriwild_release.make(tmp_path)
    os.remove(os.path.join(root, "images", "00010", "000102.jpg"))
    with pytest.raises(DataError, match=r"test_3000\.txt:2: image not found"):
        read_veriwild(root, ["color"])
    assert len(read_veriwild(root, ["color"], check_images=False).gallery) == 3
    veriwild_release.append(root, "train_list.txt", "00003/000300\n")
    ds = read_veriwild(root, ["color"], strict=False)
    assert [(r.pid, r.camid) for r in ds.gallery] == [(10, 2), (11, 6)]
    assert len(ds.train) == 4
    assert len(ds.problems) == 2
    assert "train_list.txt:5: 00003/000300 has no row in" in ds.problems[0]
    assert ds.problems[1].endswith("000102.jpg; skipped")


@pytest.mark.parametrize(
    "line, message",
    [
        ("../../../outside/000001", "escapes the dataset root"),
        ("/00001/000001", "absolute"),
        ("00010/0\x00100", "holds a NUL byte"),
    ],
)
def test_path_escaping_root_is_rejected(tmp_path, line, message, veriwild_release):
    root = veriwild_release.make(tmp_path)
    veriwild_release.append(root, "test_3000_query.txt", line + "\n")
    with pytest.raises(DataError, match=rf"test_3000_query\.txt:3: .*{message}"):
        read_veriwild(root, ["color"])


def test_non_strict_lists_every_problem(tmp_path, veriwild_release):
    root = veriwild_release.make(tmp_path)
    veriwild_release.append(root, "train_list.txt", "bad line\n../x/1\n")
    veriwild_release.append(root, "vehicle_info.txt", "00001/000001;9;t;m;sedan;red\n")  # repeat
    path = os.path.join(root, veriwild_release.SPLIT, "vehicle_info.txt")
    with open(path) as fh:
        text = fh.read().replace("00011/000111;6;", "00011/000111;six;")
    with open(path, "w") as fh:
        fh.write(text)
    ds = read_veriwild(root, ["color", "type"], strict=False)
    assert len(ds.problems) == 4, ds.problems
    assert "train_list.txt:5:" in ds.problems[0]
    assert "train_list.txt:6:" in ds.problems[1]
    assert "vehicle_info.txt:11: Camera ID" in ds.problems[2]
    assert "vehicle_info.txt:14: 00001/000001 repeats line 2" in ds.problems[3]
    assert (len(ds.train), len(ds.query), len(ds.gallery)) == (4, 2, 2)
    assert ds.train[0].camid == 3  # the first row wins


def test_load_dataset_from_config(tmp_path, veriwild_release):
    root = veriwild_release.make(tmp_path)
    cfg = load_config(
        "veriwild", [f"data.root={root}", "data.veriwild_test_size=medium"]
    )
    ds = load_dataset(cfg)
    assert ds.attribute_names == ["color", "type"]
    assert (len(ds.train), len(ds.query), len(ds.gallery)) == (4, 3, 4)
