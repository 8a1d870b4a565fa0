"""The generic folder format: reading, every kind of bad input, writing."""

import os

import pytest
from PIL import Image

from anet_tf.data.generic import collect_problems
from anet_tf.data.generic import read_folder
from anet_tf.data.generic import write_folder
from anet_tf.data.records import DataError

HEADER = "path,vehicle_id,camera_id,split,color,type"
ROWS = [
    "images/a1.jpg,1,1,train,red,sedan",
    "images/a2.jpg,1,2,train,red,sedan",
    "images/b1.jpg,2,1,train,,van",
    "images/b2.jpg,2,3,train,blue,van",
    "images/c1.jpg,3,1,query,blue,",
    "images/c2.jpg,3,2,gallery,blue,",
    "images/c3.jpg,3,3,gallery,blue,",
]
CLASSES = {"color": ["red", "blue", "white"], "type": ["sedan", "van"]}


def make_folder(root, rows=ROWS, header=HEADER, classes=CLASSES):
    """A folder dataset with a tiny JPEG for every well-formed path of ``rows``."""
    os.makedirs(root / "images", exist_ok=True)
    os.makedirs(root / "attributes", exist_ok=True)
    for name, names in classes.items():
        (root / "attributes" / f"{name}.txt").write_text("\n".join(names) + "\n")
    (root / "manifest.csv").write_text("\n".join([header, *rows]) + "\n")
    for row in rows:
        path = row.split(",")[0]
        if path.startswith("images/"):
            Image.new("RGB", (8, 8), (200, 30, 30)).save(root / path, "JPEG")
    return str(root)


def with_row(line: int, row: str) -> list[str]:
    """ROWS with the data row on manifest line ``line`` (header = line 1) replaced."""
    rows = list(ROWS)
    rows[line - 2] = row
    return rows


def test_reads_records_with_requested_attributes_in_order(tmp_path):
    root = make_folder(tmp_path)
    ds = read_folder(root, ["type", "color"])
    assert ds.name == "folder"
    assert ds.attribute_names == ["type", "color"]
    assert ds.attribute_classes == [CLASSES["type"], CLASSES["color"]]
    assert [len(ds.train), len(ds.query), len(ds.gallery)] == [4, 1, 2]
    first = ds.train[0]
    assert first.path == os.path.join(root, "images", "a1.jpg")
    assert (first.pid, first.camid, first.attributes) == (1, 1, (0, 0))
    assert ds.train[2].attributes == (1, -1)  # empty colour = unknown
    assert ds.query[0].attributes == (-1, 1)
    assert ds.problems == []


def test_only_requested_attributes_become_branches(tmp_path):
    ds = read_folder(make_folder(tmp_path), ["color"])
    assert ds.attribute_names == ["color"]
    assert all(len(r.attributes) == 1 for r in ds.train)


def test_short_line_names_file_and_line(tmp_path):
    root = make_folder(tmp_path, with_row(3, "images/a2.jpg,1,2,train"))
    with pytest.raises(DataError, match=r"manifest\.csv:3: expected 6 fields"):
        read_folder(root, ["color", "type"])


def test_empty_field_names_file_and_line(tmp_path):
    root = make_folder(tmp_path, with_row(4, "images/b1.jpg,,1,train,,van"))
    with pytest.raises(DataError, match=r"manifest\.csv:4: empty vehicle_id"):
        read_folder(root, ["color", "type"])


def test_bad_vehicle_id(tmp_path):
    root = make_folder(tmp_path, with_row(2, "images/a1.jpg,car1,1,train,red,sedan"))
    with pytest.raises(
        DataError, match=r"manifest\.csv:2: vehicle_id 'car1' is not an integer"
    ):
        read_folder(root, ["color", "type"])


def test_unknown_split_lists_valid_ones(tmp_path):
    root = make_folder(tmp_path, with_row(6, "images/c1.jpg,3,1,test,blue,"))
    with pytest.raises(
        DataError,
        match=r"manifest\.csv:6: unknown split 'test'; valid: train, query, gallery",
    ):
        read_folder(root, ["color", "type"])


def test_unknown_class_name_lists_valid_names(tmp_path):
    root = make_folder(tmp_path, with_row(5, "images/b2.jpg,2,3,train,pink,van"))
    with pytest.raises(DataError) as info:
        read_folder(root, ["color", "type"])
    message = str(info.value)
    assert "manifest.csv:5: unknown color class 'pink'" in message
    assert "red, blue, white" in message
    assert os.path.join("attributes", "color.txt") in message


def test_attribute_without_column(tmp_path):
    root = make_folder(tmp_path)
    with pytest.raises(DataError) as info:
        read_folder(root, ["color", "make"])
    message = str(info.value)
    assert "manifest.csv:1: attribute 'make'" in message
    assert "color, type" in message


