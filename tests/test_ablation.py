"""`anet-tf ablate`: variants x seeds as run folders, reports, continuation, errors."""

import json
import os

import numpy as np
import pytest

from anet_tf.cli import main
from anet_tf.jobs.study import VARIANTS
from anet_tf.jobs.study import parse_seeds
from anet_tf.jobs.study import parse_variants

TINY = [
    "data.image_size=[32, 32]",
    "data.batch_size=8",
    "data.test_batch_size=32",
    "model.backbone=resnet18",
    "model.base_width=8",
    "model.s_f=16",
    "model.s_a=8",
    "model.s_j=16",
    "train.stage1.epochs=1",
    "train.stage1.steps_per_epoch=1",
    "train.stage2.epochs=1",
    "train.stage2.steps_per_epoch=1",
    "train.strategy=one_device",
    "train.optimizer=sgd",  # a smaller graph to trace than amsgrad's
]
RUNS = [("baseline", 0), ("baseline", 1), ("van_f", 0), ("van_f", 1)]


def _args(*items):
    return [a for item in items for a in ("--set", item)]


def _metrics(study, name, seed):
    return os.path.join(study, name, f"seed{seed}", "metrics.json")


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """A finished study: baseline and van_fa (which brings van_f) x seeds 0, 1."""
    from anet_tf.data.synthetic import generate

    root = tmp_path_factory.mktemp("ablate")
    data = str(root / "synth")
    generate(data, ids=8, test_ids=4, cameras=2, images_per_id=4, image_size=32, seed=1)
    out = str(root / "study")
    overrides = _args(f"data.root={data}", *TINY)
    code = main(
        [
            "ablate",
            "--quiet",
            *overrides,
            "--variants",
            "van_fa,baseline",
            "--seeds",
            "2",
            "--out",
            out,
        ]
    )
    assert code == 0
    return out, overrides


def test_layout_and_reports(study):
    out, _ = study
    for name, seed in RUNS:
        run = os.path.join(out, name, f"seed{seed}")
        for item in ("config.yaml", "log.csv", "metrics.json", "checkpoints"):
            assert os.path.exists(os.path.join(run, item)), (run, item)
    for item in ("study.yaml", "ablation.md", "ablation.json", "ablation.png"):
        assert os.path.exists(os.path.join(out, item))
    md = open(os.path.join(out, "ablation.md"), encoding="utf-8").read()
    rows = [
        line.split(" | ")[0].lstrip("| ")
        for line in md.splitlines()
        if line.startswith("| ")
    ]
    assert rows == ["variant", "baseline", "van_f", "van_fa"]  # the paper's order
    assert "anet-tf ablate" in md and "±" in md


def test_json_holds_the_means_of_the_runs(study):
    out, _ = study
    summary = json.load(open(os.path.join(out, "ablation.json"), encoding="utf-8"))
    assert list(summary["variants"]) == ["baseline", "van_f", "van_fa"]
    for name, row in summary["variants"].items():
        assert row["n"] == 2 and row["overrides"] == VARIANTS[name].settings
        runs = [
            json.load(open(_metrics(out, name, s), encoding="utf-8"))["metrics"]
            for s in (0, 1)
        ]
        for key in ("mAP", "R1", "R5", "mINP"):
            values = [r[key] for r in runs]
            assert row["mean"][key] == pytest.approx(np.mean(values))
            assert row["std"][key] == pytest.approx(np.std(values, ddof=1))
        attrs = runs[0].get("attributes")
        if name == "baseline":
            assert "attributes" not in row["mean"]
        elif attrs:  # attribute accuracy of the van runs, when evaluate_net scores it
            for attr in attrs:
                mean = np.mean([r["attributes"][attr]["top1"] for r in runs])
                assert row["mean"]["attributes"][attr] == pytest.approx(mean)


