"""With train.eval_every > 0 the last epoch is evaluated once: the job after
training reuses the evaluation of the weights it ended with, and evaluates again
only when the weights changed after it (an attribute refit)."""

from __future__ import annotations

import json
import os

import pytest


@pytest.fixture
def evaluations(monkeypatch):
    """A list that gets one item per evaluation of a network (evaluate_net)."""
    import anet_tf.evaluation.extract as extract

    calls = []
    real = extract.evaluate_net

    def counted(net, dataset, cfg, attributes=None):
        calls.append(1)
        return real(net, dataset, cfg, attributes)

    monkeypatch.setattr(extract, "evaluate_net", counted)
    return calls


def test_the_last_epoch_is_evaluated_once(make_tiny_cfg, tmp_path, evaluations):
    from anet_tf.jobs.fit_evaluate_export import fit_and_report

    calls = evaluations
    # VAN: one stage of 2 epochs (TINY_OVERRIDES), each evaluated; no refit after
    # the last one
    cfg = make_tiny_cfg("model.variant=van", "train.eval_every=1")
    run_dir = str(tmp_path / "run")
    payload = fit_and_report(cfg, run_dir, export=False, verbose=False)
    assert len(calls) == 2
    with open(os.path.join(run_dir, "metrics.json"), encoding="utf-8") as fh:
        assert json.load(fh)["metrics"]["mAP"] == payload["metrics"]["mAP"]


def test_a_refit_after_the_last_epoch_is_evaluated_again(make_tiny_cfg, tmp_path, evaluations):
    from anet_tf.jobs.fit_evaluate_export import fit_and_report

    calls = evaluations
    cfg = make_tiny_cfg("model.variant=van", "train.eval_every=2", "train.attribute_refit=true")
    fit_and_report(cfg, str(tmp_path / "run"), export=False, verbose=False)
    assert len(calls) == 2  # epoch 2 during training, then the refit weights
