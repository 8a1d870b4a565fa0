"""The anet-tf command: synth, data check, summary, errors, and fit end to end."""

import json
import os

import pytest

from anet_tf.cli import main


@pytest.fixture(scope="module")
def synth_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli") / "synth"
    code = main([
        "synth", "--out", str(root), "--ids", "10", "--test-ids", "4", "--cameras", "3",
        "--images-per-id", "5", "--image-size", "32", "--seed", "1",
    ])
    assert code == 0
    return str(root)


def test_synth_writes_the_generic_format(synth_dir):
    assert os.path.exists(os.path.join(synth_dir, "manifest.csv"))
    assert os.path.exists(os.path.join(synth_dir, "attributes", "color.txt"))
    assert os.path.exists(os.path.join(synth_dir, "attributes", "type.txt"))


def test_data_check_dir_json(synth_dir, capsys):
    code = main(["data", "check", synth_dir, "--json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 0 and report["ok"] is True
    assert report["stats"]["splits"]["train"]["identities"] == 6


def test_data_check_config_table(synth_dir, capsys):
    code = main(["data", "check", "--set", f"data.root={synth_dir}"])
    out = capsys.readouterr().out
    assert code == 0
    assert "train" in out and "color" in out


def test_data_check_reports_problems_and_fails(tmp_path, synth_dir, capsys):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(synth_dir, bad)
    manifest = bad / "manifest.csv"
    lines = manifest.read_text().splitlines()
    lines.append("images/missing.jpg,3,1,train,red,sedan")
    lines.append("images/x.jpg,notanumber,1,train,red,sedan")
    manifest.write_text("\n".join(lines) + "\n")
    code = main(["data", "check", str(bad)])
    captured = capsys.readouterr()
    assert code == 1
    text = captured.out + captured.err
    assert "manifest.csv" in text and "missing.jpg" in text and "notanumber" in text


def test_bad_config_is_a_clear_error(capsys):
    code = main(["summary", "--set", "data.batch_size=30"])
    err = capsys.readouterr().err
    assert code == 1 and "data.batch_size" in err and "--set" in err


def test_summary_prints_parts(capsys):
    code = main(["summary", "--set", "model.base_width=8", "--set", "data.image_size=[64, 64]"])
    out = capsys.readouterr().out
    assert code == 0
    for part in ("backbone", "joint module", "total"):
        assert part in out.lower()


def test_missing_data_root_names_the_key(tmp_path, capsys):
    code = main(["data", "check", "--config", "veri776", "--set", f"data.root={tmp_path / 'nothing'}"])
    err = capsys.readouterr().err
    assert code == 1 and "data.root" in err


TINY_FIT = [
    "--set", "data.image_size=[32, 32]", "--set", "data.batch_size=8",
    "--set", "data.test_batch_size=16", "--set", "model.base_width=8",
    "--set", "model.s_f=16", "--set", "model.s_a=8", "--set", "model.s_j=16",
    "--set", "train.stage1.epochs=1", "--set", "train.stage1.steps_per_epoch=2",
    "--set", "train.stage2.epochs=1", "--set", "train.stage2.steps_per_epoch=1",
]


def test_fit_evaluate_export_end_to_end(synth_dir, tmp_path, capsys):
    """`anet-tf fit` trains, evaluates (beside the chance level) and exports a
    SavedModel; `evaluate --run` and `evaluate --model` then agree on the numbers.

    fit runs as its own process with stdout to a file (one fit serves both checks):
    not a terminal, so no progress bar, no ANSI codes, one readable line per epoch,
    and a word before the silent evaluation and export."""
    import subprocess
    import sys

    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "anet_tf.cli", "fit", "--out", str(run), "--set", f"data.root={synth_dir}", *TINY_FIT]
    log = tmp_path / "fit.txt"
    with open(log, "w") as fh:
        proc = subprocess.run(
            cmd, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"), stdout=fh, stderr=subprocess.PIPE,
            text=True, timeout=300,
        )
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = log.read_text()
    assert "\x1b[" not in out and "\r" not in out
    assert max(len(line) for line in out.splitlines()) < 400
    epochs = [line for line in out.splitlines() if " epoch " in line and line.startswith("[anet-tf] stage")]
    assert [line.split(" (")[0] for line in epochs] == [
        "[anet-tf] stage 1 epoch 1/1", "[anet-tf] stage 2 epoch 1/1"
    ]
    assert all("| lr " in line and "img/s" in line and "total " in line for line in epochs)
    assert "[anet-tf] evaluating on the synthetic test split (feature j)" in out
    assert "[anet-tf] exporting (saved_model) ..." in out
    assert "mAP" in out and "chance level" in out and "saved model" in out
    metrics = json.loads((run / "metrics.json").read_text())
    assert 0.0 <= metrics["metrics"]["mAP"] <= 1.0 and metrics["chance"]["mAP"] > 0
    saved = metrics["saved_model"]
    assert os.path.exists(os.path.join(saved, "saved_model.pb"))

    ev_run = tmp_path / "ev_run.json"
    assert main(["evaluate", "--run", str(run), "--json-out", str(ev_run)]) == 0
    ev_model = tmp_path / "ev_model.json"
    assert main(["evaluate", "--set", f"data.root={synth_dir}", *TINY_FIT, "--model", saved, "--json-out", str(ev_model)]) == 0
    a = json.loads(ev_run.read_text())["metrics"]
    b = json.loads(ev_model.read_text())["metrics"]
    for m in (a, b):
        assert 0.0 <= m["mAP"] <= 1.0 and len(m["cmc"]) == 50
    # The SavedModel holds the final weights, which fit evaluated: the served graph
    # (decode-free pixels in, normalisation inside) must rank the same.
    assert abs(b["mAP"] - metrics["metrics"]["mAP"]) < 1e-3
    assert abs(b["R1"] - metrics["metrics"]["R1"]) < 1e-6

    # Attribute accuracy: printed under the re-id table by fit and both evaluate
    # paths, in metrics.json and --json-out; --model measures the served labels.
    assert out.count("attribute accuracy") == 1
    fit_attr = metrics["metrics"]["attributes"]
    assert sorted(fit_attr) == ["color", "type"]
    for attrs in (fit_attr, a["attributes"], b["attributes"]):
        for acc in attrs.values():
            assert acc["count"] > 0 and 0.0 <= acc["top1"] <= 1.0
            assert sum(map(sum, acc["confusion"])) == acc["count"]
    for name, acc in fit_attr.items():  # the same weights, served
        assert b["attributes"][name]["count"] == acc["count"]
        assert abs(b["attributes"][name]["top1"] - acc["top1"]) <= 1 / acc["count"]
    printed = capsys.readouterr().out
    assert printed.count("| color |") == 2 and "majority class (chance)" in printed
    # evaluate --run recorded its metrics in the run, keeping what fit wrote
    updated = json.loads((run / "metrics.json").read_text())
    assert updated["evaluations"]["j"] == a and updated["saved_model"] == saved
    assert updated["metrics"] == metrics["metrics"]

    from anet_tf.visualize import confusion_size

    assert main(["visualize", "confusion", "--run", str(run), "-o", str(tmp_path / "cm")]) == 0
    for name, acc in fit_attr.items():
        from PIL import Image

        with Image.open(tmp_path / "cm" / f"confusion_{name}.png") as im:
            assert im.size == confusion_size(len(acc["classes"]))


def test_fit_refuses_an_existing_run_directory(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("data: {}\n")
    code = main(["fit", "--out", str(run)])
    assert code == 2 and "--resume" in capsys.readouterr().err


def test_scientific_notation_is_a_float():
    from anet_tf.config import load_config

    assert load_config(None, ["train.lr=6e-4"]).train.lr == 6e-4


def test_evaluate_model_refuses_feature(tmp_path, capsys):
    code = main(["evaluate", "--model", str(tmp_path), "--feature", "f"])
    assert code == 1 and "eval.feature" in capsys.readouterr().err


def test_corrupt_image_during_training_is_one_line_naming_the_file(synth_dir, tmp_path, capsys):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(synth_dir, data)
    manifest = (data / "manifest.csv").read_text().splitlines()
    first_train = next(line for line in manifest[1:] if ",train," in line)
    broken = data / first_train.split(",")[0]
    broken.write_bytes(broken.read_bytes()[:200])  # truncated JPEG
    code = main(["fit", "--quiet", "--no-export", "--out", str(tmp_path / "run"), "--set", f"data.root={data}", *TINY_FIT])
    err = capsys.readouterr().err
    assert code == 1
    # Named by fit's pre-flight check, before any training step.
    assert f"{broken.name} (train) cannot be decoded" in err and "1 of" in err
    assert "Traceback" not in err and not (tmp_path / "run" / "checkpoints").exists()


def test_one_error_reporter_gives_one_line_and_the_exit_code(capsys):
    from anet_tf.commands import errors
    from anet_tf.config import ConfigError
    from anet_tf.training.callbacks import NonFiniteLossError
    from anet_tf.training.run import DiskFullError

    cases = [
        (ConfigError("bad\n  key"), 1, "anet-tf x: error: bad key"),
        (errors.UsageError("--a goes with --b"), 2, "anet-tf x: error: --a goes with --b"),
        (NonFiniteLossError("loss term 'total' is nan"), 3, "anet-tf x: stopped: loss term 'total' is nan"),
        (DiskFullError("no space left"), 4, "anet-tf x: error: no space left"),
    ]
    for exc, code, line in cases:
        assert errors.report("x", exc) == code
        assert capsys.readouterr().err.strip() == line
    with pytest.raises(KeyError):  # a bug keeps its traceback
        errors.run("x", lambda args: {}["missing"], None)


def test_a_group_without_its_action_is_a_usage_error(capsys):
    assert main(["data"]) == 2
    assert "check" in capsys.readouterr().err
