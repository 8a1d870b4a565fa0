"""`anet-tf fit` holds its run folder's lock from start to end: training, the
attribute refit, evaluation and export. A second `fit --resume RUN` while the first
evaluates or exports is refused in one line (exit 4), and the lock is free again
once the first is done.

Training and evaluation are stubbed here (the real ones hold the same lock: the
job hands it to train(), tests/test_run_folder.py and tests/test_cli.py fit for
real); what is real is the job's lock and a second `anet-tf fit --resume` process.
"""

import os
import subprocess
import sys
from types import SimpleNamespace

import pytest

from anet_tf.jobs import fit_evaluate_export as job
from anet_tf.training.fit import save_run_config
from anet_tf.training.run import RunFolderError
from anet_tf.training.run import RunLock


def _second_fit(run_dir: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "anet_tf", "fit", "--resume", run_dir, "--quiet"],
        capture_output=True,
        text=True,
        timeout=180,
        env=dict(os.environ, CUDA_VISIBLE_DEVICES="", TF_CPP_MIN_LOG_LEVEL="3"),
    )


def _stub_phases(monkeypatch, run_dir: str, during_evaluate, during_export) -> dict:
    """Replace the job's dataset check, training, evaluation, export and report
    by stubs; ``during_*`` run inside the evaluate and export phases."""
    seen = {}

    def train_run(*args, **kwargs):
        seen["lock"] = kwargs.get("lock")
        return SimpleNamespace(net=None, train_seconds=1.0, global_epoch=2)

    def evaluate(*args, **kwargs):
        seen["evaluate"] = during_evaluate()
        return {"dataset": "synthetic", "metrics": {"mAP": 0.5}}

    def export(*args, **kwargs):
        seen["export"] = during_export()
        return os.path.join(run_dir, "export", "anet", "1")

    monkeypatch.setattr(job, "_checked_dataset", lambda *a, **k: object())
    monkeypatch.setattr(job, "_train_run", train_run)
    monkeypatch.setattr(job, "_evaluate_trained", evaluate)
    monkeypatch.setattr(job, "_export_trained", export)
    monkeypatch.setattr(job, "_print_where_things_are", lambda *a, **k: None)
    return seen


def _refused_in_process(run_dir: str) -> str:
    """What a second RunLock of the folder says (a second open file: refused as
    another process is)."""
    with pytest.raises(RunFolderError) as err:
        RunLock(run_dir).acquire()
    return str(err.value)


def test_a_second_fit_is_refused_while_the_first_evaluates_and_exports(
    make_tiny_cfg, tmp_path, monkeypatch
):
    run_dir = str(tmp_path / "run")
    save_run_config(make_tiny_cfg(), run_dir)
    seen = _stub_phases(
        monkeypatch,
        run_dir,
        during_evaluate=lambda: _second_fit(run_dir),
        during_export=lambda: _refused_in_process(run_dir),
    )
    payload = job.fit_and_report(None, run_dir, resume=True, verbose=False)
    assert payload["saved_model"].endswith(os.path.join("export", "anet", "1"))
    # train() got the job's lock, held (it does not take a second one).
    assert isinstance(seen["lock"], RunLock) and seen["lock"].run_dir == run_dir
    second = seen["evaluate"]
    assert second.returncode == 4, second.stderr[-2000:]
    line = second.stderr.strip().splitlines()[-1]
    assert line.startswith(
        f"anet-tf fit: error: {run_dir} is in use by process {os.getpid()} "
    )
    assert line.endswith("wait for it to finish, stop it, or choose another --out")
    assert len(line) < 300
    assert f"in use by process {os.getpid()}" in seen["export"]
    # The first is done: the lock is free, released cleanly.
    with RunLock(run_dir) as lock:
        assert lock.took_over is None
    assert os.path.isfile(os.path.join(run_dir, "metrics.json"))


def test_a_fit_of_a_held_folder_is_refused_before_any_work(
    make_tiny_cfg, tmp_path, monkeypatch
):
    run_dir = str(tmp_path / "run")
    save_run_config(make_tiny_cfg(), run_dir)

    def never():
        raise AssertionError("the job worked on a folder it did not hold")

    _stub_phases(monkeypatch, run_dir, never, never)
    monkeypatch.setattr(job, "_checked_dataset", lambda *a, **k: never())
    with RunLock(run_dir):
        with pytest.raises(RunFolderError, match=f"in use by process {os.getpid()}"):
            job.fit_and_report(None, run_dir, resume=True, verbose=False)
    assert not os.path.exists(os.path.join(run_dir, "metrics.json"))
