"""Refit the attribute classifiers on the trained network (``train.attribute_refit``).

Why: an attribute branch's classifier is trained together with everything under
it, on augmented P x K batches, chasing features that move under eight loss terms,
and the schedule ends it at a small lr. Measured on the synthetic attribute config
(docs/reproduction.md, sections 1f and 8): the very vector it reads, a_i, carries
10-15 points more type than the classifier gets out of it, when a linear read-out
is fitted to convergence on the frozen network. This step does that fit.

What: after the last training stage, for every attribute branch, the input of its
classifier (a_i, or BN(a_i) with ``model.attribute_neck: bnneck``; inference mode)
is computed on the clean training images whose label is known, and the branch's
bias-free classifier W is replaced by the minimiser of

    sum_n CE(softmax(W^T x_n), y_n) + ||W||^2 / (2 C)

(multinomial logistic regression with scikit-learn's ``C`` convention, without an
intercept, as the classifier has none), found by L-BFGS in float64 from the trained
W. The objective is strictly convex, so its minimiser is unique: refitting again
(a resumed run) gives the same weights to the solver's tolerance. Nothing but the
classifier kernels changes: the embedding, hence every ReID metric, is untouched.

Not in the paper; it is "classifier re-training" on a frozen representation
(Kang et al., *Decoupling Representation and Classifier*, ICLR 2020).
"""

from __future__ import annotations

from dataclasses import dataclass

import keras
import numpy as np


@dataclass
class RefitResult:
    """What refitting one attribute's classifier did.

    Args:
        attribute: the attribute's name.
        images: training images with a known label the fit used.
        train_top1_before, train_top1_after: top-1 on those images with the
            trained and the refitted classifier.
        iterations: L-BFGS iterations; converged: the gradient's max-norm fell
            below the tolerance.
    """

    attribute: str
    images: int
    train_top1_before: float
    train_top1_after: float
    iterations: int
    converged: bool


def _objective(w: np.ndarray, x: np.ndarray, y: np.ndarray, k: int, l2: float):
    """Mean cross-entropy of logits x @ W plus l2/2 ||W||^2, and its gradient."""
    W = w.reshape(x.shape[1], k)
    logits = x @ W
    logits -= logits.max(axis=1, keepdims=True)
    exp = np.exp(logits)
    total = exp.sum(axis=1, keepdims=True)
    n = len(y)
    loss = float(np.mean(np.log(total[:, 0]) - logits[np.arange(n), y]))
    p = exp / total
    p[np.arange(n), y] -= 1.0
    grad = x.T @ p / n + l2 * W
    return loss + 0.5 * l2 * float(np.sum(W * W)), grad.ravel()


# long: 16 lines of docstring; 69 lines of code: the L-BFGS objective and its gradient beside the call that uses them.
def fit_softmax_regression(
    x: np.ndarray,
    y: np.ndarray,
    num_classes: int,
    *,
    c: float = 1.0,
    init: np.ndarray | None = None,
    max_iter: int = 1000,
    tol: float = 1e-6,
    memory: int = 10,
) -> tuple[np.ndarray, int, bool]:
    """Bias-free multinomial logistic regression, L2-regularised, by L-BFGS.

    Minimises ``sum_n CE(x_n W, y_n) + ||W||^2 / (2c)`` (divided by n, which does
    not move the minimiser).

    Args:
        x: [n, d] features; y: [n] labels in [0, num_classes).
        c: inverse regularisation strength (scikit-learn's ``C``).
        init: [d, num_classes] starting weights (default zeros).
        max_iter: L-BFGS iterations at most.
        tol: stop when every gradient entry is below ``tol`` in absolute value.
        memory: L-BFGS history length.

    Returns:
        ``(W [d, num_classes] float64, iterations, converged)``.
    """
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.int64)
    if x.ndim != 2 or len(x) != len(y) or len(y) == 0:
        raise ValueError(f"need x [n, d] and y [n] with n > 0, got {x.shape} and {y.shape}")
    if y.min() < 0 or y.max() >= num_classes:
        raise ValueError(f"labels must lie in [0, {num_classes}), got {y.min()}..{y.max()}")
    if not c > 0:
        raise ValueError(f"c must be positive, got {c}")
    d = x.shape[1]
    if init is not None and np.shape(init) != (d, num_classes):
        raise ValueError(f"init must have shape {(d, num_classes)}, got {np.shape(init)}")
    l2 = 1.0 / (c * len(y))
    w = np.zeros(d * num_classes) if init is None else np.asarray(init, np.float64).ravel().copy()
    f, g = _objective(w, x, y, num_classes, l2)
    s_hist: list[np.ndarray] = []
    y_hist: list[np.ndarray] = []
    for it in range(1, max_iter + 1):
        if np.max(np.abs(g)) < tol:
            return w.reshape(d, num_classes), it - 1, True
        # Two-loop recursion: direction = -H g.
        q = g.copy()
        alphas = []
        for s, yy in zip(reversed(s_hist), reversed(y_hist), strict=True):
            a = s @ q / (yy @ s)
            alphas.append(a)
            q -= a * yy
        if s_hist:
            q *= (s_hist[-1] @ y_hist[-1]) / (y_hist[-1] @ y_hist[-1])
        else:
            q /= max(1.0, float(np.max(np.abs(g))))
        for (s, yy), a in zip(zip(s_hist, y_hist, strict=True), reversed(alphas), strict=True):
            b = yy @ q / (yy @ s)
            q += (a - b) * s
        direction = -q
        slope = g @ direction
        if slope >= 0:  # not a descent direction: restart from steepest descent
            s_hist.clear()
            y_hist.clear()
            direction, slope = -g, -(g @ g)
        # Backtracking (Armijo) line search.
        step = 1.0
        while True:
            w_new = w + step * direction
            f_new, g_new = _objective(w_new, x, y, num_classes, l2)
            if f_new <= f + 1e-4 * step * slope or step < 1e-12:
                break
            step *= 0.5
        s, yy = w_new - w, g_new - g
        if s @ yy > 1e-12:
            s_hist.append(s)
            y_hist.append(yy)
            if len(s_hist) > memory:
                s_hist.pop(0)
                y_hist.pop(0)
        if f - f_new <= 1e-14 * max(1.0, abs(f)) and step < 1e-12:
            return w_new.reshape(d, num_classes), it, False
        w, f, g = w_new, f_new, g_new
    return w.reshape(d, num_classes), max_iter, bool(np.max(np.abs(g)) < tol)


