"""``KERAS_BACKEND=jax anet-tf fit``: Keras' JAX fit drives ANetTrainer through both
stages, and what it writes is an ordinary run folder that the TensorFlow code path
evaluates and exports.

One subprocess (Keras picks its backend once per process) runs the command line
``fit`` of a tiny ANet on two JAX CPU devices (``XLA_FLAGS
--xla_force_host_platform_device_count=2``, ``train.strategy=auto``: a
``keras.distribution.DataParallel`` step), which exports its SavedModel through a
TensorFlow process as ``fit`` does on JAX; then, still on JAX, it loads the last
checkpoint and writes the network's test feature and attribute classes for a fixed
batch. This process (TensorFlow) checks the run folder, serves the same batch
through the exported SavedModel and evaluates the checkpoint itself.

Only collected when JAX is installed (``pip install "jax[cpu]"``).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import JAX_FAST_COMPILE
from helpers import TINY_OVERRIDES
from helpers import read_log

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("jax") is None,
    reason='JAX is not installed (pip install "jax[cpu]")',
)

ROOT = Path(__file__).resolve().parents[1]
BATCH = 6  # images of the fixed batch both backends see


# ANetTrainer's FastReID switches, which the JAX step must apply as the TensorFlow
# one does: the backbone held for the first step, decay groups, a bias factor.
STRONG = dict(
    weight_decay=0.05, weight_decay_norm=0.0, weight_decay_bias=0.02,
    bias_lr_factor=2.0, freeze_iters=1,
)
# One step from the same weights at each side of freeze_iters: the backbone held
# (iteration 0), then trained (iteration freeze_iters). Each starts afresh, so a
# rounding difference of one step cannot grow through the next.
STEPS = {"held": 0, "trained": STRONG["freeze_iters"]}


def strong_trainer(net):
    """An ANetTrainer of the tiny net with STRONG's switches, compiled with SGD."""
    import keras
    from test_jax_step import ATTRIBUTES
    from test_jax_step import LOSS_KWARGS
    from test_jax_step import LR

    from anet_tf.training.trainer import ANetTrainer

    trainer = ANetTrainer(net, ATTRIBUTES, "anet", LOSS_KWARGS, **STRONG)
    optimizer = keras.optimizers.SGD(LR, momentum=0.9)
    optimizer.build(net.trainable_variables)
    trainer.compile(optimizer=optimizer, jit_compile=True)
    return trainer


def jax_fit_steps(folder: Path) -> None:
    """One step of ``trainer.fit`` on JAX per entry of STEPS, each from the same
    saved random weights and a fresh optimizer at that iteration, on the tiny
    batch of test_jax_step: ``strong_initial`` and ``strong_<name>_jax`` .weights.h5."""
    import tensorflow as tf
    from test_jax_step import TINY
    from test_jax_step import tiny_batch

    from anet_tf.model.anet import build_anet

    net = build_anet(**TINY)
    initial = folder / "strong_initial.weights.h5"
    net.save_weights(initial)
    for name, iteration in STEPS.items():
        net.load_weights(initial)
        trainer = strong_trainer(net)
        trainer.optimizer.iterations.assign(iteration)
        batch = tf.data.Dataset.from_tensors(tiny_batch())
        trainer.fit(batch, epochs=1, steps_per_epoch=1, shuffle=False, verbose=0)
        net.save_weights(folder / f"strong_{name}_jax.weights.h5")


def jax_side(data_root: str, run_dir: str, out: str) -> None:
    """The subprocess: STEPS steps of ``trainer.fit`` (:func:`jax_fit_steps`);
    ``anet-tf fit`` on JAX, then the test feature and predicted classes of the last
    checkpoint on a fixed batch (``out``, .npz)."""
    import keras

    from anet_tf.cli import main
    from anet_tf.data.preprocessing import IMAGENET_MEAN
    from anet_tf.data.preprocessing import IMAGENET_STD
    from anet_tf.evaluation.extract import keras_predict_fn
    from anet_tf.training.checkpoint import CheckpointManager
    from anet_tf.training.run_checkpoints import Run

    if keras.backend.backend() != "jax":
        raise SystemExit(f"Keras runs {keras.backend.backend()}, not jax")
    jax_fit_steps(Path(out).parent)
    overrides = [f"data.root={data_root}", *TINY_OVERRIDES, "train.strategy=auto"]
    argv = ["fit", "--out", run_dir]
    for item in overrides:
        argv += ["--set", item]
    code = main(argv)
    if code:
        raise SystemExit(f"anet-tf fit exited with {code}")
    last, _ = CheckpointManager(os.path.join(run_dir, "checkpoints")).latest()
    run = Run(last)
    net, cfg = run.network(), run.config
    rng = np.random.default_rng(11)
    pixels = rng.uniform(0, 255, (BATCH, *cfg.data.image_size, 3)).astype(np.float32)
    images = (pixels / 255.0 - np.asarray(IMAGENET_MEAN, np.float32)) / np.asarray(
        IMAGENET_STD, np.float32
    )
    features, classes = keras_predict_fn(net, cfg.eval.feature, cfg.data.attributes)(images)
    np.savez(
        out,
        images=images,
        features=np.asarray(features),
        **{f"class_{k}": np.asarray(v) for k, v in classes.items()},
        backend=keras.backend.backend(),
    )


