"""`data check`: statistics, split-level problems, report."""

import json
import os

import pytest
from PIL import Image

from anet_tf.data.check import check
from anet_tf.data.check import dataset_stats
from anet_tf.data.check import format_report
from anet_tf.data.check import split_problems
from anet_tf.data.records import Record
from anet_tf.data.records import ReidDataset
from anet_tf.data.synthetic import generate


def record(pid, camid, attributes, split):
    return Record(f"/data/{pid}_{camid}_{split}.jpg", pid, camid, attributes, split)


def small_dataset(**changes) -> ReidDataset:
    """2 training identities (3 + 1 images), 1 test identity (1 query, 2 gallery)."""
    fields = dict(
        name="toy",
        root="/data",
        attribute_names=["color", "type"],
        attribute_classes=[["red", "blue"], ["sedan", "van", "bus"]],
        train=[
            record(1, 1, (0, 0), "train"),
            record(1, 2, (0, 0), "train"),
            record(1, 3, (0, 0), "train"),
            record(2, 1, (-1, 2), "train"),
        ],
        query=[record(3, 1, (1, 1), "query")],
        gallery=[record(3, 2, (1, 1), "gallery"), record(3, 1, (1, 1), "gallery")],
    )
    fields.update(changes)
    return ReidDataset(**fields)


def test_stats_by_hand():
    stats = dataset_stats(small_dataset())
    train = stats["splits"]["train"]
    assert (train["images"], train["identities"], train["cameras"]) == (4, 2, 3)
    assert train["images_per_identity"] == {"min": 1, "mean": 2.0, "max": 3}
    assert train["attributes"]["color"] == {"red": 3, "blue": 0, "(unknown)": 1}
    assert train["attributes"]["type"] == {
        "sedan": 3,
        "van": 0,
        "bus": 1,
        "(unknown)": 0,
    }
    gallery = stats["splits"]["gallery"]
    assert (gallery["images"], gallery["identities"], gallery["cameras"]) == (2, 1, 2)
    assert stats["patterns"] == {
        "possible": 6,
        "train_seen": 1,
        "train_unknown_images": 1,
    }
    assert stats["queries_without_match"] == 0
    json.dumps(stats)  # JSON-serialisable


def test_empty_split_has_no_per_identity_stats():
    stats = dataset_stats(small_dataset(query=[]))
    assert stats["splits"]["query"]["images"] == 0
    assert stats["splits"]["query"]["images_per_identity"] is None


def test_split_problems():
    same_camera = small_dataset(gallery=[record(3, 1, (1, 1), "gallery")])
    problems = split_problems(same_camera)
    assert len(problems) == 1
    assert (
        "1 of 1 queries have no gallery image of the same vehicle from another"
        in (problems[0])
    )
    overlap = small_dataset(query=[record(1, 5, (0, 0), "query")])
    assert any(
        "1 vehicle ids are in both train and query/gallery (e.g. 1)" in p
        for p in split_problems(overlap)
    )
    assert split_problems(small_dataset(train=[])) == [
        "/data (toy): the train split is empty"
    ]
    no_cameras = small_dataset(
        query=[record(3, -1, (1, 1), "query")],
        gallery=[record(3, -1, (1, 1), "gallery")],
    )
    assert split_problems(no_cameras) == []


def test_check_keeps_reader_problems_of_a_dataset():
    report = check(
        small_dataset(problems=["labels.txt:4: something"]), verify_images=False
    )
    assert report["problems"] == ["labels.txt:4: something"]
    assert report["ok"] is False
    assert check(small_dataset(), verify_images=False)["ok"] is True