def _neck(branch, a: np.ndarray) -> np.ndarray:
    """The branch's BNNeck in inference mode (identity without one): the Keras
    layer itself, on the pooled vectors of every image at once."""
    if branch.bnneck is None:
        return a
    out = branch.bnneck(a.astype(np.float32), training=False)
    return np.asarray(keras.ops.convert_to_numpy(out), np.float64)


def classifier_inputs(net, cfg, dataset, records) -> tuple[dict, np.ndarray]:
    """What each attribute classifier reads for ``records`` (clean images,
    inference mode, float64), and their attribute labels [n, attributes] (-1:
    unknown). One compiled forward pass per batch (TensorFlow or JAX)."""
    from anet_tf.data.pipeline import build_eval_dataset
    from anet_tf.model.anet import compiled_inference

    names = list(cfg.data.attributes)
    run = compiled_inference(net, lambda outputs: {n: keras.ops.cast(outputs[f"a_{n}"], "float32") for n in names})
    reads: dict[str, list] = {name: [] for name in names}
    labels = []
    for images, targets in build_eval_dataset(records, cfg.data, dataset.num_classes):
        out = run(images)
        for name in names:
            reads[name].append(np.asarray(out[name], np.float64))
        labels.append(np.asarray(targets["attributes"]))
    return (
        {n: _neck(net.get_layer(f"attribute_{n}"), np.concatenate(v)) for n, v in reads.items()},
        np.concatenate(labels),
    )


def refit_attribute_classifiers(net, cfg, dataset, *, c: float = 1.0) -> list[RefitResult]:
    """Refit every attribute branch's classifier of ``net`` on ``dataset.train``
    (see the module docstring); the kernels are assigned in place.

    Raises:
        ValueError: the network has no attribute branches (the baseline).
    """
    if cfg.model.variant == "baseline":
        raise ValueError("train.attribute_refit: the baseline has no attribute branches")
    reads, labels = classifier_inputs(net, cfg, dataset, dataset.train)
    results = []
    for index, name in enumerate(cfg.data.attributes):
        classifier = net.get_layer(f"attribute_{name}").classifier
        known = labels[:, index] >= 0
        x, y = reads[name][known], labels[known, index]
        if not len(y):
            continue  # no training image has this label: nothing to fit
        kernel = classifier.kernel
        before = np.asarray(keras.ops.convert_to_numpy(kernel), np.float64)
        W, iterations, converged = fit_softmax_regression(
            x, y, before.shape[1], c=c, init=before
        )
        kernel.assign(W.astype(kernel.dtype))
        results.append(
            RefitResult(
                attribute=name,
                images=int(len(y)),
                train_top1_before=float(np.mean(np.argmax(x @ before, axis=1) == y)),
                train_top1_after=float(np.mean(np.argmax(x @ W, axis=1) == y)),
                iterations=iterations,
                converged=converged,
            )
        )
    return results