def test_van_fa_evaluates_van_f_without_training(study):
    out, _ = study
    for seed in (0, 1):
        folder = os.path.join(out, "van_fa", f"seed{seed}")
        assert os.listdir(folder) == ["metrics.json"]
        payload = json.load(
            open(os.path.join(folder, "metrics.json"), encoding="utf-8")
        )
        assert payload["feature"] == "fa" and payload["source_run"] == os.path.join(
            "van_f", f"seed{seed}"
        )
        van_f = json.load(open(_metrics(out, "van_f", seed), encoding="utf-8"))
        assert van_f["feature"] == "f"
        # Same network, attribute branches untouched by the test feature.
        if "attributes" in van_f["metrics"]:
            assert payload["metrics"]["attributes"] == van_f["metrics"]["attributes"]


def test_continuation_resumes_only_the_unfinished_run(study, capsys):
    out, overrides = study
    capsys.readouterr()
    removed = _metrics(out, "baseline", 1)
    os.remove(removed)
    kept = {
        r: os.path.getmtime(_metrics(out, *r)) for r in RUNS if r != ("baseline", 1)
    }
    kept[("van_fa", 0)] = os.path.getmtime(_metrics(out, "van_fa", 0))
    log = os.path.join(out, "baseline", "seed1", "log.csv")
    log_lines = open(log, encoding="utf-8").read()
    assert main(["ablate", "--quiet", "--out", out]) == 0  # the study's own settings
    text = capsys.readouterr().out
    assert (
        text.count("skipped (finished)") == 5 and text.count("resumed, finished") == 1
    )
    assert os.path.exists(removed)
    assert open(log, encoding="utf-8").read() == log_lines  # no epoch trained again
    for run, mtime in kept.items():
        assert os.path.getmtime(_metrics(out, *run)) == mtime, run


def test_report_only_rewrites_reports(study):
    out, _ = study
    md = os.path.join(out, "ablation.md")
    os.remove(md)
    before = os.path.getmtime(_metrics(out, "van_f", 0))
    assert main(["ablate", "--report-only", "--out", out]) == 0
    assert os.path.exists(md) and os.path.getmtime(_metrics(out, "van_f", 0)) == before


def test_other_settings_are_refused(study, capsys):
    from anet_tf.jobs.study import open_study

    out, overrides = study
    # The same settings continue the study, adding seeds (nothing is written here).
    items = overrides[1::2]
    assert open_study(out, "synthetic", items, None, [3])[0]["seeds"] == [0, 1, 3]
    code = main(
        ["ablate", *overrides, "--set", "train.lr=0.001", "--seeds", "2", "--out", out]
    )
    err = capsys.readouterr().err
    assert code == 1 and "study.yaml" in err and "train.lr" in err
    code = main(["ablate", *overrides, "--set", "model.variant=van", "--out", out])
    assert code == 1 and "model.variant" in capsys.readouterr().err


def test_unknown_variant_lists_the_valid_names(tmp_path, capsys):
    code = main(["ablate", "--variants", "baseline,vanf", "--out", str(tmp_path / "s")])
    err = capsys.readouterr().err
    assert code == 1 and "'vanf'" in err and "van_fa" in err and "anet_fc" in err
    assert not os.path.exists(tmp_path / "s")


def test_parse_variants_and_seeds():
    assert parse_variants("anet,van_fa, baseline") == [
        "baseline",
        "van_f",
        "van_fa",
        "anet",
    ]
    assert parse_seeds("3") == [0, 1, 2]
    assert parse_seeds("5,0,3") == [0, 3, 5]
    assert parse_seeds("7,") == [7]
    from anet_tf.config import ConfigError

    for bad in ("0", "x", "-1,2"):
        with pytest.raises(ConfigError, match="--seeds"):
            parse_seeds(bad)


