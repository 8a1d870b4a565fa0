"""Calibration files (anet_tf.evaluation.calibration): written, reloaded, refused
for another model or when damaged; monotone probabilities; `anet-tf calibrate`,
`evaluate`'s verification lines and `visualize roc` end to end on a tiny run."""

import json
import math
import os

import numpy as np
import pytest
from helpers import TINY_OVERRIDES

from anet_tf.cli import main
from anet_tf.data.records import Record
from anet_tf.evaluation.calibration import Calibration
from anet_tf.evaluation.calibration import CalibrationError
from anet_tf.evaluation.calibration import PairSample
from anet_tf.evaluation.calibration import build_calibration
from anet_tf.evaluation.calibration import calibration_errors
from anet_tf.evaluation.calibration import load_calibration
from anet_tf.evaluation.calibration import pair_counts
from anet_tf.evaluation.calibration import write_calibration
from anet_tf.evaluation.verification import stream_pairs
from anet_tf.io import DamagedFileError


def _split(seed=0, ids=16, per_query=2, per_gallery=4, dim=16, noise=0.8):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((ids, dim))

    def part(per, split):
        pids = np.repeat(np.arange(ids), per)
        feats = centres[pids] + noise * rng.standard_normal((pids.size, dim))
        recs = [
            Record(f"{split}/{i}.jpg", int(p), i % 3, (), split)
            for i, p in enumerate(pids)
        ]
        return feats.astype(np.float32), recs

    return (*part(per_query, "query"), *part(per_gallery, "gallery"))


MODEL = {"fingerprint": "0123456789abcdef", "path": "models/a"}


@pytest.fixture(scope="module")
def calibration_file(tmp_path_factory):
    q, qr, g, gr = _split()
    path = str(tmp_path_factory.mktemp("cal") / "calibration.json")
    write_calibration(path, build_calibration("veri776", q, g, qr, gr, model=MODEL))
    return path


def test_written_and_reloaded_for_its_model(calibration_file):
    cal = load_calibration(calibration_file, MODEL["fingerprint"])
    with open(calibration_file, encoding="utf-8") as fh:
        payload = json.load(fh)
    assert payload["format"] == 1 and os.path.getsize(calibration_file) < 100_000
    assert [p["fmr"] for p in payload["operating_points"]] == [1e-2, 1e-3, 1e-4]
    # the stored histograms hold every pair
    assert cal.same.sum() == payload["pairs"]["same"] > 0
    assert cal.different.sum() == payload["pairs"]["different"] > 0
    for p in payload["operating_points"]:
        stored = math.inf if p["threshold"] is None else p["threshold"]
        assert cal.threshold(fmr=p["fmr"]) == stored
        # None (nothing accepted) exactly where the pairs are too few to tell
        assert (p["threshold"] is None) == (p["fmr"] * cal.different.sum() < 1)
    # fitted on half the vehicles, measured on the other half
    prob = payload["probability"]
    assert prob["fit"]["vehicles"] + prob["held_out"]["vehicles"] == 16
    assert 0.0 <= prob["held_out"]["ece"] <= 1.0
    assert prob["held_out"]["brier"] < prob["held_out"]["brier_prior"]


def test_probability_is_monotone_and_inverts_to_its_threshold(calibration_file):
    cal = load_calibration(calibration_file, MODEL["fingerprint"])
    grid = np.linspace(-1, 1, 2001)
    p = cal.probability(grid)
    assert np.all(np.diff(p) >= 0) and p[0] < 0.05 and p[-1] > 0.5
    t = cal.threshold(probability=0.5)
    assert cal.probability([t])[0] == pytest.approx(0.5, abs=1e-9)
    assert cal.probability([t - 0.01])[0] < 0.5
    # an FMR between the stored ones: within a stored bin, between its neighbours
    t_between = cal.threshold(fmr=5e-3)
    width = 2 / cal.bins
    assert cal.threshold(fmr=1e-2) - width <= t_between <= cal.threshold(fmr=1e-3) + width
    # the stored histograms are the finest that span the scores in <= 4096 bins
    span = np.flatnonzero(cal.same + cal.different)
    assert span[-1] - span[0] < 4096 and (cal.bins == 2**16 or span[-1] - span[0] >= 2048)