def test_attribute_without_class_file(tmp_path):
    root = make_folder(tmp_path, classes={"color": CLASSES["color"]})
    with pytest.raises(DataError) as info:
        read_folder(root, ["color", "type"])
    assert os.path.join(root, "attributes", "type.txt") in str(info.value)
    assert "file not found" in str(info.value)


def test_duplicate_class_names_line(tmp_path):
    root = make_folder(tmp_path, classes={**CLASSES, "type": ["sedan", "van", "van"]})
    with pytest.raises(DataError, match=r"type\.txt:3: class 'van' is listed twice"):
        read_folder(root, ["type"])


def test_missing_image(tmp_path):
    root = make_folder(tmp_path)
    os.remove(os.path.join(root, "images", "b2.jpg"))
    with pytest.raises(
        DataError, match=r"manifest\.csv:5: image 'images/b2\.jpg' not found"
    ):
        read_folder(root, ["color"])
    assert len(read_folder(root, ["color"], check_images=False).train) == 4


@pytest.mark.parametrize(
    ("path", "expected"),
    [("../outside.jpg", "escapes the dataset root"), ("/tmp/x.jpg", "absolute path")],
)
def test_path_outside_root(tmp_path, path, expected):
    root = make_folder(tmp_path, with_row(3, f"{path},1,2,train,red,sedan"))
    with pytest.raises(DataError) as info:
        read_folder(root, ["color"])
    assert "manifest.csv:3" in str(info.value)
    assert expected in str(info.value)


def test_symlink_out_of_the_root_is_refused_like_dotdot(tmp_path):
    outside = tmp_path / "secret.txt"
    outside.write_text("not yours")
    root = make_folder(tmp_path / "data")
    os.remove(os.path.join(root, "images", "a2.jpg"))
    os.symlink(outside, os.path.join(root, "images", "a2.jpg"))
    with pytest.raises(DataError) as info:
        read_folder(root, ["color"])
    assert "manifest.csv:3" in str(info.value) and f"is a link to {outside}" in str(info.value)
    # A link that stays inside the root is fine.
    os.remove(os.path.join(root, "images", "a2.jpg"))
    os.symlink(os.path.join(root, "images", "a1.jpg"), os.path.join(root, "images", "a2.jpg"))
    assert len(read_folder(root, ["color"]).train) == 4  # read without complaint


