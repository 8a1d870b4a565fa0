"""Two-stage training: stages, frozen backbone, NaN stop, kill -9 and resume,
MirroredStrategy over 2 logical CPUs and MultiWorkerMirroredStrategy over 2 processes."""

import csv
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from anet_tf.config import load_config

TINY = [
    "data.image_size=[32, 32]",
    "data.batch_size=8",
    "data.num_instances=4",
    "data.test_batch_size=16",
    "model.base_width=8",
    "model.s_f=16",
    "model.s_a=8",
    "model.s_j=16",
    "train.stage1.epochs=2",
    "train.stage1.steps_per_epoch=2",
    "train.stage2.epochs=1",
    "train.stage2.steps_per_epoch=2",
    "train.lr_milestones=[2]",
    "train.strategy=one_device",
]


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    from anet_tf.data.synthetic import generate

    root = tmp_path_factory.mktemp("synth")
    generate(str(root), ids=10, test_ids=4, cameras=3, images_per_id=5, image_size=32, seed=3)
    return str(root)


def tiny_cfg(root, *extra):
    return load_config("synthetic", [f"data.root={root}", *TINY, *extra])


def read_log(run_dir):
    with open(os.path.join(run_dir, "log.csv"), encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def test_two_stages_freeze_backbone_and_log_every_term(tiny_data, tmp_path):
    import keras

    from anet_tf.training.fit import train

    cfg = tiny_cfg(tiny_data)
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
        ("anet", ["loss.use_ac=false"], {"id_j", "tri_j", "tri_g"}),
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
    assert "'tri_g'" in msg or "'total'" in msg
    assert "step 2" in msg and "epoch 2" in msg
    with open(os.path.join(run_dir, "checkpoints", "last.json")) as fh:
        assert json.load(fh)["global_epoch"] == 1  # the last good checkpoint stays


def test_resume_after_kill9_starts_next_epoch_from_saved_weights(tiny_data, tmp_path):
    import keras

    from anet_tf.training.checkpoint import CheckpointManager
    from anet_tf.training.fit import build_trainer
    from anet_tf.training.fit import load_run_config
    from anet_tf.training.fit import train

    run_dir = str(tmp_path / "killed")
    overrides = [f"data.root={tiny_data}", *TINY, "train.stage1.epochs=6", "train.stage2.epochs=1"]
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
    assert epochs[-1] == 7 and len(set(epochs)) == len(epochs)


def _run_script(script, env, timeout=420):
    return subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=timeout
    )


def test_mirrored_strategy_two_logical_cpus(tiny_data, tmp_path):
    out = tmp_path / "mirrored.json"
    script = textwrap.dedent(
        f"""
        import json, tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        from anet_tf.config import load_config
        from anet_tf.training.fit import train
        cfg = load_config("synthetic", {[f"data.root={tiny_data}", *TINY, "data.batch_size=16", "train.strategy=mirrored", "train.stage2.epochs=1"]!r})
        result = train(cfg, {str(tmp_path / "run")!r}, verbose=0)
        import csv
        rows = list(csv.DictReader(open({str(tmp_path / "run" / "log.csv")!r})))
        from anet_tf.training.fit import make_strategy
        json.dump({{"replicas": make_strategy("mirrored").num_replicas_in_sync,
                   "rows": rows}}, open({str(out)!r}, "w"))
        """
    )
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    proc = _run_script(script, env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.load(open(out))
    assert result["replicas"] == 2
    rows = result["rows"]
    assert len(rows) == 3
    assert all(np.isfinite(float(r["total"])) for r in rows)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_multi_worker_two_processes(tiny_data, tmp_path):
    ports = [_free_port(), _free_port()]
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    script = textwrap.dedent(
        """
        import json, os, sys
        import numpy as np
        from anet_tf.config import load_config
        from anet_tf.training.fit import train
        overrides = json.loads(os.environ["ANET_TEST_OVERRIDES"])
        index = json.loads(os.environ["TF_CONFIG"])["task"]["index"]
        cfg = load_config("synthetic", overrides)
        result = train(cfg, os.environ["ANET_TEST_RUN"] + f"-{index}", verbose=0)
        np.savez(os.environ["ANET_TEST_RUN"] + f"-{index}.npz",
                 *[w.numpy() for w in result.net.weights])
        """
    )
    overrides = [
        f"data.root={tiny_data}",
        *TINY,
        "data.batch_size=16",  # global: 2 workers x (P=2 x K=4)
        "train.strategy=multi_worker",
        "train.stage1.epochs=1",
        "train.stage2.epochs=1",
    ]
    procs = []
    for index in range(2):
        env = dict(
            os.environ,
            TF_CPP_MIN_LOG_LEVEL="3",
            CUDA_VISIBLE_DEVICES="",
            TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}}),
            ANET_TEST_OVERRIDES=json.dumps(overrides),
            ANET_TEST_RUN=str(tmp_path / "run"),
        )
        procs.append(
            subprocess.Popen(
                [sys.executable, "-c", script], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
            )
        )
    outs = []
    for proc in procs:
        try:
            outs.append(proc.communicate(timeout=420))
        except subprocess.TimeoutExpired:
            for p in procs:
                p.kill()
            pytest.fail("multi-worker training timed out")
    for proc, (_, err) in zip(procs, outs):
        assert proc.returncode == 0, err[-3000:]
    w0 = np.load(str(tmp_path / "run-0.npz"))
    w1 = np.load(str(tmp_path / "run-1.npz"))
    assert len(w0.files) == len(w1.files) > 0
    for key in w0.files:
        np.testing.assert_array_equal(w0[key], w1[key])
    # Only the chief (worker 0) writes the run directory's log and checkpoints.
    rows = read_log(str(tmp_path / "run-0"))
    assert len(rows) == 2 and all(np.isfinite(float(r["total"])) for r in rows)
    assert not os.path.exists(str(tmp_path / "run-1" / "log.csv"))


def test_mixed_precision_and_xla_switches(tiny_data, tmp_path):
    """train.mixed_precision (float16 compute, loss scaling) and train.jit_compile
    (XLA) train both stages; run in a subprocess since the dtype policy is global."""
    run_dir = tmp_path / "mp"
    cmd = [sys.executable, "-m", "anet_tf.cli", "fit", "--quiet", "--no-export", "--out", str(run_dir)]
    for item in [f"data.root={tiny_data}", *TINY, "train.mixed_precision=true", "train.jit_compile=true"]:
        cmd += ["--set", item]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=420)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = read_log(str(run_dir))
    assert [r["stage"] for r in rows] == ["1", "1", "2"]
    assert all(np.isfinite(float(r["total"])) for r in rows)


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
