"""benchmarks/inference.py's own logic: its arguments, the cosines to the Keras
embeddings, the ratios and the targets' verdicts, on hand-made timings (the timed
run itself is a benchmark, docs/performance.md)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import inference  # noqa: E402


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--formats", "saved_model,tensorflow_js"], "--formats: unknown ['tensorflow_js']"),
        (["--run", "runs/x", "--variants", "van,anet"], "--variants builds untrained"),
        (["--fastreid", "."], "--fastreid .: no fastreid/ package there"),
        (
            ["--variants", "van", "--variant-formats", "anet=tflite"],
            "--variant-formats anet=tflite: give VARIANT=F1,F2 with VARIANT one of --variants",
        ),
        (["--variants", "van", "--variant-formats", "van=trt"], "--variant-formats van=trt"),
        (
            ["--variants", "van@resnet19"],
            "--variants van@resnet19: unknown backbone 'resnet19'; choose from",
        ),
    ],
)
def test_bad_arguments_are_one_line(argv, message, capsys):
    with pytest.raises(SystemExit) as info:
        inference.parse_args(argv)
    assert info.value.code == 2
    assert message in capsys.readouterr().err


def test_arguments_split_into_lists():
    args = inference.parse_args(
        ["--variants", "van, anet", "--tflite", "fp16,int8", "--formats", "saved_model,openvino",
         "--variant-formats", "anet=saved_model,tflite"]
    )  # fmt: skip
    assert args.variants == ["van", "anet"]
    assert args.variant_formats == {"anet": ["saved_model", "tflite"]}
    assert args.tflite == ["fp16", "int8"]
    assert args.formats == ["saved_model", "openvino"]


def test_a_variant_on_another_backbone():
    assert inference.variant_settings("van@resnet18_ibn_a") == [
        "model.variant=van",
        "model.backbone=resnet18_ibn_a",
    ]
    assert inference.variant_settings("anet_w4@resnet18")[-1] == "model.backbone=resnet18"
    plain = inference.variant_settings("anet_w4")
    assert inference.variant_settings("anet_w4@resnet18")[:-1] == plain
    args = inference.parse_args(["--variants", "van,van@resnet18_ibn_a"])
    assert args.variants == ["van", "van@resnet18_ibn_a"]


def test_cosines_compare_each_row_with_its_own_network_and_skip_jpeg():
    rng = np.random.default_rng(0)
    van, anet = rng.normal(size=(4, 8)), rng.normal(size=(4, 8))
    flipped = anet.copy()
    flipped[0] *= -1
    outputs = {
        "van onnxruntime": {"embedding": 3 * van},  # scale does not matter
        "anet onnxruntime": {"embedding": flipped},
        "anet saved_model serving_default (JPEG)": {"embedding": anet},
        "FastReID": van,
    }
    network_of = {name: name.split()[0] for name in outputs if name != "FastReID"}
    found = inference.cosines(outputs, network_of, {"van": van, "anet": anet})
    assert set(found) == {"van onnxruntime", "anet onnxruntime"}
    assert found["van onnxruntime"] == pytest.approx({"mean": 1.0, "min": 1.0})
    assert found["anet onnxruntime"] == pytest.approx({"mean": 0.5, "min": -1.0})


def _results(times, cosine_min):
    """Seconds per call at batch 1 and batch 4 -> tabulate()'s results."""
    runners = dict.fromkeys(times)
    one = {n: [t[0]] * 3 for n, t in times.items()}
    many = {n: [t[1]] * 3 for n, t in times.items()}
    cos = {n: {"mean": c, "min": c} for n, c in cosine_min.items()}
    network_of = {n: n.split()[0] for n in cosine_min}
    return inference.tabulate(runners, {}, one, many, cos, network_of, 4), network_of


def test_ratios_and_verdicts():
    times = {
        "van saved_model serve_images": (0.010, 0.40),  # 10 images/s at batch 4
        "van tflite int8": (0.004, 0.10),  # 40 images/s, but cosine 0.95
        "van onnxruntime": (0.008, 0.16),  # 25 images/s
        "van openvino": (0.008, 0.12),  # 33 images/s
        "anet saved_model serve_images": (0.030, 1.60),  # 2.5 images/s
        inference.FASTREID: (0.020, 0.32),  # 12.5 images/s
    }
    cosine_min = {
        "van saved_model serve_images": 1.0,
        "van tflite int8": 0.95,
        "van onnxruntime": 0.999,
        "van openvino": 0.999,
        "anet saved_model serve_images": 1.0,
    }
    results, network_of = _results(times, cosine_min)
    assert results["van onnxruntime"]["speedup_batch1"] == pytest.approx(1.25)
    assert results["van onnxruntime"]["speedup_batch4"] == pytest.approx(2.5)
    assert results["van onnxruntime"]["ratio_to_fastreid_batch4"] == pytest.approx(2.0)
    assert results["anet saved_model serve_images"]["ratio_to_fastreid_batch4"] == pytest.approx(0.2)
    # FastReID's ratio to SavedModel is taken against the first network's.
    assert results[inference.FASTREID]["speedup_batch4"] == pytest.approx(1.25)
    lines = inference.verdicts(results, network_of, 4)
    assert (
        "van: best exported format at cosine >= 0.99 (min): van openvino, 2.67x "
        "FastReID fp32's images/s at batch 4 (meets the 2x target)"
    ) in lines
    assert "van: TFLite int8 at batch 1: 2.50x the SavedModel (meets the 2x target)" in lines
    # The int8 row is faster, but too far from the Keras embeddings to count.
    assert (
        "van: OpenVINO at batch 4: 1.33x the best other format at cosine >= 0.99 "
        "(van onnxruntime; worth a dependency at the 1.3x bar)"
    ) in lines
    assert (
        "anet: best exported format at cosine >= 0.99 (min): anet saved_model serve_images, "
        "0.20x FastReID fp32's images/s at batch 4 (MISSES the 2x target)"
    ) in lines
