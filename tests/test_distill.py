"""Distillation (``anet-tf distill``): the loss terms against NumPy references and
hand-computed values, and the command end to end at tiny shapes: one tiny ANet
teacher, a VAN student that evaluates, exports and loads as any run, with its
teacher recorded; bad teachers are one line with nothing written."""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os

import numpy as np
import pytest
import tensorflow as tf
from helpers import TINY_OVERRIDES

from anet_tf import losses
from anet_tf.cli import main

ATOL = 1e-5


# ----------------------------------------------------------- NumPy references


def np_normalise(x):
    x = np.asarray(x, np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-6)


def np_feature_hint(s, t):
    return 1.0 - (np_normalise(s) * np_normalise(t)).sum(axis=1)


def np_rkd_distance(s, t, delta=1.0):
    def relations(x):
        x = np_normalise(x)
        d = np.sqrt(((x[:, None, :] - x[None, :, :]) ** 2).sum(-1))
        off = ~np.eye(len(x), dtype=bool)
        return d / d[off].mean(), off

    d_s, off = relations(s)
    d_t, _ = relations(t)
    diff = np.abs(d_s - d_t)
    huber = np.where(diff < delta, 0.5 * diff**2 / delta, diff - 0.5 * delta)
    return np.where(off, huber, 0.0).sum(axis=1) / (len(s) - 1)


def np_log_softmax(z):
    z = np.asarray(z, np.float64)
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def np_soft_label_kl(s, t, temperature):
    log_s = np_log_softmax(np.asarray(s) / temperature)
    log_t = np_log_softmax(np.asarray(t) / temperature)
    return temperature**2 * (np.exp(log_t) * (log_t - log_s)).sum(axis=1)


def _random(shape, seed):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


# ------------------------------------------------------------------- the terms


def test_feature_hint_matches_numpy_and_by_hand():
    s, t = _random((6, 5), 0), _random((6, 5), 1)
    np.testing.assert_allclose(
        losses.feature_hint(s, t).numpy(), np_feature_hint(s, t), atol=ATOL
    )
    # same direction (any norm): 0; orthogonal: 1; opposite: 2
    s = np.array([[3.0, 0.0], [0.0, 1.0], [1.0, 0.0]], np.float32)
    t = np.array([[0.5, 0.0], [2.0, 0.0], [-4.0, 0.0]], np.float32)
    np.testing.assert_allclose(
        losses.feature_hint(s, t).numpy(), [0.0, 1.0, 2.0], atol=ATOL
    )


@pytest.mark.parametrize("dims", [(8, 8), (8, 3)])
def test_rkd_distance_matches_numpy(dims):
    s, t = _random((6, dims[0]), 2), _random((6, dims[1]), 3)
    got = losses.rkd_distance(s, t).numpy()
    np.testing.assert_allclose(got, np_rkd_distance(s, t), atol=ATOL)
    # large differences fall in the linear part of the Huber loss
    got = losses.rkd_distance(s, t, delta=0.05).numpy()
    np.testing.assert_allclose(got, np_rkd_distance(s, t, 0.05), atol=ATOL)


def test_rkd_distance_by_hand():
    # the student's relations are the teacher's, scaled and rotated: 0
    t = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]], np.float32)
    s = np.array([[0.0, 5.0], [-5.0, 0.0], [0.0, -5.0]], np.float32)
    np.testing.assert_allclose(losses.rkd_distance(s, t).numpy(), 0.0, atol=ATOL)
    # teacher: three points on a line at normalised distances d, d, 2d (mean 4d/3);
    # student: all three pairs equal (mean-normalised: 1). Relative distances
    # 3/4, 3/4, 3/2 against 1: anchors 0 and 2 have |1/4| and |1/2|, anchor 1 |1/4| twice.
    t = np.array(
        [[1.0, 0.0], [math.cos(0.5), math.sin(0.5)], [math.cos(1.0), math.sin(1.0)]]
    )
    d01 = np.linalg.norm(t[0] - t[1])
    d02 = np.linalg.norm(t[0] - t[2])
    s = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    mean_t = (2 * d01 + d02) / 3
    r01, r02 = d01 / mean_t, d02 / mean_t
    h = lambda x: 0.5 * x**2  # noqa: E731 - within the Huber threshold
    expected = [
        (h(1 - r01) + h(1 - r02)) / 2,
        h(1 - r01),
        (h(1 - r01) + h(1 - r02)) / 2,
    ]
    got = losses.rkd_distance(s.astype(np.float32), t.astype(np.float32)).numpy()
    np.testing.assert_allclose(got, expected, atol=ATOL)