def test_corrupt_and_truncated_images_are_problems(tmp_path):
    root = make_folder(tmp_path)
    (tmp_path / "images" / "c1.jpg").write_bytes(b"not a jpeg at all")
    Image.new("RGB", (64, 64)).save(tmp_path / "images" / "c3.jpg", "JPEG")
    data = (tmp_path / "images" / "c3.jpg").read_bytes()
    (tmp_path / "images" / "c3.jpg").write_bytes(data[: len(data) // 2])
    assert read_folder(root, ["color"]).problems == []  # training does not decode
    problems = collect_problems(root, ["color", "type"])
    assert len(problems) == 2
    assert "manifest.csv:6: image 'images/c1.jpg' cannot be decoded" in problems[0]
    assert "manifest.csv:8: image 'images/c3.jpg' cannot be decoded" in problems[1]
    assert "truncated" in problems[1]


def test_single_image_identity_is_a_warning_not_a_problem(tmp_path):
    from anet_tf.data.check import split_warnings

    rows = [*ROWS, "images/d1.jpg,4,2,train,white,sedan"]
    root = make_folder(tmp_path, rows)
    ds = read_folder(root, ["color"])
    assert len(ds.train) == 5
    assert ds.problems == [] == collect_problems(root, ["color"])
    (warning,) = split_warnings(ds)
    assert "1 of 3 training identities have a single image (e.g. 4)" in warning


def test_collect_problems_gathers_every_problem(tmp_path):
    rows = list(ROWS)
    rows[0] = "images/a1.jpg,x,1,train,red,sedan"
    rows[2] = "images/b1.jpg,2,1,valid,,van"
    rows[4] = "images/c1.jpg,3,1,query,pink,"
    root = make_folder(tmp_path, rows)
    problems = collect_problems(root, ["color", "type"])
    lines = [p.split(": ")[0].rsplit(":", 1)[1] for p in problems]
    # Three errors (identities 1 and 2 left with a single training image are a
    # warning of data check, not a problem).
    assert lines == ["2", "4", "6"]
    ds = read_folder(root, ["color", "type"], strict=False)
    assert [len(ds.train), len(ds.query), len(ds.gallery)] == [2, 0, 2]


def test_cameras_empty_everywhere_or_nowhere(tmp_path):
    rows = [
        ",".join(c if i != 2 else "" for i, c in enumerate(r.split(","))) for r in ROWS
    ]
    ds = read_folder(make_folder(tmp_path / "none", rows), ["color"])
    assert {r.camid for r in ds.train + ds.query + ds.gallery} == {-1}
    root = make_folder(tmp_path / "mixed", with_row(4, "images/b1.jpg,2,,train,,van"))
    with pytest.raises(DataError, match=r"manifest\.csv:4: empty camera_id, but 6"):
        read_folder(root, ["color"])


def test_write_folder_round_trip(tmp_path):
    root = make_folder(tmp_path)
    original = (tmp_path / "manifest.csv").read_bytes()
    ds = read_folder(root, ["color", "type"])
    write_folder(ds)
    assert (tmp_path / "manifest.csv").read_bytes() == original
    assert read_folder(root, ["color", "type"]) == ds


def test_write_folder_refuses_images_outside_root(tmp_path):
    ds = read_folder(make_folder(tmp_path / "a"), ["color"])
    with pytest.raises(DataError, match="outside the dataset root"):
        write_folder(ds, str(tmp_path / "b"))


# ------------------------------------------- cells csv cannot take, repeated images

LIMIT = 131_072  # csv.field_size_limit() unless a program changes it


def test_a_cell_over_the_csv_field_limit_names_line_and_column(tmp_path):
    long = "x" * (LIMIT + 10)
    rows = with_row(4, f"images/b1.jpg,2,1,train,{long},van")
    rows[5] = "images/c2.jpg,3,2,gallery,pink,"  # a later problem is still found
    root = make_folder(tmp_path, rows)
    expected = (
        f"manifest.csv:4: the 'color' cell (column 5) is {LIMIT + 10:,} characters "
        f"long, more than the {LIMIT:,} a manifest cell may hold"
    )
    with pytest.raises(DataError) as info:
        read_folder(root, ["color"])
    assert str(info.value) == f"{tmp_path / 'manifest.csv'}:4{expected[14:]}"
    problems = collect_problems(root, ["color", "type"])
    assert expected in problems[0] and problems[0].endswith("; row left out")
    assert "manifest.csv:7: unknown color class 'pink'" in problems[1]
    assert len(read_folder(root, ["color"], strict=False).train) == 3


def test_an_unclosed_quote_is_named_where_it_opens_and_ends_the_reading(tmp_path):
    filler = [f"images/f{i}.jpg,9,1,train,red,van" for i in range(LIMIT // 30 + 10)]
    rows = [*with_row(3, 'images/a2.jpg,1,2,train,"red,sedan'), *filler]
    root = make_folder(tmp_path, rows)
    with pytest.raises(DataError) as info:
        read_folder(root, ["color"])
    message = str(info.value)
    assert message.startswith(f"{tmp_path / 'manifest.csv'}:3: the 'color' cell")
    assert "opens a quote that is not closed by line" in message
    problems = collect_problems(root, ["color"], verify_images=False)
    assert problems[0].endswith("close the quote; the rest of the file is not read")


def test_a_nul_byte_names_line_column_and_character(tmp_path):
    root = make_folder(tmp_path)
    rows = with_row(3, "images/a\0.jpg,1,2,train,red,sedan")
    (tmp_path / "manifest.csv").write_text("\n".join([HEADER, *rows]) + "\n")
    with pytest.raises(DataError) as info:
        read_folder(root, ["color"])
    assert str(info.value).startswith(
        f"{tmp_path / 'manifest.csv'}:3: the 'path' cell (column 1) holds a NUL "
        "byte at character 9; a manifest is plain text"
    )
    # A manifest saved as UTF-16 without a byte-order mark decodes as UTF-8 with a
    # NUL after every letter: named once, on its header.
    (tmp_path / "manifest.csv").write_bytes(f"{HEADER}\n{ROWS[0]}\n".encode("utf-16-le"))
    problems = collect_problems(root, ["color"])
    assert problems == [
        f"{tmp_path / 'manifest.csv'}:1: cell 1 of the header holds a NUL byte at "
        "character 2; a manifest is plain text (a file saved as UTF-16 has one after "
        "every letter: save it as UTF-8); the rest of the file is not read"
    ]


def test_a_repeated_image_is_refused_for_training_and_left_out_by_data_check(tmp_path):
    rows = [*ROWS, ROWS[1], ROWS[1].replace(",train,", ",gallery,")]
    root = make_folder(tmp_path, rows)
    with pytest.raises(DataError) as info:
        read_folder(root, ["color"])
    assert str(info.value) == (
        f"{tmp_path / 'manifest.csv'}:9: image images/a2.jpg is already listed on "
        f"line 3; list every image once (anet-tf data check {root} lists every repeat)"
    )
    ds = read_folder(root, ["color"], strict=False)
    assert [len(ds.train), len(ds.query), len(ds.gallery)] == [4, 1, 2]
    assert ds.problems == [
        f"{tmp_path / 'manifest.csv'}:{line}: image images/a2.jpg is already listed "
        "on line 3; list every image once; repeat left out"
        for line in (9, 10)
    ]