@pytest.fixture(scope="module")
def jax_fit(tiny_dataset, tmp_path_factory):
    """(run folder, the fit's stdout, the JAX outputs of the fixed batch)."""
    folder = tmp_path_factory.mktemp("jax-fit")
    run_dir, out = folder / "run", folder / "jax_outputs.npz"
    code = (
        f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r})\n"
        "import test_jax_fit\n"
        f"test_jax_fit.jax_side({tiny_dataset!r}, {str(run_dir)!r}, {str(out)!r})\n"
    )
    base = dict(os.environ, KERAS_BACKEND="jax", JAX_PLATFORMS="cpu")
    devices = "--xla_force_host_platform_device_count=2"
    for flags in (f"{devices} {JAX_FAST_COMPILE}", devices):
        proc = subprocess.run(
            [sys.executable, "-c", code],
            cwd=ROOT,
            env=dict(base, XLA_FLAGS=flags),
            capture_output=True,
            text=True,
            timeout=600,
        )
        if "Unknown flag" not in proc.stderr:  # an older jaxlib: without them
            break
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return run_dir, proc.stdout, dict(np.load(out))


def test_jax_fit_trains_both_stages_data_parallel_into_a_run_folder(jax_fit):
    run_dir, stdout, outputs = jax_fit
    assert str(outputs["backend"]) == "jax"
    assert "DataParallel over 2 devices" in stdout
    rows = read_log(run_dir)
    assert [(r["stage"], r["epoch"]) for r in rows] == [("1", "1"), ("1", "2"), ("2", "1")]
    for row in rows:
        assert np.isfinite(float(row["total"])), row
    # Stage 2 is L' (eq. 13): the Amelioration Constraint's terms appear only there.
    assert rows[0]["ac_id"] == "" and float(rows[2]["ac_id"]) > 0
    # The schedule reached the optimizer: milestone 2 divides the lr by 10.
    assert float(rows[2]["lr"]) == pytest.approx(float(rows[0]["lr"]) / 10, rel=1e-5)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert set(metrics["metrics"]["attributes"]) == {"color", "type"}
    assert (Path(metrics["saved_model"]) / "saved_model.pb").is_file()


def test_stage2_on_jax_leaves_the_backbone_and_f_head_as_stage1_ended(jax_fit):
    from anet_tf.training.checkpoint import CheckpointManager
    from anet_tf.training.run_checkpoints import Run

    run_dir, _, _ = jax_fit
    stage1 = Run(str(run_dir / "checkpoints" / "stage1")).network()
    last, _ = CheckpointManager(str(run_dir / "checkpoints")).latest()
    final = Run(last).network()
    for name in ("backbone", "f_head"):
        before, after = stage1.get_layer(name).weights, final.get_layer(name).weights
        assert before
        for a, b in zip(before, after, strict=True):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=a.path)
    changed = [
        a.path
        for a, b in zip(stage1.get_layer("j_head").weights, final.get_layer("j_head").weights, strict=True)
        if not np.array_equal(np.asarray(a), np.asarray(b))
    ]
    assert changed, "stage 2 did not train the j head"


def test_saved_model_exported_from_a_jax_run_serves_what_jax_computed(jax_fit):
    from anet_tf.export.saved_model import load_predictor

    run_dir, _, outputs = jax_fit
    metrics = json.loads((run_dir / "metrics.json").read_text())
    predict = load_predictor(metrics["saved_model"])
    served, classes = predict(outputs["images"])
    jax_features = outputs["features"] / np.linalg.norm(outputs["features"], axis=1, keepdims=True)
    served = served / np.linalg.norm(served, axis=1, keepdims=True)
    np.testing.assert_allclose(served, jax_features, atol=2e-5)
    for name in ("color", "type"):
        np.testing.assert_array_equal(classes[name], outputs[f"class_{name}"])