def test_check_decodes_the_images_of_a_dataset(tmp_path):
    Image.new("RGB", (8, 8)).save(tmp_path / "good.jpg", "JPEG")
    (tmp_path / "bad.jpg").write_bytes(b"broken")
    Image.new("RGB", (8, 8)).save(tmp_path / "photo.webp", "WEBP")
    paths = {"good.jpg": 1, "bad.jpg": 2, "gone.jpg": 3, "photo.webp": 4}
    gallery = [
        Record(str(tmp_path / name), 3, cam, (1, 1), "gallery")
        for name, cam in paths.items()
    ]
    ds = small_dataset(gallery=gallery)
    ds.query[0] = Record(str(tmp_path / "good.jpg"), 3, 1, (1, 1), "query")
    ds.train = [Record(str(tmp_path / "good.jpg"), 1, 1, (0, 0), "train")] * 2
    problems = check(ds)["problems"]
    assert len(problems) == 2  # the WebP is read by the pipeline: accepted
    assert problems[0] == (
        f"{tmp_path / 'bad.jpg'}: gallery image cannot be decoded: not a JPEG, PNG, "
        "GIF, BMP or WebP file"
    )
    assert problems[1] == f"{tmp_path / 'gone.jpg'}: gallery image not found"


def test_check_generated_dataset_is_ok(tmp_path):
    root = generate(
        str(tmp_path / "s"),
        ids=6,
        test_ids=2,
        cameras=2,
        images_per_id=3,
        image_size=48,
    )
    report = check(root)  # attributes default to the manifest's columns
    assert report["problems"] == []
    assert report["ok"] is True
    assert list(report["stats"]["attributes"]) == ["color", "type"]
    assert report["stats"]["splits"]["train"]["images"] == 12
    json.dumps(report)


def test_check_folder_lists_problems_and_counts_good_rows(tmp_path):
    os.makedirs(tmp_path / "attributes")
    os.makedirs(tmp_path / "images")
    (tmp_path / "attributes" / "color.txt").write_text("red\nblue\n")
    (tmp_path / "manifest.csv").write_text(
        "path,vehicle_id,camera_id,split,color\n"
        "images/1.jpg,1,1,train,red\n"
        "images/2.jpg,1,2,train,red\n"
        "images/3.jpg,2,1,query,green\n"
        "images/4.jpg,2,2,gallery,blue\n"
    )
    for i in range(1, 5):
        Image.new("RGB", (8, 8)).save(tmp_path / "images" / f"{i}.jpg", "JPEG")
    (tmp_path / "images" / "2.jpg").write_bytes(b"broken")
    report = check(str(tmp_path))
    assert report["ok"] is False
    problems = report["problems"]
    assert "manifest.csv:3: image 'images/2.jpg' cannot be decoded" in problems[0]
    assert "manifest.csv:4: unknown color class 'green'" in problems[1]
    assert "the query split is empty" in problems[2]
    assert len(problems) == 3
    assert report["warnings"] == [
        f"{tmp_path} (folder): 1 of 1 training identities have a single image (e.g. "
        "1): they are sampled with repeats and give the triplet loss no real positive"
    ]
    assert report["stats"]["splits"]["train"]["images"] == 1


def test_format_report():
    problems = [f"m.csv:{i}: bad" for i in range(60)]
    report = check(small_dataset(problems=problems), verify_images=False)
    text = format_report(report)
    lines = text.splitlines()
    assert lines[0] == "dataset toy at /data"
    assert any(line.split()[:3] == ["train", "4", "2"] for line in lines)
    assert "attribute type (3 classes)" in text
    assert any(line.split() == ["(unknown)", "1", "0", "0"] for line in lines)
    assert "problems: 60" in text
    assert "m.csv:49: bad" in text and "m.csv:50: bad" not in text
    assert "... and 10 more" in text
    assert lines[-1] == "NOT OK"


def test_missing_folder_and_latin1_manifest_are_one_line(tmp_path, capsys):
    from anet_tf.cli import main

    assert main(["data", "check", str(tmp_path / "nope")]) == 1
    err = capsys.readouterr().err
    assert err.strip() == f"anet-tf data: error: {tmp_path / 'nope'}: no such folder"
    root = tmp_path / "latin1"
    root.mkdir()
    (root / "manifest.csv").write_bytes(
        b"path,vehicle_id,camera_id,split\nimages/a.jpg,1,1,train\nimages/caf\xe9.jpg,1,2,train\n"
    )
    assert main(["data", "check", str(root)]) == 1
    err = capsys.readouterr().err
    assert f"{root / 'manifest.csv'}:3: not UTF-8 text (byte 0xe9 at column 11)" in err
    assert len(err.strip().splitlines()) == 1


