"""Two-stage training: stages, frozen backbone, NaN stop, kill -9 and resume,
MirroredStrategy over 2 logical CPUs and MultiWorkerMirroredStrategy over 2 processes."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
from helpers import TINY_OVERRIDES
from helpers import read_log
from helpers import run_script

from anet_tf.config import load_config

TINY = TINY_OVERRIDES  # the shared tiny settings (tests/helpers.py)


@pytest.fixture
def tiny_data(tiny_dataset):
    """The session's tiny synthetic dataset (tests/conftest.py)."""
    return tiny_dataset


def tiny_cfg(root, *extra):
    return load_config("synthetic", [f"data.root={root}", *TINY, *extra])


def test_two_stages_freeze_backbone_and_log_every_term(tiny_data, tmp_path):
    import keras

    from anet_tf.training.fit import train

    cfg = tiny_cfg(tiny_data, "train.optimizer=amsgrad")  # the paper's, not TINY's SGD
    snapshots = {}

    class Snapshot(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            stage = self.model.stage
            backbone = self.model.net.get_layer("backbone")
            snapshots[f"begin{stage}"] = [w.numpy().copy() for w in backbone.weights]
            snapshots[f"heads{stage}"] = [
                w.numpy().copy() for w in self.model.net.weights if "backbone" not in w.path
            ]

        def on_train_end(self, logs=None):
            stage = self.model.stage
            backbone = self.model.net.get_layer("backbone")
            snapshots[f"end{stage}"] = [w.numpy().copy() for w in backbone.weights]
            snapshots[f"heads_end{stage}"] = [
                w.numpy().copy() for w in self.model.net.weights if "backbone" not in w.path
            ]

    run_dir = str(tmp_path / "run")
    result = train(cfg, run_dir, extra_callbacks=(Snapshot(),), verbose=0)
    assert result.global_epoch == 3

    # Stage 1 trains the backbone; stage 2 leaves every backbone weight (including
    # BatchNorm moving statistics) untouched, and still trains the heads.
    changed1 = [not np.array_equal(a, b) for a, b in zip(snapshots["begin1"], snapshots["end1"])]
    assert any(changed1)
    for a, b in zip(snapshots["begin2"], snapshots["end2"]):
        np.testing.assert_array_equal(a, b)
    heads_changed = [
        not np.array_equal(a, b) for a, b in zip(snapshots["heads2"], snapshots["heads_end2"])
    ]
    assert any(heads_changed)

    rows = read_log(run_dir)
    assert [(r["stage"], r["global_epoch"]) for r in rows] == [("1", "1"), ("1", "2"), ("2", "3")]
    for term in ("total", "id_f", "tri_f", "att_color", "att_type", "tri_g", "id_j", "tri_j"):
        assert all(r[term] != "" and np.isfinite(float(r[term])) for r in rows), term
    assert rows[0]["ac_id"] == "" and float(rows[2]["ac_id"]) > 0 and float(rows[2]["ac_tri"]) > 0
    # lr schedule counted over both stages: x0.1 from 0-based global epoch 2 on,
    # which is the first epoch of stage 2 here.
    lrs = [float(r["lr"]) for r in rows]
    np.testing.assert_allclose(lrs, [6e-4, 6e-4, 6e-5], rtol=1e-5)
    assert os.path.exists(os.path.join(run_dir, "config.yaml"))
    assert os.listdir(os.path.join(run_dir, "tensorboard"))
    with open(os.path.join(run_dir, "checkpoints", "last.json")) as fh:
        last = json.load(fh)
    assert (last["stage"], last["stage_epoch"], last["global_epoch"]) == (2, 1, 3)
    assert os.path.isdir(os.path.join(run_dir, "checkpoints", "best"))


@pytest.mark.parametrize(
    "variant, extra, terms",
    [
        ("baseline", ["eval.feature=f"], {"id_f", "tri_f"}),
        ("van", ["eval.feature=fa"], {"id_f", "tri_f", "att_color", "att_type"}),
        ("anet", ["loss.use_ac=false", "train.stage2.lr=1e-5"], {"id_j", "tri_j", "tri_g"}),
    ],
)
def test_each_variant_trains_from_its_config(tiny_data, tmp_path, variant, extra, terms):
    from anet_tf.training.fit import train

    cfg = tiny_cfg(
        tiny_data,
        f"model.variant={variant}",
        "train.stage1.epochs=1",
        "train.stage1.steps_per_epoch=1",
        "train.stage2.steps_per_epoch=1",
        *extra,
    )
    run_dir = str(tmp_path / variant)
    train(cfg, run_dir, verbose=0)
    rows = read_log(run_dir)
    for term in terms:
        assert rows[0][term] != "" and np.isfinite(float(rows[0][term]))
    if variant == "anet":  # ANet w/o AC: stage 2 runs without the AC terms
        assert rows[-1]["stage"] == "2" and rows[-1]["ac_id"] == ""
        # train.stage2.lr reaches the optimizer: stage 2 at 1e-5 instead of the schedule
        np.testing.assert_allclose([float(r["lr"]) for r in rows], [6e-4, 1e-5], rtol=1e-6)
    else:  # stage 2 (eq. 13) exists for ANet only
        assert {r["stage"] for r in rows} == {"1"}


def test_nan_loss_stops_with_term_and_step(tiny_data, tmp_path, monkeypatch):
    import tensorflow as tf

    from anet_tf import losses
    from anet_tf.training.callbacks import NonFiniteLossError
    from anet_tf.training.fit import train

    real = losses.compute_losses
    calls = tf.Variable(0)

    def poisoned(outputs, targets, **kwargs):
        terms = real(outputs, targets, **kwargs)
        calls.assign_add(1)
        # The 4th step (epoch 2, step 2) produces a NaN in the attribute-pattern term.
        bad = tf.where(calls >= 4, tf.constant(float("nan")), tf.constant(0.0))
        terms["tri_g"] = terms["tri_g"] + bad
        terms["total"] = terms["total"] + bad
        return terms

    monkeypatch.setattr(losses, "compute_losses", poisoned)
    cfg = tiny_cfg(tiny_data)
    run_dir = str(tmp_path / "nan")
    with pytest.raises(NonFiniteLossError) as err:
        train(cfg, run_dir, verbose=0)
    msg = str(err.value)
    assert "'tri_g'" in msg  # the term that went wrong, not 'total' (Keras sorts logs)
    assert "step 2" in msg and "epoch 2" in msg
    with open(os.path.join(run_dir, "checkpoints", "last.json")) as fh:
        assert json.load(fh)["global_epoch"] == 1  # the last good checkpoint stays


def test_resume_after_kill9_starts_next_epoch_from_saved_weights(tiny_data, tmp_path):
    import keras

    from anet_tf.training.checkpoint import CheckpointManager
    from anet_tf.training.fit import build_trainer
    from anet_tf.training.fit import train
    from anet_tf.training.run import load_run_config

    run_dir = str(tmp_path / "killed")
    # The baseline variant: saving and restoring are the same for every variant (the
    # ANet run's resume is compared weight for weight in tests/test_run_folder.py).
    overrides = [f"data.root={tiny_data}", *TINY, "model.variant=baseline", "eval.feature=f",
                 "train.stage1.epochs=6"]
    cmd = [sys.executable, "-m", "anet_tf.cli", "fit", "--out", run_dir, "--no-export", "--quiet"]
    for item in overrides:
        cmd += ["--set", item]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    pointer = os.path.join(run_dir, "checkpoints", "last.json")
    deadline = time.time() + 240
    try:
        while time.time() < deadline:
            if os.path.exists(pointer):
                with open(pointer) as fh:
                    if json.load(fh)["global_epoch"] >= 2:
                        break
            if proc.poll() is not None:
                pytest.fail(f"training exited early: {proc.stderr.read().decode()[-2000:]}")
            time.sleep(0.05)
        else:
            pytest.fail("no checkpoint within the deadline")
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    path, saved = CheckpointManager(os.path.join(run_dir, "checkpoints")).latest()
    assert saved.stage == 1 and 2 <= saved.stage_epoch < 6

    cfg = load_run_config(run_dir)
    from anet_tf.data.readers import load_dataset

    dataset = load_dataset(cfg)
    reference = build_trainer(cfg, len(dataset.train_pids()), dataset.num_classes).net
    reference.load_weights(os.path.join(path, "net.weights.h5"))
    seen = {}

    class Probe(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if "epoch" not in seen:
                seen["epoch"] = epoch
                seen["weights"] = [w.numpy().copy() for w in self.model.net.weights]
                seen["iterations"] = int(self.model.optimizer.iterations.numpy())

    train(cfg, run_dir, resume=True, extra_callbacks=(Probe(),), verbose=0)
    assert seen["epoch"] == saved.stage_epoch  # 0-based index of the next epoch
    for a, b in zip(seen["weights"], reference.weights):
        np.testing.assert_array_equal(a, b.numpy())
    assert seen["iterations"] == saved.stage_epoch * 2  # optimizer state restored
    rows = read_log(run_dir)
    epochs = [int(r["global_epoch"]) for r in rows]
    assert epochs[-1] == 6 and len(set(epochs)) == len(epochs)


@pytest.mark.slow
def test_default_fit_end_to_end(tmp_path):
    """`anet-tf fit` with no arguments, as the README's first command runs it: generate
    the synthetic dataset, train the CPU default, evaluate, export. Minutes on 2 cores."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    proc = subprocess.run(
        [sys.executable, "-m", "anet_tf.cli", "fit", "--quiet", "--out", "runs/default"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1800,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((tmp_path / "runs" / "default" / "metrics.json").read_text())
    assert metrics["metrics"]["mAP"] > 5 * metrics["chance"]["mAP"]
    assert os.path.exists(os.path.join(tmp_path, metrics["saved_model"], "saved_model.pb"))


@pytest.mark.slow  # about 35 s: three runs
def test_deterministic_runs_repeat_bit_for_bit_and_seeds_differ(tiny_data, tmp_path):
    """train.deterministic: two same-seed runs give identical weights and losses, a
    different train.seed does not; the process's settings are restored after.

    (In the default suite, tests/test_run_folder.py::
    test_killed_and_resumed_equals_uninterrupted_with_steps_per_epoch repeats a
    deterministic ANet run with Amsgrad weight for weight and checks the restore.)"""
    from tensorflow.python.framework import config as tf_config

    from anet_tf.training.fit import train

    # Stage 1 only (saves three traces of the stage-2 step): train.deterministic is
    # set once for the whole of train(), so both stages run under it.
    extra = [
        "train.deterministic=true",
        "train.stage1.epochs=2",
        "train.stage1.steps_per_epoch=1",
        "train.stage2.epochs=0",
    ]
    weights, logs = {}, {}
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        run_dir = str(tmp_path / name)
        result = train(tiny_cfg(tiny_data, *extra, f"train.seed={seed}"), run_dir, verbose=0)
        weights[name] = [w.numpy() for w in result.net.weights]
        logs[name] = read_log(run_dir)
    assert not tf_config.is_op_determinism_enabled()
    for a, b in zip(weights["a"], weights["b"]):
        np.testing.assert_array_equal(a, b)
    assert [r["total"] for r in logs["a"]] == [r["total"] for r in logs["b"]]
    assert any(not np.array_equal(a, c) for a, c in zip(weights["a"], weights["c"]))
    assert [r["stage"] for r in logs["a"]] == ["1", "1"]


def test_stage2_lr_replaces_the_schedule_in_that_stage():
    import types

    import keras

    from anet_tf.training.callbacks import LrSchedule

    def lr_of_epochs(stage_lr):
        cb = LrSchedule(
            stage_offset=150,
            base_lr=6e-4,
            milestones=[60, 120, 150, 180],
            gamma=0.1,
            stage_lr=stage_lr,
        )
        optimizer = keras.optimizers.Adam(learning_rate=6e-4)
        cb.set_model(types.SimpleNamespace(optimizer=optimizer))
        lrs = []
        for epoch in (0, 29, 30, 59):
            cb.on_epoch_begin(epoch)
            lrs.append(float(optimizer.learning_rate.numpy()))
        return lrs

    # The paper: 6e-7 from global epoch 150 (a milestone at 180 would drop it again).
    np.testing.assert_allclose(lr_of_epochs(None), [6e-7, 6e-7, 6e-8, 6e-8], rtol=1e-5)
    # train.stage2.lr: constant over the whole stage, milestones ignored.
    np.testing.assert_allclose(lr_of_epochs(6e-5), [6e-5] * 4, rtol=1e-6)


def test_make_optimizer_weight_decay_modes():
    from anet_tf.training.optimizers import coupled_weight_decay
    from anet_tf.training.optimizers import make_optimizer

    coupled = load_config("veri776").train
    decoupled = load_config("synthetic").train
    assert coupled.weight_decay_mode == "coupled"
    assert make_optimizer(coupled).weight_decay is None  # added to the gradients instead
    assert coupled_weight_decay(coupled) == pytest.approx(5e-4)
    assert make_optimizer(decoupled).weight_decay == pytest.approx(5e-4)
    assert coupled_weight_decay(decoupled) == 0.0


# One SGD step (no momentum) with coupled weight decay on a linear model, against
# NumPy: w1 = w0 - lr * (dL/dw + wd * w0), L the mean squared error of the *global*
# batch. The trainer's train_step is used as is; only compute_terms is replaced.
_COUPLED_STEP = """
import json, sys
import numpy as np
import keras, tensorflow as tf
from anet_tf.training.trainer import ANetTrainer

LR, WD = 0.1, 0.05

class Linear(ANetTrainer):
    def compute_terms(self, images, targets, training):
        residual = self.net(images, training=training) - targets
        return {"total": tf.reduce_mean(0.5 * tf.reduce_sum(residual**2, axis=1))}

def reference(x, y, w, b):
    residual = x @ w + b - y
    dw = x.T @ residual / len(x) + WD * w
    db = residual.mean(0) + WD * b
    return w - LR * dw, b - LR * db

def coupled_step(strategy, loss_scale):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 3))
    y = rng.standard_normal((8, 2))
    with strategy.scope():
        net = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, bias_initializer="ones")])
        trainer = Linear(net, [], "baseline", {}, weight_decay=WD)
        optimizer = keras.optimizers.SGD(learning_rate=LR, momentum=0.0)
        if loss_scale:
            optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
        optimizer.build(net.trainable_variables)  # as fit.train does
        trainer.compile(optimizer=optimizer)
    w0, b0 = (v.numpy().astype(np.float64) for v in net.weights)
    ds = tf.data.Dataset.from_tensors((x.astype(np.float32), y.astype(np.float32)))
    trainer.fit(ds, epochs=1, verbose=0, shuffle=False)
    w1, b1 = (v.numpy() for v in net.weights)
    w_ref, b_ref = reference(x, y, w0, b0)
    np.testing.assert_allclose(w1, w_ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(b1, b_ref, rtol=1e-5, atol=1e-6)
    return strategy.num_replicas_in_sync
"""


@pytest.mark.parametrize("loss_scale", [False, True], ids=["sgd", "loss_scaled"])
def test_coupled_weight_decay_step_matches_numpy(loss_scale):
    import tensorflow as tf

    namespace = {}
    exec(_COUPLED_STEP, namespace)
    assert namespace["coupled_step"](tf.distribute.get_strategy(), loss_scale) == 1


def test_coupled_weight_decay_is_added_once_across_replicas(tmp_path):
    """MirroredStrategy over 2 logical CPUs: each replica adds wd * w / 2, the sum
    of the replicas' gradients carries it once (also with loss scaling)."""
    script = textwrap.dedent(
        """
        import tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        """
    ) + _COUPLED_STEP + textwrap.dedent(
        """
        devices = [d.name for d in tf.config.list_logical_devices("CPU")]
        # One strategy for both: a second MirroredStrategy in the same process
        # mixed up collective instance keys (shape mismatch) even without decay.
        strategy = tf.distribute.MirroredStrategy(devices)
        for loss_scale in (False, True):
            assert coupled_step(strategy, loss_scale) == 2
        print("ok")
        """
    )
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    proc = run_script(script, env)
    assert proc.returncode == 0 and "ok" in proc.stdout, proc.stderr[-3000:]


def test_epoch_end_callbacks_come_in_the_order_that_keeps_a_run_intact(tmp_path):
    """evaluate -> check the weights -> checkpoint -> log row -> TensorBoard: Keras
    calls the callbacks in list order."""
    from anet_tf.training import callbacks as cb

    progress = cb.StageProgress(
        str(tmp_path), stage=1, stage_offset=0, stage_epochs=1, batch_size=8, columns=["total"]
    )
    order = [type(c) for c in cb.stage_callbacks(progress, base_lr=0.1, milestones=[], gamma=0.1)]
    assert order == [
        cb.LrSchedule, cb.SyncMovingStatistics, cb.EpochMeter, cb.Evaluation,
        cb.NonFiniteGuard, cb.Checkpoint, cb.LogRow, cb.TensorBoardScalars,
    ]
