"""Your own crops (docs/own_data.md): one notion of a valid folder for ``data check``
and ``fit``, crops without attribute labels on the baseline with one switch,
partly labelled crops on ANet, and messages that name the ``--set`` or the user's
file, never a shipped config the user did not name."""

import csv
import json
import os

import numpy as np
import pytest
import yaml
from helpers import TINY_OVERRIDES
from PIL import Image

from anet_tf.cli import main
from anet_tf.config import ConfigError
from anet_tf.config import load_config
from anet_tf.data.records import DataError

CLASSES = {"color": ["red", "blue", "white"], "type": ["sedan", "van"]}

# Two training vehicles (4 images each: one batch of P=2, K=4) and two test
# vehicles (a query and two gallery images each, from another camera).
BASE_ROWS = [
    *(
        {"vehicle_id": v, "camera_id": k % 2 + 1, "split": "train"}
        for v in (1, 2)
        for k in range(4)
    ),
    *(
        {"vehicle_id": v, "camera_id": cam, "split": split}
        for v in (3, 4)
        for cam, split in ((1, "query"), (2, "gallery"), (1, "gallery"))
    ),
]
LABELS = {
    1: ("red", "sedan"),
    2: ("blue", "van"),
    3: ("white", "sedan"),
    4: ("red", "van"),
}


def make_crops(root, columns=("color", "type"), change=None, classes=CLASSES):
    """A folder of 32 px crops in the generic format: ``columns`` after the four
    required ones (``color``/``type`` filled from LABELS, ``time``/``track_id``
    filled); ``change(rows)`` edits the row dicts before they are written."""
    rng = np.random.default_rng(0)
    os.makedirs(os.path.join(root, "images"), exist_ok=True)
    rows = []
    for i, base in enumerate(BASE_ROWS):
        row = {"path": f"images/{i:02d}.jpg", **base}
        color, type_ = LABELS[base["vehicle_id"]]
        extra = {
            "color": color,
            "type": type_,
            "time": f"2026-12-03T08:15:{i:02d}Z",
            "track_id": 100 + i,
        }
        row.update({c: extra.get(c, "") for c in columns})
        rows.append(row)
    if change:
        change(rows)
    for row in rows:
        path = os.path.join(root, row["path"])
        if not os.path.exists(path) and not row.get("absent"):
            pixels = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(path, "JPEG")
    header = ["path", "vehicle_id", "camera_id", "split", *columns]
    with open(
        os.path.join(root, "manifest.csv"), "w", newline="", encoding="utf-8"
    ) as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(header)
        writer.writerows([row.get(h, "") for h in header] for row in rows)
    os.makedirs(os.path.join(root, "attributes"), exist_ok=True)
    for name, names in classes.items():
        with open(
            os.path.join(root, "attributes", f"{name}.txt"), "w", encoding="utf-8"
        ) as fh:
            fh.write("".join(f"{c}\n" for c in names))
    return str(root)


def partly_labelled(rows):
    """Labels for some images only: empty cells, one vehicle with none at all."""
    for i, row in enumerate(rows):
        if row["vehicle_id"] == 2 or i % 3 == 0:
            row["color"] = ""
        if i % 4 == 1:
            row["type"] = ""


def unknown_class(rows):
    rows[2]["color"] = "green"  # manifest line 4


def shared_vehicle(rows):
    rows[9]["vehicle_id"] = 1  # a gallery image of training vehicle 1


def missing_image(rows):
    rows[5]["absent"] = True  # manifest line 7


def single_image(rows):
    rows[3]["vehicle_id"] = 5  # training vehicle 5 has one image


def no_query(rows):
    for row in rows:
        if row["split"] == "query":
            row["split"] = "gallery"


def same_camera(rows):
    for row in rows:
        if row["split"] != "train":
            row["camera_id"] = 1


def unlabelled_message(root):
    return (
        f"{root}/manifest.csv:1: no attribute column (header "
        "path,vehicle_id,camera_id,split{}), but ANet (model.variant=anet) needs "
        "attribute labels (color, type); for crops without labels train the ReID "
        "baseline: --set model.variant=baseline"
    )


