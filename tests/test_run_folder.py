"""The run folder survives what users and machines do to it: a second process, a
bad update, a full disk, a kill between a checkpoint and its log row, a resume with
new settings, a finished run resumed. Each case is provoked for real."""

import csv
import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
from helpers import read_log

from anet_tf.training.run import RunFolderError
from anet_tf.training.run import RunLock
from anet_tf.training.run import reconcile_log


def last_epoch(run_dir):
    with open(os.path.join(run_dir, "checkpoints", "last.json")) as fh:
        return json.load(fh)["global_epoch"]


def leftovers(run_dir):
    found = []
    for dirpath, dirs, files in os.walk(run_dir):
        found += [os.path.join(dirpath, n) for n in dirs + files if ".tmp-" in n or n.endswith(".tmp")]
    return found


class SetLr:
    """A Keras callback that overrides the learning rate at chosen global epochs
    (after the run's own callback has set the schedule's)."""

    def __new__(cls, epochs_to_lr):
        import keras

        class _SetLr(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch, logs=None):
                lr = epochs_to_lr.get(epoch + 1)
                if lr is not None:
                    self.model.optimizer.learning_rate.assign(lr)

        return _SetLr()


# --------------------------------------------------------------------- the lock
HOLD = textwrap.dedent(
    """
    import sys, time
    from anet_tf.training.run import RunLock
    lock = RunLock(sys.argv[1]).acquire()
    print("held", flush=True)
    time.sleep(600)
    """
)


