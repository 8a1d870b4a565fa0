"""Training in other processes: MirroredStrategy over two logical CPUs, two
MultiWorkerMirroredStrategy workers, and the mixed-precision / XLA switches (each
changes a process-global setting). A file of their own so the parallel test runner
can run them beside tests/test_training.py instead of after it."""

import json
import os
import socket
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from helpers import TINY_OVERRIDES
from helpers import read_log
from helpers import run_script

TINY = TINY_OVERRIDES  # the shared tiny settings (tests/helpers.py)


@pytest.fixture
def tiny_data(tiny_dataset):
    """The session's tiny synthetic dataset (tests/conftest.py)."""
    return tiny_dataset


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
    proc = run_script(script, env)
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


@pytest.mark.parametrize(
    "xla",
    [
        False,
        # XLA compiles each stage's step (about 30 s of CPU at these shapes, twice):
        # slow suite
        pytest.param(True, marks=pytest.mark.slow),
    ],
    ids=["mixed_precision_stage1", "mixed_precision_xla_both_stages"],
)
def test_mixed_precision_and_xla_switches(tiny_data, tmp_path, xla):
    """train.mixed_precision (float16 compute, loss scaling), and with it
    train.jit_compile (XLA), train; run in a subprocess since the dtype policy is
    global. Without XLA stage 1 only: stage 2 runs the same step on fewer variables."""
    run_dir = tmp_path / "mp"
    cmd = [sys.executable, "-m", "anet_tf.cli", "fit", "--quiet", "--no-export", "--out", str(run_dir)]
    extra = ["train.jit_compile=true"] if xla else ["train.stage2.epochs=0"]
    for item in [f"data.root={tiny_data}", *TINY, *extra, "train.mixed_precision=true"]:
        cmd += ["--set", item]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=420)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = read_log(str(run_dir))
    assert [r["stage"] for r in rows] == (["1", "1", "2"] if xla else ["1", "1"])
    assert all(np.isfinite(float(r["total"])) for r in rows)