@pytest.mark.parametrize("temperature", [1.0, 4.0])
def test_soft_label_kl_matches_numpy(temperature):
    s, t = 3 * _random((5, 4), 4), 3 * _random((5, 4), 5)
    got = losses.soft_label_kl(s, t, temperature).numpy()
    np.testing.assert_allclose(got, np_soft_label_kl(s, t, temperature), atol=1e-4)
    # the same distribution: 0 (logits equal up to a constant)
    np.testing.assert_allclose(
        losses.soft_label_kl(t + 2.0, t, temperature).numpy(), 0.0, atol=ATOL
    )


def test_soft_label_kl_by_hand():
    # T = 1, teacher [1/2, 1/2], student [1/4, 3/4]: KL = 1/2 ln(2) + 1/2 ln(2/3)
    s = np.log(np.array([[0.25, 0.75]], np.float32))
    t = np.zeros((1, 2), np.float32)
    expected = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)
    np.testing.assert_allclose(
        losses.soft_label_kl(s, t, 1.0).numpy(), [expected], atol=ATOL
    )


def test_distill_terms_have_no_gradient_into_the_teacher():
    s, t = tf.Variable(_random((6, 4), 6)), tf.Variable(_random((6, 4), 7))
    ls, lt = tf.Variable(_random((6, 3), 8)), tf.Variable(_random((6, 3), 9))
    with tf.GradientTape(persistent=True) as tape:
        terms = losses.compute_distill_losses(
            {"feature": s, "a_color_logits": ls},
            {"feature": t, "a_color_logits": lt},
            attribute_names=["color"],
        )
    grads = tape.gradient(terms["total"], [s, t, ls, lt])
    assert grads[1] is None and grads[3] is None
    assert all(
        np.all(np.isfinite(g.numpy())) and np.any(g.numpy())
        for g in (grads[0], grads[2])
    )


def test_compute_distill_losses_weights_the_terms():
    s, t = _random((6, 4), 10), _random((6, 4), 11)
    ls, lt = _random((6, 3), 12), _random((6, 3), 13)
    terms = losses.compute_distill_losses(
        {"feature": s, "a_color_logits": ls},
        {"feature": t, "a_color_logits": lt},
        attribute_names=["color"],
        lambda_feature=2.0,
        lambda_relation=0.5,
        lambda_attribute=3.0,
        temperature=2.0,
    )
    assert list(terms) == losses.distill_term_names(["color"])
    hint = np_feature_hint(s, t).mean()
    rkd = np_rkd_distance(s, t).mean()
    kd = np_soft_label_kl(ls, lt, 2.0).mean()
    np.testing.assert_allclose(terms["kd_feature"].numpy(), hint, atol=ATOL)
    np.testing.assert_allclose(terms["kd_relation"].numpy(), rkd, atol=ATOL)
    np.testing.assert_allclose(terms["kd_color"].numpy(), kd, atol=1e-4)
    np.testing.assert_allclose(
        terms["total"].numpy(), 2 * hint + 0.5 * rkd + 3 * kd, atol=1e-4
    )


def test_bad_temperature_and_delta_are_refused():
    with pytest.raises(ValueError, match="temperature"):
        losses.soft_label_kl(np.zeros((1, 2)), np.zeros((1, 2)), 0.0)
    with pytest.raises(ValueError, match="delta"):
        losses.rkd_distance(np.ones((2, 2)), np.ones((2, 2)), delta=0.0)


def test_distill_config_is_checked():
    from anet_tf.config import ConfigError
    from anet_tf.config import load_config

    cfg = load_config("synthetic", ["distill.lambda_relation=0.5"])
    assert cfg.distill.lambda_relation == 0.5
    with pytest.raises(
        ConfigError, match="--set: distill.temperature: must be positive"
    ):
        load_config("synthetic", ["distill.temperature=0"])
    with pytest.raises(ConfigError, match="distill.lambda_feature: must be >= 0"):
        load_config("synthetic", ["distill.lambda_feature=-1"])


# ------------------------------------------------------------------ end to end