# name, columns, change, classes, --set items, expected problem (None = accepted;
# a str is formatted with root=...). Every problem is one line, the first data
# check lists and the one fit raises.
CASES = [
    ("labelled", ("color", "type"), None, CLASSES, [], None),
    ("partly labelled", ("color", "type"), partly_labelled, CLASSES, [], None),
    ("a time column", ("color", "type", "time"), None, CLASSES, [], None),
    (
        "no attribute columns (anet)",
        (),
        None,
        {},
        [],
        unlabelled_message("{root}").replace("{}", ""),
    ),
    (
        "time and track_id, no attributes (anet)",
        ("time", "track_id"),
        None,
        {},
        [],
        unlabelled_message("{root}").replace("{}", ",time,track_id"),
    ),
    ("no attribute columns (baseline)", (), None, {}, ["model.variant=baseline"], None),
    (
        "time and track_id, no attributes (baseline)",
        ("time", "track_id"),
        None,
        {},
        ["model.variant=baseline"],
        None,
    ),
    (
        "baseline, attributes listed by the user",
        (),
        None,
        {},
        ["model.variant=baseline", "data.attributes=[color]"],
        "{root}/manifest.csv:1: no attribute column (header path,vehicle_id,"
        "camera_id,split), but data.attributes asks for color (--set); the baseline "
        "needs none: leave data.attributes unset",
    ),
    (
        "other attribute columns than asked",
        ("make",),
        None,
        {"make": ["audi", "vw"]},
        [],
        "{root}/manifest.csv:1: attribute 'color' is requested but the header has no "
        "such column; its attribute columns are: make",
    ),
    (
        "time asked for as an attribute",
        ("color", "time"),
        None,
        CLASSES,
        ["data.attributes=[color, time]"],
        "{root}/manifest.csv:1: data.attributes names 'time', a column with a meaning "
        "of its own (path, vehicle_id, camera_id, split, time, track_id are never "
        "attributes)",
    ),
    (
        "an unknown class name",
        ("color", "type"),
        unknown_class,
        CLASSES,
        [],
        "{root}/manifest.csv:4: unknown color class 'green'; valid (from "
        "attributes/color.txt): red, blue, white; leave the cell empty if unknown",
    ),
    (
        "a missing attributes/type.txt",
        ("color", "type"),
        None,
        {"color": CLASSES["color"]},
        [],
        "{root}/attributes/type.txt: file not found; it must list the type class "
        "names, one per line",
    ),
    (
        "a missing image",
        ("color", "type"),
        missing_image,
        CLASSES,
        [],
        "{root}/manifest.csv:7: image 'images/05.jpg' not found (looked for "
        "{root}/images/05.jpg)",
    ),
    (
        "a vehicle in both train and test",
        ("color", "type"),
        shared_vehicle,
        CLASSES,
        [],
        "{root} (folder): 1 vehicle ids are in both train and query/gallery (e.g. 1); "
        "the test would measure vehicles seen in training: keep every test vehicle "
        "out of train",
    ),
    (
        "no query",
        ("color", "type"),
        no_query,
        CLASSES,
        [],
        "{root} (folder): the query split is empty",
    ),
    (
        "no query can be scored",
        ("color", "type"),
        same_camera,
        CLASSES,
        [],
        "{root} (folder): 2 of 2 queries have no gallery image of the same vehicle "
        "from another camera, so evaluation skips them (e.g. {root}/images/08.jpg, "
        "{root}/images/11.jpg): none can be scored",
    ),
    (
        "a single-image training vehicle (a warning)",
        ("color", "type"),
        single_image,
        CLASSES,
        [],
        None,
    ),
]


def data_check(capsys, argv):
    """``anet-tf data check ARGV --json``: (exit code, report)."""
    code = main(["data", "check", *argv, "--json"])
    out, err = capsys.readouterr()
    assert err == "", err
    return code, json.loads(out)


