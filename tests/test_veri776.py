"""VeRi-776 reader on a tiny copy of the release layout, quirks included; and the
reader table / load_dataset of anet_tf.data.readers."""

from __future__ import annotations

import os

import pytest

from anet_tf.config import ConfigError
from anet_tf.config import load_config
from anet_tf.data.readers import READERS
from anet_tf.data.readers import get_reader
from anet_tf.data.readers import load_dataset
from anet_tf.data.records import DataError
from anet_tf.data.veri776 import read_veri776


def _edit(root, name, old, new):
    path = os.path.join(root, name)
    with open(path, "rb") as fh:
        data = fh.read()
    assert old.encode() in data
    with open(path, "wb") as fh:
        fh.write(data.replace(old.encode(), new.encode(), 1))


def _read(root, **kwargs):
    kwargs.setdefault("attributes", ["color", "type"])
    with pytest.warns(UserWarning, match="erratum"):
        return read_veri776(root, **kwargs)


def test_reads_release_layout_with_quirks(tmp_path, veri776_release):
    root = veri776_release.make(tmp_path)
    erratum = r'train_label\.xml:7: typeID="0" on 2 Item\(s\) of vehicle\(s\) 0003, '
    with pytest.warns(UserWarning, match=erratum):
        ds = read_veri776(root, ["color", "type"])
    assert ds.name == "veri776"
    assert ds.attribute_names == ["color", "type"]
    assert ds.attribute_classes == [veri776_release.COLORS, veri776_release.TYPES]
    assert (len(ds.train), len(ds.query), len(ds.gallery)) == (4, 2, 4)
    assert [(r.pid, r.camid, r.attributes) for r in ds.train] == [
        (1, 1, (0, 3)),
        (1, 2, (0, 3)),
        (3, 1, (9, 1)),  # typeID="0" erratum corrected to 2 (SUV) -> class 1
        (3, 5, (9, 1)),
    ]
    assert [(r.pid, r.camid, r.attributes) for r in ds.gallery] == [
        (2, 2, (6, 0)),
        (2, 3, (6, 0)),
        (4, 10, (4, 8)),
        (4, 20, (4, 8)),
    ]
    # Queries take their labels from test_label.xml, by image name.
    assert [(r.pid, r.camid, r.attributes) for r in ds.query] == [
        (2, 2, (6, 0)),
        (4, 20, (4, 8)),
    ]
    for split in ("train", "query", "gallery"):
        for r in ds.split(split):
            assert r.split == split
            assert os.path.isabs(r.path) and os.path.isfile(r.path)
    assert ds.query[0].path == os.path.join(root, "image_query", veri776_release.QUERY[0])
    assert ds.problems == []  # the corrected erratum is a warning, not a problem


def test_corrected_copy_gives_no_warning(tmp_path, recwarn, veri776_release):
    root = veri776_release.make(tmp_path)
    for _ in range(2):
        _edit(root, "train_label.xml", 'typeID="0"', 'typeID="2"')
    ds = read_veri776(root, ["type"])
    assert [r.attributes for r in ds.train] == [(3,), (3,), (1,), (1,)]
    assert not recwarn.list


def test_missing_image_folder_is_one_problem(tmp_path, veri776_release):
    root = veri776_release.make(tmp_path)
    os.rename(os.path.join(root, "image_query"), os.path.join(root, "elsewhere"))
    with pytest.raises(DataError, match=r"image_query: image folder not found"):
        _read(root)
    ds = _read(root, strict=False)
    assert ds.query == [] and len(ds.gallery) == 4
    assert len(ds.problems) == 1
    assert ds.problems[0].endswith(
        "all 2 images of " + os.path.join(root, "name_query.txt") + " skipped"
    )


def test_attribute_order_and_subset(tmp_path, veri776_release):
    root = veri776_release.make(tmp_path)
    ds = _read(root, attributes=["type", "color"])
    assert ds.attribute_classes == [veri776_release.TYPES, veri776_release.COLORS]
    assert ds.train[2].attributes == (1, 9)
    os.remove(os.path.join(root, "list_type.txt"))
    ds = read_veri776(root, ["color"])  # type is neither read nor checked
    assert ds.num_classes == [10]
    assert ds.train[2].attributes == (9,)


def test_unknown_attribute_lists_offered(tmp_path, veri776_release):
    root = veri776_release.make(tmp_path)
    with pytest.raises(DataError, match=r"'model'.*offered: color, type"):
        read_veri776(root, ["color", "model"])


def test_missing_file(tmp_path, veri776_release):
    root = veri776_release.make(tmp_path)
    os.remove(os.path.join(root, "name_query.txt"))
    with pytest.raises(DataError, match=r"name_query\.txt: file not found"):
        _read(root)
    ds = _read(root, strict=False)
    assert ds.query == [] and len(ds.gallery) == 4
    assert any("name_query.txt" in p and "skipped" in p for p in ds.problems)
    os.remove(os.path.join(root, "list_color.txt"))
    with pytest.raises(DataError, match=r"list_color\.txt: file not found"):
        read_veri776(root, ["color"], strict=False)  # the label space: always fatal


def test_malformed_xml_names_file_and_line(tmp_path, veri776_release):
    root = veri776_release.make(tmp_path)
    _edit(root, "test_label.xml", "    </Items>", "    </Itemz>")
    with pytest.raises(DataError, match=r"test_label\.xml:9: malformed XML"):
        _read(root)
    ds = _read(root, strict=False)  # both test splits skipped, train kept
    assert len(ds.train) == 4 and ds.query == [] and ds.gallery == []
    assert sum("test_label.xml:9" in p for p in ds.problems) == 1


