"""``evaluate --run`` records its metrics in the run's metrics.json
(anet_tf.jobs.fit_evaluate_export.record_evaluation): holding the run's lock, and
never in a run that has not finished training (metrics.json marks a run finished)."""

import json
import threading
import time

import pytest

from anet_tf.jobs import fit_evaluate_export as job
from anet_tf.training.run import RunFolderError
from anet_tf.training.run import RunLock


def _finished_run(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.json").write_text(json.dumps({"metrics": {"mAP": 0.5}}))
    return run


def test_a_run_that_has_not_finished_gets_no_metrics_file(tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    assert job.record_evaluation(str(run), "f", {"mAP": 0.4}) is None
    assert not (run / "metrics.json").exists()


def test_two_features_recorded_keep_each_other_and_what_fit_wrote(tmp_path):
    run = _finished_run(tmp_path)
    job.record_evaluation(str(run), "f", {"mAP": 0.4})
    job.record_evaluation(str(run), "j", {"mAP": 0.6})
    payload = json.loads((run / "metrics.json").read_text())
    assert payload == {
        "metrics": {"mAP": 0.5},
        "evaluations": {"f": {"mAP": 0.4}, "j": {"mAP": 0.6}},
    }


def test_recording_waits_for_the_holder_of_the_run(tmp_path):
    """An evaluation recorded while another process holds the run (here a lock
    taken in this process, released after 0.5 s) waits, then keeps both."""
    run = _finished_run(tmp_path)
    lock = RunLock(str(run)).acquire()
    done = {}

    def record():
        done["path"] = job.record_evaluation(str(run), "f", {"mAP": 0.4})
        done["at"] = time.monotonic()

    thread = threading.Thread(target=record)
    thread.start()
    time.sleep(0.5)
    assert "path" not in done  # still waiting
    released = time.monotonic()
    lock.release()
    thread.join(timeout=30)
    assert done["at"] >= released
    assert json.loads((run / "metrics.json").read_text())["evaluations"] == {
        "f": {"mAP": 0.4}
    }


def test_a_holder_that_keeps_the_run_is_one_line_and_changes_nothing(
    tmp_path, monkeypatch
):
    run = _finished_run(tmp_path)
    before = (run / "metrics.json").read_bytes()
    monkeypatch.setattr(job, "RECORD_WAIT_S", 0.2)
    with RunLock(str(run)):
        with pytest.raises(RunFolderError) as err:
            job.record_evaluation(str(run), "f", {"mAP": 0.4})
    assert str(run) in str(err.value) and "\n" not in str(err.value)
    assert (run / "metrics.json").read_bytes() == before