@pytest.mark.parametrize(
    "name, columns, change, classes, settings, expected",
    CASES,
    ids=[c[0] for c in CASES],
)
def test_data_check_and_fit_agree(
    name, columns, change, classes, settings, expected, tmp_path, capsys
):
    """data check (DIR and --config mode) and fit's own loading path
    (``_checked_dataset``: reader, images, splits) give the same verdict, and the
    first problem data check lists is the line fit refuses with."""
    from anet_tf.jobs.fit_evaluate_export import _checked_dataset

    root = make_crops(tmp_path / "crops", columns, change, classes)
    sets = [a for s in settings for a in ("--set", s)]
    code, report = data_check(capsys, [root, *sets])
    as_config = ["--set", "data.name=folder", "--set", f"data.root={root}", *sets]
    assert data_check(capsys, as_config) == (code, report)  # DIR = its --set

    cfg = load_config(None, [*settings, "data.name=folder", f"data.root={root}"])
    try:
        _checked_dataset(cfg, verbose=False)
        refused = None
    except (DataError, ConfigError) as exc:
        refused = str(exc)
    capsys.readouterr()
    if expected is None:
        assert (code, report["ok"], report["problems"], refused) == (0, True, [], None)
    else:
        expected = expected.format(root=root)
        assert (code, report["ok"]) == (1, False)
        assert report["problems"][0] == expected
        assert refused == expected


def test_time_and_track_id_are_never_attributes(tmp_path):
    from anet_tf.data.generic import manifest_attributes

    root = make_crops(tmp_path, ("color", "time", "track_id", "type"))
    assert manifest_attributes(root) == ["color", "type"]


def test_single_image_vehicle_is_a_warning_of_both(tmp_path, capsys):
    from anet_tf.data.check import preflight
    from anet_tf.data.readers import load_dataset

    root = make_crops(tmp_path, change=single_image)
    code, report = data_check(capsys, [root])
    assert code == 0 and len(report["warnings"]) == 1
    assert (
        "1 of 3 training identities have a single image (e.g. 5)"
        in report["warnings"][0]
    )
    cfg = load_config(None, ["data.name=folder", f"data.root={root}"])
    preflight(load_dataset(cfg), cfg.data.max_image_pixels, verbose=False)
    assert capsys.readouterr().err == f"[anet-tf] warning: {report['warnings'][0]}\n"


# ------------------------------------------------- the variant's defaults


def test_baseline_needs_neither_attributes_nor_j():
    cfg = load_config("veri776", ["model.variant=baseline"])
    assert (cfg.eval.feature, cfg.data.attributes) == ("f", [])
    cfg = load_config("veri776", ["model.variant=van"])
    assert (cfg.eval.feature, cfg.data.attributes) == ("f", ["color", "type"])
    cfg = load_config("veri776")  # the paper's ANet, unchanged
    assert (cfg.eval.feature, cfg.data.attributes) == ("j", ["color", "type"])
    cfg = load_config(None, ["model.variant=baseline", "data.attributes=[color]"])
    assert (cfg.eval.feature, cfg.data.attributes) == ("f", ["color"])
    cfg = load_config(None, ["model.variant=van", "eval.feature=fa"])
    assert cfg.eval.feature == "fa"


def test_a_feature_the_user_set_is_checked_against_the_variant(tmp_path):
    mine = tmp_path / "mycams.yaml"
    mine.write_text("_base_: veri776\nmodel: {variant: baseline}\neval: {feature: j}\n")
    with pytest.raises(ConfigError) as err:
        load_config(str(mine))
    assert str(err.value) == (
        f"{mine}: eval.feature: feature 'j' needs model.variant 'anet', got "
        "'baseline' (whose test feature is f: leave eval.feature unset)"
    )