def _copy_dataset(src, dst):
    import shutil

    shutil.copytree(src, dst)
    return dst


def test_fit_preflight_names_truncated_huge_and_unreadable_images_before_training(
    tiny_dataset, tiny_overrides, tmp_path, capsys
):
    """fit checks every image's header and end marker before training starts: a
    truncated gallery JPEG, an image over data.max_image_pixels and a non-image are
    named in one line within seconds (no training happens)."""
    import csv

    from PIL import Image

    from anet_tf.cli import main

    root = _copy_dataset(tiny_dataset, str(tmp_path / "data"))
    with open(f"{root}/manifest.csv") as fh:
        rows = list(csv.DictReader(fh))
    gallery = next(r["path"] for r in rows if r["split"] == "gallery")
    data = open(f"{root}/{gallery}", "rb").read()
    open(f"{root}/{gallery}", "wb").write(data[: len(data) // 2])
    out = str(tmp_path / "run")
    args = ["fit", "--out", out, "--no-export", "--quiet"]
    for item in [*tiny_overrides, f"data.root={root}", "data.name=folder"]:
        args += ["--set", item]
    assert main(args) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "1 of" in err
    assert (
        f"{gallery} (gallery) cannot be decoded: truncated JPEG (no end-of-image "
        "marker)"
    ) in err
    assert not os.path.exists(os.path.join(out, "checkpoints"))

    open(f"{root}/{gallery}", "wb").write(data)  # repaired; now one image is too large
    train_image = next(r["path"] for r in rows if r["split"] == "train")
    Image.new("RGB", (300, 200)).save(f"{root}/{train_image}", format="JPEG")
    assert main([*args, "--set", "data.max_image_pixels=50000"]) == 1
    err = capsys.readouterr().err
    assert (
        f"{train_image} (train) cannot be decoded: 300 x 200 pixels, more than "
        "data.max_image_pixels=50000"
    ) in err


def test_image_header_problem_cases(tmp_path):
    from PIL import Image

    from anet_tf.data.generic import image_header_problem

    good = tmp_path / "a.png"
    Image.new("RGB", (20, 10)).save(good)
    assert image_header_problem(str(good)) is None
    (tmp_path / "empty.jpg").write_bytes(b"")
    assert image_header_problem(str(tmp_path / "empty.jpg")) == (
        "cannot be decoded: the file is empty"
    )
    (tmp_path / "text.jpg").write_text("hello")
    assert image_header_problem(str(tmp_path / "text.jpg")) == (
        "cannot be decoded: not a JPEG, PNG, GIF, BMP or WebP file"
    )
    data = good.read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) - 12])
    assert image_header_problem(str(tmp_path / "cut.png")) == (
        "cannot be decoded: truncated PNG (no IEND chunk)"
    )
    assert "more than data.max_image_pixels=100" in image_header_problem(str(good), max_pixels=100)
    assert image_header_problem(str(tmp_path / "missing.png")) == "not found"


def damage_scan(path):
    """Keep a JPEG's header and end marker, break its scan (the SOS segment's length
    field): header checks pass, decoding fails."""
    data = bytearray(open(path, "rb").read())
    sos = data.find(b"\xff\xda")
    data[sos + 2 : sos + 4] = b"\x00\x01"
    open(path, "wb").write(bytes(data))


def test_fit_names_an_image_whose_scan_data_is_damaged(tiny_dataset, tiny_overrides, tmp_path, capsys):
    import csv

    from anet_tf.cli import main

    root = _copy_dataset(tiny_dataset, str(tmp_path / "data"))
    with open(f"{root}/manifest.csv") as fh:
        path = next(r["path"] for r in csv.DictReader(fh) if r["split"] == "train")
    damage_scan(f"{root}/{path}")
    out = str(tmp_path / "run")
    args = ["fit", "--out", out, "--no-export", "--quiet"]
    for item in [*tiny_overrides, f"data.root={root}", "data.name=folder", "train.stage1.steps_per_epoch=4"]:
        args += ["--set", item]
    code = main(args)
    err = capsys.readouterr().err
    assert code == 1, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("anet-tf fit: error: 1 image(s) cannot be decoded: ")
    assert f"{root}/{path}: jpeg::Uncompress failed" in last and "--resume" in last
    assert "Graph execution error" not in err