def test_out_of_range_colour_id(tmp_path, veri776_release):
    root = veri776_release.make(tmp_path)
    _edit(root, "test_label.xml", 'colorID="5"', 'colorID="11"')
    pattern = (
        r"test_label\.xml:7: <Item imageName='0004_c010_00040000_0\.jpg'>: "
        r"colorID='11' is out of range; list_color\.txt defines ids 1\.\.10"
    )
    with pytest.raises(DataError, match=pattern):
        _read(root)


def test_type_zero_outside_erratum_is_an_error(tmp_path, veri776_release):
    root = veri776_release.make(tmp_path)
    _edit(root, "test_label.xml", 'typeID="9"', 'typeID="0"')
    with pytest.raises(
        DataError, match=r"test_label\.xml:7: .*typeID='0' is out of range"
    ):
        _read(root)


def test_malformed_lines(tmp_path, veri776_release):
    root = veri776_release.make(tmp_path)
    _edit(root, "list_type.txt", "3 van", "three van")
    with pytest.raises(DataError, match=r"list_type\.txt:3: expected '<id> <name>'"):
        read_veri776(root, ["type"])
    root = veri776_release.make(tmp_path / "b")
    _edit(root, "name_train.txt", veri776_release.TRAIN[1][0], veri776_release.TRAIN[1][0] + " extra")
    with pytest.raises(
        DataError, match=r"name_train\.txt:2: expected one image file name"
    ):
        _read(root)
    _edit(
        root, "train_label.xml", 'vehicleID="0001" cameraID="c002"', 'vehicleID="01x"'
    )
    with pytest.raises(
        DataError, match=r"train_label\.xml:6: .*vehicleID must be a number"
    ):
        read_veri776(root, ["color", "type"])  # raises before the erratum items


def test_missing_image_and_label(tmp_path, veri776_release):
    root = veri776_release.make(tmp_path)
    os.remove(os.path.join(root, "image_train", veri776_release.TRAIN[1][0]))
    with pytest.raises(DataError, match=r"name_train\.txt:2: image not found"):
        _read(root)
    assert len(_read(root, check_images=False).train) == 4
    with open(os.path.join(root, "name_test.txt"), "a") as fh:
        fh.write("0009_c001_00000000_0.jpg\n")
    ds = _read(root, strict=False)
    assert [r.path for r in ds.train] == [
        os.path.join(root, "image_train", veri776_release.TRAIN[i][0]) for i in (0, 2, 3)
    ]
    assert len(ds.gallery) == 4
    assert len(ds.problems) == 2  # missing image, missing <Item>
    assert any(
        "name_test.txt:5: 0009_c001_00000000_0.jpg has no <Item>" in p
        for p in ds.problems
    )


@pytest.mark.parametrize(
    "line, message",
    [
        ("../../outside.jpg", "escapes the dataset root"),
        ("/etc/passwd", "absolute path"),
    ],
)
def test_path_escaping_root_is_rejected(tmp_path, line, message, veri776_release):
    root = veri776_release.make(tmp_path)
    with open(os.path.join(root, "name_query.txt"), "a") as fh:
        fh.write("\n" + line + "\n")
    with pytest.raises(DataError, match=rf"name_query\.txt:3: .*{message}"):
        _read(root)


def test_listed_image_linking_out_of_the_root_is_rejected(tmp_path, veri776_release):
    root = veri776_release.make(tmp_path / "veri")
    outside = tmp_path / "hostname"
    outside.write_text("x")
    with open(os.path.join(root, "name_query.txt")) as fh:
        first = fh.readline().strip()
    target = os.path.join(root, "image_query", first)
    os.remove(target)
    os.symlink(outside, target)
    with pytest.raises(DataError, match=rf"name_query\.txt:1: .*is a link to {outside}"):
        _read(root)


def test_non_strict_lists_every_problem(tmp_path, veri776_release):
    root = veri776_release.make(tmp_path)
    _edit(
        root,
        "train_label.xml",
        'colorID="1" typeID="4" />',
        'colorID="99" typeID="4" />',
    )
    os.remove(os.path.join(root, "image_test", veri776_release.TEST[3][0]))
    with open(os.path.join(root, "name_query.txt"), "a") as fh:
        fh.write("\n../x.jpg\n")
    ds = _read(root, strict=False)
    errors = ds.problems
    assert len(errors) == 3, errors  # the bad <Item> is reported once, not per list
    assert any(
        "train_label.xml:5:" in p
        and "colorID='99'" in p
        and p.endswith("skipped where listed")
        for p in errors
    )
    assert any("name_test.txt:4: image not found" in p for p in errors)
    assert any("name_query.txt:3:" in p for p in errors)
    assert (len(ds.train), len(ds.query), len(ds.gallery)) == (3, 2, 3)


def test_reader_table_and_load_dataset(tmp_path, veri776_release):
    assert set(READERS) == {"synthetic", "folder", "veri776", "veriwild", "vehicleid"}
    with pytest.raises(KeyError, match="valid: synthetic, folder, veri776"):
        get_reader("veri")
    root = veri776_release.make(tmp_path)
    cfg = load_config("veri776", [f"data.root={root}"])
    with pytest.warns(UserWarning, match="erratum"):
        ds = load_dataset(cfg)
    assert (len(ds.train), len(ds.query), len(ds.gallery)) == (4, 2, 4)
    cfg = load_config("veri776", [f"data.root={tmp_path / 'absent'}"])
    # the error names the --set that gave data.root, not the shipped file
    with pytest.raises(ConfigError, match=r"^--set: data\.root: .*absent"):
        load_dataset(cfg)
    cfg = load_config("synthetic", [f"data.root={tmp_path / 'absent'}"])
    with pytest.raises(ConfigError, match=r"^--set: data\.root: .*anet-tf synth"):
        load_dataset(cfg)