def _hold_lock(run_dir):
    proc = subprocess.Popen([sys.executable, "-c", HOLD, run_dir], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_lock_names_the_holder_and_is_taken_over_after_kill9(tmp_path):
    run_dir = str(tmp_path / "run")
    proc = _hold_lock(run_dir)
    try:
        with pytest.raises(RunFolderError) as err:
            RunLock(run_dir).acquire()
        assert f"process {proc.pid}" in str(err.value) and "\n" not in str(err.value)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    lock = RunLock(run_dir).acquire()  # the kernel released the dead holder's lock
    try:
        assert f"process {proc.pid}" in lock.took_over
    finally:
        lock.release()
    with RunLock(run_dir) as again:  # a clean release leaves nothing to take over
        assert again.took_over is None


def test_second_fit_on_a_locked_folder_is_refused_before_writing(make_tiny_cfg, tmp_path):
    from anet_tf.training.fit import train

    run_dir = str(tmp_path / "dup")
    proc = _hold_lock(run_dir)
    try:
        with pytest.raises(RunFolderError, match=f"in use by process {proc.pid}"):
            train(make_tiny_cfg(), run_dir, verbose=0)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert sorted(os.listdir(run_dir)) == ["lock"]  # no config, no checkpoint written


# ------------------------------------------------------------ bad updates (NaN)
def test_nonfinite_terms_are_named_in_the_papers_order_not_keras_order():
    from anet_tf.training.callbacks import first_non_finite

    columns = ["id_f", "tri_f", "att_color", "id_j", "tri_j", "tri_g", "total"]
    logs = dict(sorted({"att_color": 1.0, "total": float("nan"), "tri_g": float("nan"), "id_f": 2.0}.items()))
    assert list(logs)[0:2] == ["att_color", "id_f"] and first_non_finite(logs, columns)[0] == "tri_g"
    assert first_non_finite({"total": float("inf"), "tri_f": 1.0}, columns)[0] == "total"
    assert first_non_finite({"total": 1.0}, columns) == (None, 0.0)


@pytest.mark.parametrize("bad_lr, why", [(float("nan"), "not finite"), (1e30, "probe batch")])
def test_a_bad_update_is_never_checkpointed(make_tiny_cfg, tmp_path, bad_lr, why):
    """The loss of a step is computed before its update; an update that ruins the
    weights at the last step of an epoch must not become the epoch's checkpoint."""
    from anet_tf.training.callbacks import NonFiniteLossError
    from anet_tf.training.checkpoint import CheckpointManager
    from anet_tf.training.fit import build_trainer
    from anet_tf.training.fit import train

    cfg = make_tiny_cfg("train.stage1.steps_per_epoch=1", "train.stage1.epochs=3")
    run_dir = str(tmp_path / "bad")
    with pytest.raises(NonFiniteLossError) as err:
        train(cfg, run_dir, extra_callbacks=(SetLr({2: bad_lr}),), verbose=0)
    assert why in str(err.value) and "global epoch 2" in str(err.value)
    assert "epoch-0001" in str(err.value)  # names the checkpoint that is kept
    assert last_epoch(run_dir) == 1
    assert not os.path.exists(os.path.join(run_dir, "checkpoints", "epoch-0002"))
    assert [r["global_epoch"] for r in read_log(run_dir)] == ["1"]
    path, _ = CheckpointManager(os.path.join(run_dir, "checkpoints")).latest()
    from anet_tf.data.readers import load_dataset

    ds = load_dataset(cfg)
    net = build_trainer(cfg, len(ds.train_pids()), ds.num_classes).net
    net.load_weights(os.path.join(path, "net.weights.h5"))
    assert all(np.isfinite(w.numpy()).all() and np.abs(w.numpy()).max() < 1e6 for w in net.weights)


def test_resume_with_a_lower_lr_after_a_nan_stop(make_tiny_cfg, tmp_path, capsys):
    import yaml

    from anet_tf.jobs import fit_evaluate_export as workflow
    from anet_tf.training.callbacks import NonFiniteLossError
    from anet_tf.training.fit import train
    from anet_tf.training.run import load_run_config

    cfg = make_tiny_cfg("model.variant=baseline", "eval.feature=f",  # any variant will do
                        "train.stage1.steps_per_epoch=1", "train.stage1.epochs=3")
    run_dir = str(tmp_path / "nan")
    with pytest.raises(NonFiniteLossError):
        train(cfg, run_dir, extra_callbacks=(SetLr({2: 1e30}),), verbose=0)
    payload = workflow.fit_and_report(
        None, run_dir, resume=True, export=False, verbose=False,
        overrides=["train.lr=1e-4"], command="anet-tf fit --resume RUN --set train.lr=1e-4",
    )
    assert payload is not None
    assert load_run_config(run_dir).train.lr == 1e-4
    with open(os.path.join(run_dir, "changes.yaml")) as fh:
        changes = yaml.safe_load(fh)
    assert changes[-1]["changed"]["train.lr"] == {"from": cfg.train.lr, "to": 1e-4}
    assert "--set train.lr=1e-4" in changes[-1]["command"]
    assert [int(r["global_epoch"]) for r in read_log(run_dir)] == [1, 2, 3]


@pytest.fixture(scope="module")
def finished_run(tiny_dataset, tmp_path_factory):
    """One finished, evaluated tiny baseline run (stage 1, one epoch), trained once for
    the tests below; each test works on its own copy (:func:`copy_of`)."""
    from helpers import TINY_OVERRIDES

    from anet_tf.config import load_config
    from anet_tf.jobs import fit_evaluate_export as workflow

    cfg = load_config("synthetic", [f"data.root={tiny_dataset}", *TINY_OVERRIDES,
                                    "model.variant=baseline", "eval.feature=f", "train.stage1.epochs=1"])
    run_dir = str(tmp_path_factory.mktemp("finished") / "done")
    assert workflow.fit_and_report(cfg, run_dir, export=False, verbose=False) is not None
    return run_dir


def copy_of(run_dir, tmp_path):
    return shutil.copytree(run_dir, str(tmp_path / os.path.basename(run_dir)))


def test_resume_refuses_settings_that_change_the_network(finished_run, tmp_path, capsys):
    from anet_tf.cli import main

    run_dir = copy_of(finished_run, tmp_path)
    before = open(os.path.join(run_dir, "config.yaml")).read()
    code = main(["fit", "--resume", run_dir, "--set", "model.s_f=32", "--no-export", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "model.s_f cannot change when a run is resumed" in err
    assert len(err.strip().splitlines()) == 1
    assert open(os.path.join(run_dir, "config.yaml")).read() == before
    assert not os.path.exists(os.path.join(run_dir, "changes.yaml"))


# ------------------------------------------------------------------ finished runs
def test_resume_of_a_finished_run_changes_nothing_unless_asked(finished_run, tmp_path, capsys):
    from anet_tf.jobs import fit_evaluate_export as workflow

    run_dir = copy_of(finished_run, tmp_path)
    metrics_path = os.path.join(run_dir, "metrics.json")
    before = open(metrics_path).read()
    seconds = json.loads(before)["train_seconds"]
    assert seconds > 0
    capsys.readouterr()
    assert workflow.fit_and_report(None, run_dir, resume=True, export=False, verbose=False) is None
    assert "is finished" in capsys.readouterr().out
    assert open(metrics_path).read() == before
    assert workflow.fit_and_report(
        None, run_dir, resume=True, export=False, verbose=False, reevaluate=True
    ) is not None
    again = json.loads(open(metrics_path).read())
    assert again["train_seconds"] == seconds  # the training time of the run, kept
    assert len(read_log(run_dir)) == 1


# ------------------------------------------------------------ the log and kills
def test_reconcile_log_drops_rows_past_the_checkpoint_and_restores_a_lost_one(tmp_path):
    run_dir = str(tmp_path)
    header = ["stage", "epoch", "global_epoch", "lr", "epoch_time_s", "images_per_s", "total"]
    with open(os.path.join(run_dir, "log.csv"), "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        for e in (1, 2, 2, 3):  # a duplicate, and a row whose checkpoint never published
            w.writerow([1, e, e, 0.1, 1.0, 2.0, 5.0 - e])
    assert reconcile_log(run_dir, 2, None, ["total"]) == 2
    assert [r["global_epoch"] for r in read_log(run_dir)] == ["1", "2"]
    row = {"stage": 1, "epoch": 3, "global_epoch": 3, "lr": 0.1, "epoch_time_s": 1.0,
           "images_per_s": 2.0, "total": 1.5}
    assert reconcile_log(run_dir, 3, row, ["total"]) == 1  # killed after publishing
    rows = read_log(run_dir)
    assert [r["global_epoch"] for r in rows] == ["1", "2", "3"] and rows[-1]["total"] == "1.5"
    assert reconcile_log(run_dir, 3, row, ["total"]) == 0


@pytest.mark.parametrize("torn", [False, True], ids=["no-row", "half-a-row"])
def test_kill9_between_checkpoint_and_log_row_leaves_one_row_per_epoch(tiny_overrides, tmp_path, torn):
    """The row of an epoch is written after its checkpoint: stop a real fit right
    there (SIGKILL from inside the process, at the moment between the two, or
    with half of the row written), resume, and every epoch has exactly one whole
    row."""
    run_dir = str(tmp_path / "killed")
    script = textwrap.dedent(
        """
        import os, signal, sys, json
        from anet_tf.training import run
        calls = []
        real = run.append_log_row
        TORN = os.environ["TEST_TORN_ROW"] == "1"
        def killer(run_dir, *a, **k):
            calls.append(1)
            if len(calls) == 2:  # epoch 2's checkpoint is published, its row not yet
                if TORN:  # the row reaches the disk up to its middle
                    path = os.path.join(run_dir, "log.csv")
                    size = os.path.getsize(path)
                    real(run_dir, *a, **k)
                    os.truncate(path, size + (os.path.getsize(path) - size) // 2)
                os.kill(os.getpid(), signal.SIGKILL)
            return real(run_dir, *a, **k)
        import anet_tf.training.callbacks as cb
        cb.append_log_row = killer
        from anet_tf.cli import main
        sys.exit(main(sys.argv[1:]))
        """
    )
    args = ["fit", "--out", run_dir, "--no-export", "--quiet"]
    for item in [*tiny_overrides, "model.variant=baseline", "eval.feature=f", "train.stage1.epochs=3"]:
        args += ["--set", item]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", TEST_TORN_ROW="1" if torn else "0")
    proc = subprocess.run([sys.executable, "-c", script, *args], env=env, capture_output=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert last_epoch(run_dir) == 2
    with open(os.path.join(run_dir, "log.csv"), newline="") as fh:
        assert fh.read().endswith("\n") != torn
    from anet_tf.cli import main

    assert main(["fit", "--resume", run_dir, "--no-export", "--quiet"]) == 0
    assert [r["global_epoch"] for r in read_log(run_dir)] == ["1", "2", "3"]
    with open(os.path.join(run_dir, "log.csv"), newline="") as fh:
        cells = [len(r) for r in csv.reader(fh)]
    assert len(set(cells)) == 1, cells  # every row whole, none glued onto another
    assert not leftovers(run_dir)


def _write_rows(path, header, epochs, torn_epoch=None):
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        for e in epochs:
            w.writerow([1, e, e, 0.1, 1.0, 2.0, 5.0 - e])
    if torn_epoch is not None:
        with open(path, "a", newline="") as fh:
            fh.write(f"1,{torn_epoch},{torn_epoch},0.1,1.")  # cut in the middle


def test_reconcile_log_drops_a_torn_last_line_and_restores_its_row(tmp_path):
    run_dir = str(tmp_path)
    header = ["stage", "epoch", "global_epoch", "lr", "epoch_time_s", "images_per_s", "total"]
    _write_rows(os.path.join(run_dir, "log.csv"), header, [1, 2], torn_epoch=3)
    row = {"stage": 1, "epoch": 3, "global_epoch": 3, "lr": 0.1, "epoch_time_s": 1.0,
           "images_per_s": 2.0, "total": 1.5}
    assert reconcile_log(run_dir, 3, row, ["total"]) == 2  # the torn line out, its row in
    rows = read_log(run_dir)
    assert [r["global_epoch"] for r in rows] == ["1", "2", "3"] and rows[-1]["total"] == "1.5"
    with open(os.path.join(run_dir, "log.csv"), newline="") as fh:
        assert [len(r) for r in csv.reader(fh)] == [7, 7, 7, 7]
    # torn at an epoch the checkpoint never completed: dropped, nothing restored
    _write_rows(os.path.join(run_dir, "log.csv"), header, [1, 2], torn_epoch=3)
    assert reconcile_log(run_dir, 2, None, ["total"]) == 1
    assert [r["global_epoch"] for r in read_log(run_dir)] == ["1", "2"]


@pytest.mark.parametrize("error", ["ENOSPC", "KeyboardInterrupt"])
def test_a_log_row_that_cannot_be_written_leaves_the_log_as_it_was(tmp_path, monkeypatch, error):
    """A full disk (or Ctrl-C) while a row is appended: the file is cut back to its
    previous rows (no torn line), and a full disk is one line, exit 4."""
    from anet_tf.commands.errors import exit_code
    from anet_tf.training import run
    from anet_tf.training.run import DiskFullError
    from anet_tf.training.run import append_log_row

    run_dir = str(tmp_path)
    header = ["stage", "epoch", "global_epoch", "lr", "epoch_time_s", "images_per_s", "total"]
    _write_rows(os.path.join(run_dir, "log.csv"), header, [1, 2])
    before = (tmp_path / "log.csv").read_bytes()
    exc = OSError(errno.ENOSPC, "No space left on device") if error == "ENOSPC" else KeyboardInterrupt()

    def fsync(fd):  # the row is in the file, the disk refuses to keep it
        raise exc

    monkeypatch.setattr(run.os, "fsync", fsync)
    row = {"stage": 1, "epoch": 3, "global_epoch": 3, "lr": 0.1, "epoch_time_s": 1.0,
           "images_per_s": 2.0, "total": 1.5}
    with pytest.raises(DiskFullError if error == "ENOSPC" else KeyboardInterrupt) as raised:
        append_log_row(run_dir, row, ["total"])
    monkeypatch.undo()
    assert (tmp_path / "log.csv").read_bytes() == before
    if error == "ENOSPC":
        msg = str(raised.value)
        assert exit_code(raised.value) == 4 and "\n" not in msg
        assert "log.csv" in msg and "epoch 3" in msg and f"--resume {run_dir}" in msg


# --------------------------------------------------------------------- disk full
def _checkpoint_failing_with_enospc(monkeypatch, on_call: int):
    import anet_tf.training.checkpoint as ck

    calls = []
    real = ck.np.savez

    def savez(path, *args, **kwargs):
        calls.append(path)
        if len(calls) == on_call:
            with open(path, "wb") as fh:  # a partial file, as a full disk leaves it
                fh.write(b"\0" * 100)
            raise OSError(errno.ENOSPC, "No space left on device", path)
        return real(path, *args, **kwargs)

    monkeypatch.setattr(ck.np, "savez", savez)


def test_disk_full_keeps_the_previous_checkpoint_and_leaves_no_partial_files(
    make_tiny_cfg, tmp_path, monkeypatch
):
    from anet_tf.training.fit import train
    from anet_tf.training.run import DiskFullError

    # The baseline variant: checkpoints are written the same way for every variant,
    # and its train step traces in half the time of ANet's.
    cfg = make_tiny_cfg("model.variant=baseline", "eval.feature=f", "train.stage1.epochs=3")
    run_dir = str(tmp_path / "full")
    _checkpoint_failing_with_enospc(monkeypatch, on_call=2)
    with pytest.raises(DiskFullError) as err:
        train(cfg, run_dir, verbose=0)
    msg = str(err.value)
    assert "no space left" in msg and "epoch-0002" in msg and "epoch-0001" in msg
    assert "MiB" in msg and "--resume" in msg and "\n" not in msg
    assert last_epoch(run_dir) == 1 and not leftovers(run_dir)
    assert not os.path.exists(os.path.join(run_dir, "checkpoints", "epoch-0002"))
    assert [r["global_epoch"] for r in read_log(run_dir)] == ["1"]
    monkeypatch.undo()
    train(cfg, run_dir, resume=True, verbose=0)
    assert [r["global_epoch"] for r in read_log(run_dir)] == ["1", "2", "3"]


def _mount_tmpfs(path, size):
    os.makedirs(path, exist_ok=True)
    if not shutil.which("mount") or os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", path], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")


@pytest.mark.slow  # three CLI runs (~2 min); the injected ENOSPC test runs by default
def test_disk_full_on_a_real_small_filesystem(tiny_overrides, tmp_path):
    """A real full disk (a tmpfs that holds one checkpoint and a half), through the
    command line: one line on stderr, exit 4, the previous checkpoint intact, and
    after making room the run resumes to the end with one row per epoch."""
    from anet_tf.cli import main

    probe_dir = str(tmp_path / "probe")
    args = ["--no-export", "--quiet"]
    for item in [*tiny_overrides, "train.stage2.epochs=0"]:
        args += ["--set", item]
    assert main(["fit", "--out", probe_dir, *args, "--set", "train.stage1.epochs=1"]) == 0
    one = sum(
        os.path.getsize(os.path.join(d, f))
        for d, _, files in os.walk(os.path.join(probe_dir, "checkpoints", "epoch-0001"))
        for f in files
    )
    mnt = str(tmp_path / "small")
    _mount_tmpfs(mnt, one * 3 // 2 + 256 * 1024)
    try:
        run_dir = os.path.join(mnt, "run")
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
        cmd = [sys.executable, "-m", "anet_tf.cli", "fit", "--out", run_dir, *args, "--set", "train.stage1.epochs=3"]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 4, proc.stderr[-2000:]
        lines = [line for line in proc.stderr.splitlines() if line.startswith("anet-tf")]
        assert len(lines) == 1 and "no space left" in lines[0] and "Traceback" not in proc.stderr
        assert last_epoch(run_dir) == 1 and not leftovers(run_dir)
        assert [r["global_epoch"] for r in read_log(run_dir)] == ["1"]
        subprocess.run(["mount", "-o", f"remount,size={one * 8}", mnt], check=True)
        resumed = [sys.executable, "-m", "anet_tf.cli", "fit", "--resume", run_dir, "--no-export", "--quiet"]
        proc = subprocess.run(resumed, env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert [r["global_epoch"] for r in read_log(run_dir)] == ["1", "2", "3"]
    finally:
        for _ in range(20):
            if subprocess.run(["umount", mnt], capture_output=True).returncode == 0:
                break
            time.sleep(0.2)


# ------------------------------------------------------ resume is the same run
def test_epoch_batches_depend_on_the_epoch_alone_with_steps_per_epoch(make_tiny_cfg):
    """With stageN.steps_per_epoch != the sampler's epoch, a stream started at epoch
    e (a resume) draws what the uninterrupted stream drew at epoch e."""
    from anet_tf.data.pipeline import build_train_dataset
    from anet_tf.data.readers import load_dataset

    cfg = make_tiny_cfg()
    ds = load_dataset(cfg)
    for steps in (1, 5):  # fewer and more than the sampler's 3
        full, sampler_steps = build_train_dataset(ds, cfg.data, steps_per_epoch=steps)
        assert sampler_steps != steps
        batches = [(im.numpy(), t["pid"].numpy()) for im, t in full.take(3 * steps)]
        resumed, _ = build_train_dataset(ds, cfg.data, steps_per_epoch=steps, epoch_seed_offset=2)
        for k, (im, t) in enumerate(resumed.take(steps)):
            np.testing.assert_array_equal(t["pid"].numpy(), batches[2 * steps + k][1])
            np.testing.assert_array_equal(im.numpy(), batches[2 * steps + k][0])


def test_killed_and_resumed_equals_uninterrupted_with_steps_per_epoch(make_tiny_cfg, tmp_path):
    """train.deterministic: a run stopped after epoch 2 and resumed (through the new
    --set path, extending stage 1 to 3 epochs) ends with the very weights of a run
    that trained 3 epochs at once, with steps_per_epoch unlike the sampler's."""
    from anet_tf.jobs import fit_evaluate_export as workflow
    from anet_tf.training.fit import train

    # Amsgrad: every one of its slots (m, v, v_hat, iterations) must come back.
    extra = ["train.deterministic=true", "train.stage1.steps_per_epoch=1", "train.stage2.epochs=0",
             "train.lr_milestones=[5]", "train.optimizer=amsgrad"]
    whole = train(make_tiny_cfg(*extra, "train.stage1.epochs=3"), str(tmp_path / "whole"), verbose=0)
    run_dir = str(tmp_path / "parts")
    train(make_tiny_cfg(*extra, "train.stage1.epochs=2"), run_dir, verbose=0)
    assert workflow.fit_and_report(
        None, run_dir, resume=True, export=False, verbose=False, overrides=["train.stage1.epochs=3"]
    ) is not None
    from anet_tf.training.checkpoint import CheckpointManager

    path, state = CheckpointManager(os.path.join(run_dir, "checkpoints")).latest()
    assert state.global_epoch == 3
    import h5py

    def arrays(p):
        out = {}

        def keep(name, item):  # returns None: visititems stops at a non-None value
            if isinstance(item, h5py.Dataset):
                out[name] = item[()]

        with h5py.File(os.path.join(p, "net.weights.h5")) as fh:
            fh.visititems(keep)
        return out

    whole_path, _ = CheckpointManager(os.path.join(whole.run_dir, "checkpoints")).latest()
    a, b = arrays(whole_path), arrays(path)
    assert a.keys() == b.keys() and len(a) > 10
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    # Same seed, same losses to the last digit; and the process's determinism
    # settings are put back after each run.
    assert [r["total"] for r in read_log(whole.run_dir)] == [r["total"] for r in read_log(run_dir)]
    import tensorflow as tf
    from tensorflow.python.framework import config as tf_config

    assert not tf_config.is_op_determinism_enabled()
    assert not tf.config.optimizer.get_experimental_options().get("disable_meta_optimizer")


def test_a_trained_run_does_not_need_its_pretrained_file_any_more(make_tiny_cfg, tmp_path):
    """Resume, export and evaluation load a checkpoint over the network: they must
    not read model.pretrained (moved or deleted after training)."""
    from anet_tf.jobs import fit_evaluate_export as workflow
    from anet_tf.model.backbone import build_backbone
    from anet_tf.training.fit import train
    from anet_tf.training.run_checkpoints import Run

    weights = str(tmp_path / "backbone.weights.h5")
    build_backbone("resnet18_ibn_a", base_width=8, input_shape=(32, 32, 3)).save_weights(weights)
    cfg = make_tiny_cfg(f"model.pretrained={weights}", "model.variant=baseline", "eval.feature=f",
                        "train.stage1.epochs=1")
    run_dir = str(tmp_path / "run")
    train(cfg, run_dir, verbose=0)
    os.remove(weights)
    run = Run(run_dir)
    net, loaded_cfg = run.network(), run.config
    assert loaded_cfg.model.pretrained == weights and len(net.weights) > 50
    assert "mAP" in workflow.evaluate_run(run_dir)["metrics"]
    assert workflow.fit_and_report(
        None, run_dir, resume=True, export=False, verbose=False, overrides=["train.stage1.epochs=2"]
    ) is not None
    assert [r["global_epoch"] for r in read_log(run_dir)] == ["1", "2"]