def test_another_models_calibration_is_refused_in_one_line(calibration_file):
    with pytest.raises(CalibrationError) as err:
        load_calibration(calibration_file, "fedcba9876543210")
    message = str(err.value)
    assert "\n" not in message and calibration_file in message
    assert "0123456789abcdef" in message and "fedcba9876543210" in message


@pytest.mark.parametrize(
    "damage, said",
    [
        (lambda text, p: "{not json", "not valid JSON"),
        (lambda text, p: json.dumps({**p, "format": 99}), "format 99"),
        (
            lambda text, p: json.dumps({k: v for k, v in p.items() if k != "model"}),
            "model.fingerprint",
        ),
        (
            lambda text, p: json.dumps(
                {**p, "histograms": {**p["histograms"], "bins": "x"}}
            ),
            "histograms.bins",
        ),
        (
            lambda text, p: json.dumps(
                {
                    **p,
                    "probability": {"method": "isotonic", "x": [0.5, 0.1], "y": [0, 1]},
                }
            ),
            "probability",
        ),
        (lambda text, p: json.dumps([1, 2]), "not an anet-tf calibration file"),
    ],
    ids=[
        "json",
        "format",
        "missing-field",
        "wrong-type",
        "not-monotone",
        "not-calibration",
    ],
)
def test_a_damaged_file_is_refused_in_one_line_naming_it(
    calibration_file, tmp_path, damage, said
):
    with open(calibration_file, encoding="utf-8") as fh:
        text = fh.read()
    bad = str(tmp_path / "bad.json")
    with open(bad, "w", encoding="utf-8") as fh:
        fh.write(damage(text, json.loads(text)))
    with pytest.raises(DamagedFileError) as err:
        load_calibration(bad, MODEL["fingerprint"])
    message = str(err.value)
    assert "\n" not in message and bad in message and said in message


@pytest.mark.parametrize(
    "kwargs, said",
    [
        ({"fmr": 0.0}, "in (0, 1)"),
        ({"fmr": 1.0}, "in (0, 1)"),
        ({"probability": 1.5}, "in (0, 1)"),
        ({"probability": -0.1}, "in (0, 1)"),
        ({}, "one operating point"),
        ({"fmr": 1e-3, "probability": 0.9}, "one operating point"),
    ],
)
def test_an_operating_point_outside_zero_one_is_one_line(
    calibration_file, kwargs, said
):
    cal = load_calibration(calibration_file, None)
    with pytest.raises(CalibrationError) as err:
        cal.threshold(**kwargs)
    assert said in str(err.value) and "\n" not in str(err.value)


def test_a_probability_no_score_reaches_is_one_line(calibration_file):
    with open(calibration_file, encoding="utf-8") as fh:
        payload = json.load(fh)
    payload["probability"] = {"method": "isotonic", "x": [0.0, 0.5], "y": [0.0, 0.8]}
    cal = Calibration(calibration_file, payload)
    assert cal.threshold(probability=0.4) == pytest.approx(0.25)
    with pytest.raises(CalibrationError, match="no score reaches probability 0.9"):
        cal.threshold(probability=0.9)


def test_errors_by_hand():
    p, y, w = np.array([0.1, 0.1, 0.9, 0.7]), np.array([0, 1, 1, 1]), np.ones(4)
    out = calibration_errors(p, y, w, bins=2)
    # bins [0, .5): mean p .1, share .5; [.5, 1]: mean p .8, share 1
    assert out["ece"] == pytest.approx(0.5 * 0.4 + 0.5 * 0.2)
    assert out["brier"] == pytest.approx((0.01 + 0.81 + 0.01 + 0.09) / 4)


def test_a_pair_sample_keeps_the_prior_and_ignores_the_chunk_size():
    q, qr, g, gr = _split(seed=1)
    qp = np.array([r.pid for r in qr])
    gp = np.array([r.pid for r in gr])
    n_same, n_diff = pair_counts(qp, gp)
    samples = []
    for chunk in (3, 32):
        sink = PairSample(qp, gp, "cosine", rate=0.25, seed=7)
        stream_pairs(q, g, qp, gp, None, None, [sink], chunk_size=chunk)
        samples.append(sink.arrays())
    for a, b in zip(*samples, strict=True):
        np.testing.assert_array_equal(a, b)
    scores, same, _, _, weight = samples[0]
    assert same.sum() == n_same  # every same-vehicle pair
    assert weight[~same].sum() == pytest.approx(
        n_diff, rel=0.1
    )  # the sample stands for all