def test_a_resolved_baseline_run_config_reads_back_the_same():
    from anet_tf.config import apply_overrides
    from anet_tf.config import config_from_dict

    cfg = load_config("synthetic", ["model.variant=baseline"])
    again = config_from_dict(yaml.safe_load(cfg.to_yaml()), source="run/config.yaml")
    assert again.to_dict() == cfg.to_dict()
    # origins go along: the shipped anet defaults follow a later change of variant
    anet = apply_overrides(cfg, ["model.variant=anet"])
    assert (anet.eval.feature, anet.data.attributes) == ("j", ["color", "type"])


# ------------------------------------------------- messages name their origin


def test_a_missing_data_root_names_the_set_not_the_shipped_file(tmp_path, capsys):
    code = main(
        ["data", "check", "--config", "veri776", "--set", "data.root=/nonexistent"]
    )
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1
    assert err.startswith(
        "anet-tf data: error: --set: data.root: dataset folder '/nonexistent' does not "
        "exist (data.name='veri776')"
    )
    mine = tmp_path / "mycams.yaml"
    mine.write_text("_base_: veri776\ndata: {root: /nonexistent}\n")
    assert main(["data", "check", "--config", str(mine)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"anet-tf data: error: {mine}: data.root: dataset folder")
    assert "configs" not in err


def test_a_value_of_a_base_the_user_did_not_name_is_blamed_on_their_config(tmp_path):
    from anet_tf.config.errors import SHIPPED_CONFIG_DIR

    mine = tmp_path / "mycams.yaml"
    mine.write_text("_base_: veri776\ndata: {num_instances: 3}\n")
    with pytest.raises(ConfigError) as err:
        load_config(str(mine))  # paper_base.yaml's batch of 512 is no multiple of 3
    assert str(err.value).startswith(
        f"{mine}: data.batch_size: must be a positive multiple"
    )
    with pytest.raises(ConfigError) as err:
        load_config("veri776", ["data.num_instances=3"])
    assert str(err.value).startswith(
        f"{os.path.join(SHIPPED_CONFIG_DIR, 'veri776.yaml')}: data.batch_size:"
    )


# ------------------------------------------------- the two headline runs


def fit_tiny(root, out, *settings):
    argv = ["fit", "--set", "data.name=folder", "--set", f"data.root={root}"]
    tiny = [
        *TINY_OVERRIDES,
        "train.stage1.epochs=1",
        "train.stage1.steps_per_epoch=1",
        "train.lr_milestones=[1]",
    ]
    for item in [*tiny, *settings]:
        argv += ["--set", item]
    return main([*argv, "--out", out, "--no-export", "--quiet"])


def test_unlabelled_crops_train_the_baseline_with_one_switch(tmp_path, capsys):
    """docs/own_data.md: crops without attribute columns (and with a time column)
    train with --set model.variant=baseline alone."""
    root = make_crops(tmp_path / "crops", ("time",), classes={})
    out = str(tmp_path / "run")
    code = fit_tiny(root, out, "model.variant=baseline")
    assert code == 0, capsys.readouterr().err
    with open(os.path.join(out, "config.yaml"), encoding="utf-8") as fh:
        saved = yaml.safe_load(fh)
    assert (saved["data"]["attributes"], saved["eval"]["feature"]) == ([], "f")
    with open(os.path.join(out, "metrics.json"), encoding="utf-8") as fh:
        metrics = json.load(fh)
    assert (metrics["feature"], metrics["global_epochs"]) == ("f", 1)
    assert metrics["metrics"]["num_valid_queries"] == 2


def test_partly_labelled_crops_train_anet(tmp_path, capsys):
    """Empty cells are unknown labels, masked out of the attribute losses."""
    root = make_crops(tmp_path / "crops", change=partly_labelled)
    out = str(tmp_path / "run")
    code = fit_tiny(root, out, "train.stage2.epochs=0")
    assert code == 0, capsys.readouterr().err
    with open(os.path.join(out, "metrics.json"), encoding="utf-8") as fh:
        metrics = json.load(fh)
    assert (metrics["feature"], metrics["global_epochs"]) == ("j", 1)
    assert sorted(metrics["metrics"]["attributes"]) == ["color", "type"]
