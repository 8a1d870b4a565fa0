"""train.attribute_refit: the L-BFGS logistic regression against NumPy and (when
installed) scikit-learn, and the refit inside a tiny run: classifiers change, the
embedding does not, the checkpoint keeps the refit, a resumed run does not redo it."""

import os

import numpy as np
import pytest
from helpers import TINY_OVERRIDES

from anet_tf.config import ConfigError
from anet_tf.config import load_config
from anet_tf.training.refit import _objective
from anet_tf.training.refit import fit_softmax_regression


def _toy(n=300, d=6, k=4, seed=0):
    """Overlapping Gaussian classes: the optimum is finite and not separable."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    centres = rng.normal(0, 1.0, (k, d))
    x = centres[y] + rng.normal(0, 1.0, (n, d))
    return x, y, k


def test_objective_gradient_matches_finite_differences():
    x, y, k = _toy(n=50, d=3, k=3)
    w = np.random.default_rng(1).normal(0, 0.5, x.shape[1] * k)
    _, grad = _objective(w, x, y, k, 0.02)
    eps = 1e-6
    numeric = np.array([
        (_objective(w + eps * e, x, y, k, 0.02)[0] - _objective(w - eps * e, x, y, k, 0.02)[0])
        / (2 * eps)
        for e in np.eye(len(w))
    ])
    np.testing.assert_allclose(grad, numeric, rtol=1e-5, atol=1e-8)


def test_lbfgs_reaches_the_stationary_point_of_the_regularised_loss():
    x, y, k = _toy()
    c = 0.5
    W, iterations, converged = fit_softmax_regression(x, y, k, c=c, tol=1e-8)
    assert converged and iterations > 0
    # Stationarity written out in NumPy: X^T (P - Y) + W / C = 0.
    logits = x @ W
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    p[np.arange(len(y)), y] -= 1
    np.testing.assert_allclose(x.T @ p + W / c, 0, atol=1e-5)
    # Stronger regularisation gives smaller weights; starting at the answer stops at once.
    assert np.linalg.norm(fit_softmax_regression(x, y, k, c=0.01)[0]) < np.linalg.norm(W)
    again, iterations, converged = fit_softmax_regression(x, y, k, c=c, init=W, tol=1e-6)
    assert converged and iterations == 0
    np.testing.assert_array_equal(again, W)


def test_lbfgs_matches_scikit_learn():
    sklearn = pytest.importorskip("sklearn.linear_model")
    x, y, k = _toy(seed=2)
    W, _, converged = fit_softmax_regression(x, y, k, c=2.0, tol=1e-9)
    reference = sklearn.LogisticRegression(
        C=2.0, fit_intercept=False, tol=1e-10, max_iter=10000
    ).fit(x, y)
    assert converged
    np.testing.assert_allclose(W.T, reference.coef_, atol=1e-4)


@pytest.mark.parametrize(
    "x, y, message",
    [
        (np.zeros((3, 2)), np.array([0, 1, 5]), "labels must lie in"),
        (np.zeros((3, 2)), np.array([0, 1]), "need x"),
        (np.zeros((0, 2)), np.zeros(0, int), "need x"),
    ],
)
def test_lbfgs_refuses_bad_input(x, y, message):
    with pytest.raises(ValueError, match=message):
        fit_softmax_regression(x, y, 3)
    with pytest.raises(ValueError, match="c must be positive"):
        fit_softmax_regression(np.zeros((2, 2)), np.array([0, 1]), 3, c=0)
    with pytest.raises(ValueError, match=r"init must have shape \(2, 3\)"):
        fit_softmax_regression(np.zeros((2, 2)), np.array([0, 1]), 3, init=np.zeros((3, 2)))


def test_config_refuses_a_non_positive_c(tiny_dataset):
    with pytest.raises(ConfigError, match="train.attribute_refit_c"):
        load_config("synthetic", [f"data.root={tiny_dataset}", "train.attribute_refit_c=0"])


def test_refit_changes_only_the_classifiers_is_saved_and_not_redone(
    tiny_dataset, tmp_path, monkeypatch
):
    """A finished run resumed with train.attribute_refit=true (a key a resume may
    change) gets the refit: same weights but the classifiers, the converged
    regression on what they read, saved in the newest checkpoint and best/; a
    second resume restores it without fitting again."""
    import anet_tf.training.refit as refit_module
    from anet_tf.data.readers import load_dataset
    from anet_tf.training.checkpoint import CheckpointManager
    from anet_tf.training.fit import build_trainer
    from anet_tf.training.fit import train

    base = [f"data.root={tiny_dataset}", *TINY_OVERRIDES, "model.attribute_neck=bnneck"]
    run_dir = str(tmp_path / "run")
    plain = train(load_config("synthetic", base), run_dir, verbose=0)
    before = {w.path: w.numpy().copy() for w in plain.net.weights}
    cfg = load_config("synthetic", [*base, "train.attribute_refit=true"])
    dataset = load_dataset(cfg)
    refit = train(cfg, run_dir, resume=True, dataset=dataset, verbose=0)

    changed = {w.path for w in refit.net.weights if not np.array_equal(w.numpy(), before[w.path])}
    assert changed == {
        refit.net.get_layer(f"attribute_{n}").classifier.kernel.path for n in cfg.data.attributes
    }
    reads, labels = refit_module.classifier_inputs(refit.net, cfg, dataset, dataset.train)
    for i, name in enumerate(cfg.data.attributes):
        after = refit.net.get_layer(f"attribute_{name}").classifier.kernel.numpy()
        known = labels[:, i] >= 0
        W, iterations, converged = fit_softmax_regression(
            reads[name][known], labels[known, i], after.shape[1], init=after
        )
        assert converged and iterations <= 2, (name, iterations)
        np.testing.assert_allclose(W, after, atol=1e-4)

    # The newest checkpoint (and best/, the same epoch without evaluation) holds it.
    path, state = CheckpointManager(os.path.join(run_dir, "checkpoints")).latest()
    assert state.attribute_refit_c == 1.0 and state.global_epoch == 3
    for folder in (path, os.path.join(run_dir, "checkpoints", "best")):
        net = build_trainer(cfg, len(dataset.train_pids()), dataset.num_classes).net
        net.load_weights(os.path.join(folder, "net.weights.h5"))
        for w, v in zip(net.weights, refit.net.weights, strict=True):
            np.testing.assert_array_equal(w.numpy(), v.numpy())

    def fail(*args, **kwargs):
        raise AssertionError("refitted twice")

    monkeypatch.setattr(refit_module, "refit_attribute_classifiers", fail)
    again = train(cfg, run_dir, resume=True, dataset=dataset, verbose=0)
    for w, v in zip(again.net.weights, refit.net.weights, strict=True):
        np.testing.assert_array_equal(w.numpy(), v.numpy())
    # A new C is a new fit.
    monkeypatch.setattr(refit_module, "refit_attribute_classifiers", lambda *a, **k: [])
    cfg2 = load_config("synthetic", [*base, "train.attribute_refit=true", "train.attribute_refit_c=0.1"])
    train(cfg2, run_dir, resume=True, dataset=dataset, verbose=0)
    assert CheckpointManager(os.path.join(run_dir, "checkpoints")).latest()[1].attribute_refit_c == 0.1


def test_resume_with_refit_through_fit_leaves_an_earlier_best_alone(tiny_dataset, tmp_path, capsys):
    """`anet-tf fit --resume RUN --set train.attribute_refit=true --reevaluate`: the key
    may change on resume; when evaluation chose an earlier best/, the refit goes into
    the last checkpoint only, best/ keeps its classifiers, and fit says so."""
    import h5py

    from anet_tf.jobs import fit_evaluate_export as workflow
    from anet_tf.training.checkpoint import CheckpointManager
    from anet_tf.training.fit import train

    run_dir = str(tmp_path / "run")
    base = [f"data.root={tiny_dataset}", *TINY_OVERRIDES]
    train(load_config("synthetic", base), run_dir, verbose=0)
    ckpts = CheckpointManager(os.path.join(run_dir, "checkpoints"))
    ckpts._replace_with_links(os.path.join(ckpts.directory, "epoch-0002"), os.path.join(ckpts.directory, "best"))

    def kernels(folder):
        out = {}

        def keep(name, item):  # returns None: visititems stops at a non-None value
            if isinstance(item, h5py.Dataset) and "attribute" in name and "classifier" in name:
                out[name] = item[()]

        with h5py.File(os.path.join(folder, "net.weights.h5")) as fh:
            fh.visititems(keep)
        return out

    best_before, last_before = kernels(os.path.join(ckpts.directory, "best")), kernels(ckpts.latest()[0])
    assert best_before and last_before
    capsys.readouterr()
    payload = workflow.fit_and_report(None, run_dir, resume=True, export=False, reevaluate=True,
                                      overrides=["train.attribute_refit=true"])
    assert payload is not None and "attributes" in payload["metrics"]
    out = capsys.readouterr().out
    assert "refit type" in out and "checkpoints/best is epoch 2" in out
    path, state = ckpts.latest()
    assert state.attribute_refit_c == 1.0 and state.global_epoch == 3
    last_after, best_after = kernels(path), kernels(os.path.join(ckpts.directory, "best"))
    assert any(not np.array_equal(last_after[k], last_before[k]) for k in last_before)
    for k in best_before:
        np.testing.assert_array_equal(best_after[k], best_before[k])