def test_tensorflow_evaluates_a_jax_checkpoint_as_jax_did(jax_fit):
    """The checkpoint is interchangeable: TensorFlow's evaluation of the weights the
    run ended with gives the metrics the JAX fit wrote."""
    from anet_tf.data.readers import load_dataset
    from anet_tf.jobs.fit_evaluate_export import evaluate_trained
    from anet_tf.training.checkpoint import CheckpointManager
    from anet_tf.training.run import load_run_config
    from anet_tf.training.run_checkpoints import Run

    run_dir, _, _ = jax_fit
    written = json.loads((run_dir / "metrics.json").read_text())["metrics"]
    cfg = load_run_config(str(run_dir))
    last, _ = CheckpointManager(str(run_dir / "checkpoints")).latest()
    metrics = evaluate_trained(Run(str(run_dir)), cfg, load_dataset(cfg), last)
    for key in ("mAP", "R1", "mINP"):
        assert metrics[key] == pytest.approx(written[key], abs=1e-6), key
    for name, acc in written["attributes"].items():
        assert metrics["attributes"][name]["top1"] == acc["top1"], name


@pytest.mark.parametrize("name", list(STEPS))
def test_jax_fit_step_applies_freeze_iters_decay_groups_and_bias_factor_as_tensorflow(jax_fit, name):
    """A step of ``trainer.fit`` on JAX with FastReID's switches changes every
    variable as TensorFlow's ``train_step`` does from the same weights and
    iteration, within 1 % of each variable's largest change (the bound of
    test_jax_step; measured differences: about 1e-4 of it); while
    ``freeze_iters`` holds it, the backbone does not change at all."""
    from test_jax_step import assert_same_change
    from test_jax_step import float32_tiny_nets
    from test_jax_step import tiny_batch

    run_dir, _, _ = jax_fit
    folder = run_dir.parent
    net, jax_net = float32_tiny_nets(2)
    net.load_weights(folder / "strong_initial.weights.h5")
    initial = [w.numpy() for w in net.weights]
    trainer = strong_trainer(net)
    trainer.optimizer.iterations.assign(STEPS[name])
    trainer.train_step(tiny_batch())
    jax_net.load_weights(folder / f"strong_{name}_jax.weights.h5")
    backbone = {id(w) for w in net.get_layer("backbone").weights}
    backbone_moved = False
    for w, w0, jax_w in zip(net.weights, initial, jax_net.weights, strict=True):
        assert_same_change(w.path, w0, jax_w.numpy(), w.numpy())
        if id(w) in backbone:
            backbone_moved |= bool(np.abs(jax_w.numpy() - w0).max() > 0)
    assert backbone_moved == (name == "trained")


def test_tensorflow_resumes_a_jax_run(jax_fit, tmp_path):
    """A run trained on JAX continues on TensorFlow from its checkpoint (weights and
    optimizer state): one more stage-2 epoch, logged after the JAX epochs."""
    import shutil

    from anet_tf.jobs.fit_evaluate_export import fit_and_report

    run_dir, _, _ = jax_fit
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    payload = fit_and_report(
        None, str(copy), resume=True, export=False, verbose=False,
        overrides=["train.stage2.epochs=2"],
    )
    rows = read_log(copy)
    assert [(r["stage"], r["epoch"]) for r in rows][-2:] == [("2", "1"), ("2", "2")]
    assert np.isfinite(float(rows[-1]["total"]))
    assert payload["global_epochs"] == 4


@pytest.mark.slow
def test_mixed_precision_fit_on_jax_is_bfloat16(tiny_dataset, tmp_path):
    """``train.mixed_precision`` on JAX trains in bfloat16 (no loss scaling) through
    both stages; the checkpoint keeps float32 weights that TensorFlow loads."""
    from anet_tf.training.checkpoint import CheckpointManager

    run_dir = tmp_path / "run"
    argv = ["-m", "anet_tf.cli", "fit", "--out", str(run_dir), "--no-export"]
    for item in [f"data.root={tiny_dataset}", *TINY_OVERRIDES, "train.mixed_precision=true"]:
        argv += ["--set", item]
    env = dict(os.environ, KERAS_BACKEND="jax", JAX_PLATFORMS="cpu", XLA_FLAGS=JAX_FAST_COMPILE)
    proc = subprocess.run([sys.executable, *argv], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-5000:]
    assert "mixed precision: mixed_bfloat16 (Keras backend jax)" in proc.stdout
    rows = read_log(run_dir)
    assert [r["stage"] for r in rows] == ["1", "1", "2"]
    assert all(np.isfinite(float(r["total"])) for r in rows)
    import h5py

    last, _ = CheckpointManager(str(run_dir / "checkpoints")).latest()
    with h5py.File(os.path.join(last, "net.weights.h5")) as fh:
        dtypes = set()
        fh.visititems(lambda _, obj: dtypes.add(obj.dtype.name) if hasattr(obj, "dtype") else None)
    assert dtypes == {"float32"}, dtypes