def test_preflight_warns_once_about_single_image_training_identities(tmp_path, capsys):
    from PIL import Image

    from anet_tf.data.check import preflight
    from anet_tf.data.generic import read_folder

    rows = ["images/a1.jpg,1,1,train", "images/a2.jpg,1,2,train", "images/b1.jpg,2,1,train",
            "images/c1.jpg,3,1,train", "images/d1.jpg,4,1,query", "images/d2.jpg,4,2,gallery"]
    (tmp_path / "images").mkdir()
    (tmp_path / "manifest.csv").write_text("\n".join(["path,vehicle_id,camera_id,split", *rows]) + "\n")
    for row in rows:
        Image.new("RGB", (8, 8)).save(tmp_path / row.split(",")[0], "JPEG")
    ds = read_folder(str(tmp_path), [])
    preflight(ds, max_pixels=10_000)
    captured = capsys.readouterr()
    assert "checked 6 images" in captured.out
    warnings = [line for line in captured.err.splitlines() if "single image" in line]
    assert len(warnings) == 1 and "2 of 3 training identities" in warnings[0]


def _manifest_with(root, case):
    """Rewrite ``root``'s manifest with one bad line; (line number, message part)."""
    path = os.path.join(root, "manifest.csv")
    with open(path, encoding="utf-8", newline="") as fh:
        lines = fh.read().split("\n")
    if case == "long cell":  # over csv's field limit of 131,072 characters
        cells = lines[3].split(",")
        cells[4] = "x" * 131_073
        lines[3] = ",".join(cells)
        where = 4
        part = "the 'color' cell (column 5) is 131,073 characters long, more than"
    elif case == "NUL byte":
        at = lines[3].index(".jpg") + 1
        lines[3] = lines[3].replace(".jpg", "\0.jpg", 1)
        where = 4
        part = f"the 'path' cell (column 1) holds a NUL byte at character {at}"
    else:
        lines.insert(-1, lines[2])  # before the empty string after the last newline
        where = len(lines) - 1
        part = f"image {lines[2].split(',')[0]} is already listed on line 3"
    with open(path, "w", encoding="utf-8", newline="") as fh:
        fh.write("\n".join(lines))
    return f"{path}:{where}: {part}"


def _snapshot(folder):
    """Every file under ``folder`` with its bytes."""
    found = {}
    for dirpath, _, names in os.walk(folder):
        for name in names:
            with open(os.path.join(dirpath, name), "rb") as fh:
                found[os.path.join(dirpath, name)] = fh.read()
    return found


@pytest.mark.parametrize("case", ["long cell", "NUL byte", "repeated image"])
def test_a_bad_manifest_line_is_one_line_in_data_check_and_fit_and_changes_nothing(
    case, tiny_dataset, tiny_overrides, tmp_path, capsys
):
    from anet_tf.cli import main

    root = _copy_dataset(tiny_dataset, str(tmp_path / "data"))
    expected = _manifest_with(root, case)
    before = _snapshot(root)

    assert main(["data", "check", root]) == 1
    out, err = capsys.readouterr()
    assert err == ""
    assert [line for line in out.splitlines() if expected in line] != []

    run_dir = str(tmp_path / "run")
    args = ["fit", "--out", run_dir, "--no-export", "--quiet"]
    for item in [*tiny_overrides, f"data.root={root}", "data.name=folder"]:
        args += ["--set", item]
    assert main(args) == 1
    out, err = capsys.readouterr()
    assert err.count("\n") == 1 and err.startswith(f"anet-tf fit: error: {expected}")
    assert not os.path.exists(run_dir)
    assert _snapshot(root) == before