def test_too_few_vehicles_is_one_line():
    q, qr, g, gr = _split(ids=2)
    with pytest.raises(CalibrationError, match="too few vehicles to calibrate"):
        build_calibration("veri776", q, g, qr, gr, model=MODEL)


# ------------------------------------------------------------ the command, a run


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """(run folder, its SavedModel) of a tiny trained run."""
    from anet_tf.data.synthetic import generate

    base = tmp_path_factory.mktemp("calibrate-run")
    data = str(base / "data")
    generate(
        data, ids=12, test_ids=6, cameras=3, images_per_id=5, image_size=32, seed=3
    )
    run = str(base / "run")
    argv = ["fit", "--out", run, "--set", f"data.root={data}", "--quiet"]
    for item in [*TINY_OVERRIDES, "export.formats=[saved_model]"]:
        argv += ["--set", item]
    assert main(argv) == 0
    return run, os.path.join(run, "export", "anet", "1")


def test_calibrate_a_run_and_its_saved_model(tiny_run, tmp_path, capsys):
    from anet_tf.search.serving import model_fingerprint

    run, saved_model = tiny_run
    out_run, out_model = str(tmp_path / "run.json"), str(tmp_path / "model.json")
    assert main(["calibrate", "--run", run, "--out", out_run]) == 0
    printed = capsys.readouterr().out
    assert "| FMR | threshold | TMR |" in printed and f"written to {out_run}" in printed
    assert main(["calibrate", "--model", saved_model, "--out", out_model]) == 0
    fingerprint = model_fingerprint(saved_model)
    cal = load_calibration(out_model, fingerprint)
    assert cal.payload["model"]["kind"] == "saved_model"
    assert np.all(np.diff(cal.probability(np.linspace(-1, 1, 101))) >= 0)
    # the run's calibration names the checkpoint's weights, not this SavedModel's
    # fingerprint, and serves the SavedModel that fit exported from those weights
    with pytest.raises(CalibrationError, match="calibrates another model"):
        load_calibration(out_run, fingerprint)
    from anet_tf.search.serving import ServingModel

    load_calibration(out_run, ServingModel(saved_model).info())
    picture = str(tmp_path / "roc.png")
    assert main(["visualize", "roc", "--calibration", out_model, "--out", picture]) == 0
    assert os.path.getsize(picture) > 10_000


def test_evaluate_prints_and_records_the_verification_figures(
    tiny_run, tmp_path, capsys
):
    run, _ = tiny_run
    out = str(tmp_path / "eval.json")
    assert main(["evaluate", "--run", run, "--json-out", out]) == 0
    printed = capsys.readouterr().out
    assert "| mAP | R1 | R5 | R10 | mINP |" in printed
    assert "| FMR | threshold | TMR | rejected (held out) | DIR |" in printed
    with open(out, encoding="utf-8") as fh:
        verification = json.load(fh)["metrics"]["verification"]
    assert [p["fmr"] for p in verification["operating_points"]] == [1e-2, 1e-3, 1e-4]
    assert verification["open_set"]["unknown_queries"] > 0


@pytest.mark.parametrize(
    "argv, code, said",
    [
        (["--out", "{tmp}"], 2, "a folder is there"),
        (["--out", "{tmp}/c.json", "--max-pairs", "0"], 2, "--max-pairs must be >= 1"),
    ],
    ids=["out-is-a-folder", "max-pairs"],
)
def test_calibrate_bad_arguments_are_one_line_and_write_nothing(
    tiny_run, tmp_path, capsys, argv, code, said
):
    run, _ = tiny_run
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    assert main(["calibrate", "--run", run, *argv]) == code
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and said in err
    assert os.listdir(tmp_path) == []


def test_visualize_roc_of_a_damaged_file_is_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text("{}", encoding="utf-8")
    out = tmp_path / "roc.png"
    assert main(["visualize", "roc", "--calibration", str(bad), "--out", str(out)]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(bad) in err
    assert not out.exists()