def test_a_set_of_a_key_the_studys_variants_set_is_refused(tmp_path, capsys):
    """The width variants set model.joint_module.width per run: a study of them
    refuses a --set of it (it would be replaced silently), a study without them
    takes it."""
    from anet_tf.jobs.study import open_study

    out = str(tmp_path / "s")
    code = main(["ablate", "--set", "model.joint_module.width=8", "--variants",
                 "anet,anet_w4", "--out", out])
    err = capsys.readouterr().err
    assert code == 1 and "--set model.joint_module.width=8" in err and "per run" in err
    assert not os.path.exists(out)
    _, cfg = open_study(out, None, ["model.joint_module.width=8"], ["anet"], [0])
    assert cfg.model.joint_module.width == 8
    assert parse_variants("anet_w16,baseline,anet_w4") == ["baseline", "anet_w4", "anet_w16"]


def test_anet_noac_trains_stage_2_from_anets_stage_1(tmp_path):
    """ANet with and without AC share stage 1: the w/o-AC run starts from the ANet
    run's checkpoints/stage1 (run first whatever the order asked) and trains stage 2
    only, with AC off."""
    import csv

    import h5py

    from anet_tf.data.synthetic import generate
    from anet_tf.training.run import load_run_config

    data = str(tmp_path / "synth")
    generate(data, ids=8, test_ids=4, cameras=2, images_per_id=4, image_size=32, seed=1)
    out = str(tmp_path / "study")
    code = main(
        ["ablate", "--quiet", *_args(f"data.root={data}", *TINY),
         "--variants", "anet_noac,anet", "--seeds", "1", "--out", out]
    )
    assert code == 0
    anet, noac = os.path.join(out, "anet", "seed0"), os.path.join(out, "anet_noac", "seed0")
    assert os.path.isfile(_metrics(out, "anet", 0)) and os.path.isfile(_metrics(out, "anet_noac", 0))
    assert load_run_config(noac).loss.use_ac is False
    assert load_run_config(anet).loss.use_ac is True
    # Stage 1 of the w/o-AC run is ANet's: the copied stage-1 rows, then its own stage 2.
    with open(os.path.join(noac, "log.csv"), encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    with open(os.path.join(anet, "log.csv"), encoding="utf-8") as fh:
        anet_rows = list(csv.DictReader(fh))
    assert [r["stage"] for r in rows] == ["1", "2"]
    assert rows[0] == anet_rows[0]
    assert rows[1].get("ac_id", "") in ("", None)  # no AC term in stage 2
    assert anet_rows[1]["ac_id"] not in ("", None)
    assert os.path.isfile(os.path.join(noac, "stage1_from.txt"))
    # The snapshot is the end of ANet's stage 1 and survives pruning.
    snap = os.path.join(anet, "checkpoints", "stage1", "state.json")
    with open(snap, encoding="utf-8") as fh:
        assert json.load(fh)["stage"] == 1

    def weights(path):
        with h5py.File(path) as f:
            out = {}
            f.visititems(lambda k, v: out.setdefault(k, np.array(v)) if hasattr(v, "shape") else None)
            return out

    a = weights(os.path.join(anet, "checkpoints", "stage1", "net.weights.h5"))
    b = weights(os.path.join(noac, "checkpoints", "epoch-0001", "net.weights.h5"))
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_a_run_that_cannot_train_is_listed_with_its_reason_not_reported(tmp_path, make_tiny_cfg, capsys):
    """The study job returns what stopped a run (here: its folder is in use by
    another process) and prints nothing itself: the command lists it at the end."""
    from anet_tf.jobs.study import train_run
    from anet_tf.training.run import RunLock

    cfg = make_tiny_cfg("model.variant=baseline", "eval.feature=f")
    run_dir = str(tmp_path / "baseline" / "seed0")
    with RunLock(run_dir):
        outcome = train_run(cfg, run_dir, verbose=False)
    assert outcome.startswith("failed (error: ") and "is in use by process" in outcome
    assert "\n" not in outcome and "anet-tf ablate" not in capsys.readouterr().err
