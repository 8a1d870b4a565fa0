"""Does a trained model's attribute branch read what its features carry?

For one attribute of a trained run (VAN or ANet), prints

1. the branch's own top-1 (its classifier, inference mode) on the training images
   and on the test images (query + gallery, labelled);
2. a linear probe (logistic regression, fitted to convergence on the clean
   training images) on three features of the same network: GAP(F) (the backbone),
   GAP(A_i) (after the branch's SE attention) and a_i (the branch's s_a-d FC
   output, what its classifier reads);
3. with ``--heads``: a fresh linear head (the paper's FC(s_a) + classifier) trained
   on the cached GAP(A_i) of the training images with Amsgrad, once with the
   project's P x K batches (P identities, K images each) and once with uniformly
   random batches of the same size, test top-1 after 240 / 480 / 960 / 2000 steps.

If (2) is far above (1), the features carry the attribute and the branch's head
does not read it: a question of how the head is trained, not of the backbone.
(3) then shows how many steps a linear head needs on those fixed features.

    python benchmarks/attribute_head_probe.py --run runs/default --attribute type --heads

Needs scikit-learn for the probes (not a project dependency). docs/reproduction.md
(section 1f) has the numbers it printed.
"""

from __future__ import annotations

import argparse

import numpy as np


def _features(net, cfg, dataset, records, attribute):
    """GAP(F), GAP(A_i), a_i, the branch's logits and the labels of ``records``."""
    from anet_tf.data.pipeline import build_eval_dataset

    index = cfg.data.attributes.index(attribute)
    backbone = net.get_layer("backbone")
    branch = net.get_layer(f"attribute_{attribute}")
    out = {k: [] for k in ("gap_F", "gap_A", "a", "logits", "y")}
    for images, targets in build_eval_dataset(records, cfg.data, dataset.num_classes):
        F = backbone(images, training=False)
        A, a, logits = branch(F, training=False)
        out["gap_F"].append(np.mean(np.asarray(F), axis=(1, 2)))
        out["gap_A"].append(np.mean(np.asarray(A), axis=(1, 2)))
        out["a"].append(np.asarray(a))
        out["logits"].append(np.asarray(logits))
        out["y"].append(targets["attributes"].numpy()[:, index])
    return {k: np.concatenate(v) for k, v in out.items()}


def _train_head(train, test, pids, *, units, classes, batch, k, lr, pk, seed=0):
    """Test top-1 of a fresh FC(units) + classifier trained on cached features."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    rng = np.random.default_rng(seed)
    head = keras.Sequential(
        [keras.layers.Dense(units), keras.layers.Dense(classes, use_bias=False)]
    )
    head(train["gap_A"][:2])
    optimizer = keras.optimizers.Adam(lr, amsgrad=True)
    by_pid = {p: np.flatnonzero(pids == p) for p in np.unique(pids)}
    keys = list(by_pid)

    def batch_indices():
        if not pk:
            return rng.choice(len(pids), batch, replace=False)
        chosen = rng.choice(keys, batch // k, replace=False)
        return np.concatenate([rng.choice(by_pid[p], k, replace=len(by_pid[p]) < k) for p in chosen])

    @tf.function
    def step(x, y):
        known = tf.cast(y >= 0, tf.float32)
        with tf.GradientTape() as tape:
            per = tf.nn.sparse_softmax_cross_entropy_with_logits(tf.maximum(y, 0), head(x))
            loss = tf.reduce_sum(per * known) / tf.maximum(tf.reduce_sum(known), 1.0)
        grads = tape.gradient(loss, head.trainable_variables)
        optimizer.apply_gradients(zip(grads, head.trainable_variables))

    known = test["y"] >= 0
    scores = {}
    for i in range(1, 2001):
        idx = batch_indices()
        step(train["gap_A"][idx], train["y"][idx])
        if i in (240, 480, 960, 2000):
            pred = np.argmax(np.asarray(head(test["gap_A"][known])), axis=1)
            scores[i] = float(np.mean(pred == test["y"][known]))
    return scores


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", required=True, help="run folder or checkpoint (VAN or ANet)")
    p.add_argument("--attribute", default="type")
    p.add_argument("--heads", action="store_true", help="also train fresh heads (3)")
    args = p.parse_args()

    try:
        from sklearn.linear_model import LogisticRegression
    except ImportError as exc:
        raise SystemExit(f"this benchmark needs scikit-learn ({exc})") from exc
    from anet_tf.export import load_trained

    try:
        net, cfg, dataset = load_trained(args.run)
    except (FileNotFoundError, ValueError) as exc:
        raise SystemExit(f"attribute_head_probe: error: {exc}") from None
    if args.attribute not in cfg.data.attributes:
        raise SystemExit(f"--attribute {args.attribute!r}: the run has {cfg.data.attributes}")
    train = _features(net, cfg, dataset, dataset.train, args.attribute)
    test = _features(net, cfg, dataset, list(dataset.query) + list(dataset.gallery), args.attribute)
    m, mt = train["y"] >= 0, test["y"] >= 0
    print(f"run {args.run}, attribute {args.attribute}: {m.sum()} training / {mt.sum()} test images with a label")

    def top1(split, mask):
        return 100 * np.mean(np.argmax(split["logits"][mask], axis=1) == split["y"][mask])

    print("| feature | fitted by | train top-1 | test top-1 |\n|---|---|---|---|")
    print(f"| a_i | the branch's own classifier | {top1(train, m):.1f} | {top1(test, mt):.1f} |")
    for key in ("gap_F", "gap_A", "a"):
        probe = LogisticRegression(max_iter=5000, C=1.0).fit(train[key][m], train["y"][m])
        print(
            f"| {key} | linear probe (logistic regression, C=1) | "
            f"{100 * probe.score(train[key][m], train['y'][m]):.1f} | "
            f"{100 * probe.score(test[key][mt], test['y'][mt]):.1f} |"
        )
    if args.heads:
        pids = np.array([r.pid for r in dataset.train])[m]
        kept = {k: v[m] for k, v in train.items()}
        classes = int(dataset.num_classes[cfg.data.attributes.index(args.attribute)])
        for pk in (True, False):
            scores = _train_head(
                kept, test, pids, units=cfg.model.s_a, classes=classes,
                batch=cfg.data.batch_size, k=cfg.data.num_instances, lr=cfg.train.lr, pk=pk,
            )
            kind = f"P x K batches ({cfg.data.batch_size // cfg.data.num_instances} x {cfg.data.num_instances})" if pk else "random batches"
            print(f"fresh FC({cfg.model.s_a}) + classifier on cached GAP(A_i), {kind}, lr {cfg.train.lr:g}: "
                  + ", ".join(f"step {s}: {100 * v:.1f}" for s, v in scores.items()))


if __name__ == "__main__":
    main()