@pytest.fixture(scope="module")
def teacher_run(tmp_path_factory):
    """A tiny trained ANet run (no export) on a tiny synthetic dataset: the teacher
    every end-to-end test shares."""
    from anet_tf.data.synthetic import generate

    base = tmp_path_factory.mktemp("distill")
    data = str(base / "data")
    generate(
        data, ids=10, test_ids=4, cameras=3, images_per_id=5, image_size=32, seed=3
    )
    run = str(base / "teacher")
    argv = ["fit", "--out", run, "--no-export", "--quiet", "--set", f"data.root={data}"]
    for item in TINY_OVERRIDES:
        argv += ["--set", item]
    assert main(argv) == 0
    return run


@pytest.fixture(scope="module")
def student_run(teacher_run, tmp_path_factory):
    """``anet-tf distill --teacher TEACHER --out STUDENT`` (the teacher's config:
    2 epochs of 2 steps)."""
    out = str(tmp_path_factory.mktemp("student") / "run")
    assert main(["distill", "--teacher", teacher_run, "--out", out, "--quiet"]) == 0
    return out


def _distill_with(teacher_run, out, setting) -> int:
    """``anet-tf distill --teacher TEACHER --out OUT --set SETTING``'s exit code."""
    return main(["distill", "--teacher", teacher_run, "--out", out, "--set", setting])


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_the_student_is_a_van_run_that_records_its_teacher(student_run, teacher_run):
    from anet_tf.config import config_from_dict
    from anet_tf.io import read_yaml_file

    cfg = config_from_dict(read_yaml_file(os.path.join(student_run, "config.yaml"), ""))
    assert cfg.model.variant == "van" and cfg.eval.feature == "f"
    with open(os.path.join(student_run, "teacher.json"), encoding="utf-8") as fh:
        record = json.load(fh)
    weights = os.path.join(teacher_run, "checkpoints", "best", "net.weights.h5")
    if not os.path.isfile(weights):  # no evaluation during training: the newest
        assert record["weights"].startswith(
            os.path.join(os.path.abspath(teacher_run), "checkpoints")
        )
        weights = record["weights"]
    with open(weights, "rb") as fh:
        digest = hashlib.sha256(fh.read()).hexdigest()
    assert record["run"] == os.path.abspath(teacher_run)
    assert record["weights_sha256"] == digest
    assert (record["variant"], record["feature"], record["input_size"]) == (
        "anet",
        "j",
        [32, 32],
    )
    # network.json describes the student's own network (the teacher's attributes)
    with open(os.path.join(student_run, "network.json"), encoding="utf-8") as fh:
        described = json.load(fh)
    assert [a["name"] for a in described["attributes"]] == ["color", "type"]
    # every distillation term was logged, finite, beside the student's own terms
    with open(os.path.join(student_run, "log.csv"), encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 2  # stage 1 only: a VAN has no stage 2
    for key in (
        "kd_feature",
        "kd_relation",
        "kd_color",
        "kd_type",
        "id_f",
        "att_color",
    ):
        assert all(math.isfinite(float(r[key])) for r in rows), key
    assert "id_j" not in rows[0] and "ac_id" not in rows[0]


def test_the_student_evaluates_exports_and_loads_as_any_run(
    student_run, tmp_path, capsys
):
    import anet_tf
    from anet_tf.training.run_checkpoints import Run

    net = Run(student_run).network()
    assert "j" not in net.output and "a_color" in net.output
    assert all(layer.name != "joint_module" for layer in net.layers)
    with open(os.path.join(student_run, "metrics.json"), encoding="utf-8") as fh:
        metrics = json.load(fh)
    assert metrics["feature"] == "f" and 0.0 <= metrics["metrics"]["mAP"] <= 1.0
    assert set(metrics["metrics"]["attributes"]) == {"color", "type"}
    # evaluate --run
    out = str(tmp_path / "m.json")
    assert main(["evaluate", "--run", student_run, "--json-out", out]) == 0, (
        capsys.readouterr().err
    )
    with open(out, encoding="utf-8") as fh:
        again = json.load(fh)["metrics"]
    assert abs(again["mAP"] - metrics["metrics"]["mAP"]) < 1e-6
    # the SavedModel fit's job exported, and anet_tf.load of run and export agree
    exported = os.path.join(student_run, "export", "anet", "1")
    assert os.path.isfile(os.path.join(exported, "saved_model.pb"))
    data = Run(student_run).config.data.root
    paths = sorted(
        os.path.join(data, "images", n)
        for n in os.listdir(os.path.join(data, "images"))
    )[:3]
    from_run = anet_tf.load(student_run).embed(paths)
    from_export = anet_tf.load(exported).embed(paths)
    assert from_run.shape == (3, 16)
    np.testing.assert_allclose(from_run, from_export, atol=1e-4)
    assert set(anet_tf.load(exported).predict_attributes(paths)) == {"color", "type"}


def test_a_missing_teacher_is_one_line_and_nothing_is_written(tmp_path, capsys):
    out = str(tmp_path / "student")
    code = main(["distill", "--teacher", str(tmp_path / "nowhere"), "--out", out])
    assert code == 1
    assert "--teacher" in _one_line_error(capsys)
    assert not os.path.exists(out)


def test_a_folder_that_is_no_run_is_one_line_and_nothing_is_written(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    out = str(tmp_path / "student")
    assert main(["distill", "--teacher", str(tmp_path / "empty"), "--out", out]) == 1
    assert "config.yaml" in _one_line_error(capsys)
    assert not os.path.exists(out)


def test_a_teacher_of_another_input_size_is_one_line_and_nothing_is_written(
    teacher_run, tmp_path, capsys
):
    out = str(tmp_path / "student")
    code = _distill_with(teacher_run, out, "data.image_size=[48, 48]")
    assert code == 1
    line = _one_line_error(capsys)
    assert "data.image_size [48, 48] is not the teacher's input size [32, 32]" in line
    assert not os.path.exists(out)


def test_a_student_with_a_joint_module_is_one_line_and_nothing_is_written(
    teacher_run, tmp_path, capsys
):
    out = str(tmp_path / "student")
    code = _distill_with(teacher_run, out, "model.variant=anet")
    assert code == 1
    assert "a student has no Joint Module" in _one_line_error(capsys)
    assert not os.path.exists(out)


def test_a_feature_of_another_dimension_is_one_line_and_nothing_is_written(
    teacher_run, tmp_path, capsys
):
    out = str(tmp_path / "student")
    code = _distill_with(teacher_run, out, "model.s_f=8")
    assert code == 1
    line = _one_line_error(capsys)
    assert "distill.lambda_feature" in line and "8 dimensions" in line and "16" in line
    assert not os.path.exists(out)


def test_a_changed_teacher_stops_the_distillation_in_one_line(teacher_run, tmp_path):
    from anet_tf.training.distill import record_teacher
    from anet_tf.training.distill import recorded_teacher
    from anet_tf.training.run import RunFolderError
    from anet_tf.training.run_checkpoints import Run

    run = str(tmp_path / "student")
    record_teacher(run, Run(teacher_run))
    assert recorded_teacher(run).dir == os.path.abspath(teacher_run)
    path = os.path.join(run, "teacher.json")
    with open(path, encoding="utf-8") as fh:
        record = json.load(fh)
    record["weights_sha256"] = "0" * 64
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(record, fh)
    with pytest.raises(RunFolderError, match="changed since the distillation started"):
        recorded_teacher(run)
    assert recorded_teacher(str(tmp_path)) is None  # a run that was not distilled


def test_fit_resume_continues_the_distillation_and_refuses_a_changed_teacher(
    student_run, tmp_path, capsys
):
    import shutil

    copy = str(tmp_path / "student")
    shutil.copytree(student_run, copy)
    argv = ["fit", "--resume", copy, "--no-export", "--quiet"]
    assert main([*argv, "--set", "train.stage1.epochs=3"]) == 0
    with open(os.path.join(copy, "log.csv"), encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["global_epoch"] for r in rows] == ["1", "2", "3"]
    assert math.isfinite(float(rows[-1]["kd_feature"]))
    capsys.readouterr()
    path = os.path.join(copy, "teacher.json")
    with open(path, encoding="utf-8") as fh:
        record = json.load(fh)
    record["weights_sha256"] = "0" * 64
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(record, fh)
    assert main([*argv, "--set", "train.stage1.epochs=4"]) == 4
    assert "changed since the distillation started" in _one_line_error(capsys)
    with open(os.path.join(copy, "log.csv"), encoding="utf-8") as fh:
        assert len(list(csv.DictReader(fh))) == 3
