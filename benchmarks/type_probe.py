"""How far can vehicle *type* generalise on the synthetic data at all?

Trains a plain type classifier (the default config's backbone, GAP, BatchNorm, one
dense layer; no ReID loss, no attribute branch) from scratch on the training split
with the project's own P x K batches and augmentation, and prints the type top-1 on
the training images and on the test vehicles (query + gallery, labelled images)
every ``--every`` steps. It is the upper reference for the type branch of ANet /
VAN trained for the same number of steps: what a network of this size learns about
type from these training vehicles when type is all it is asked.

    python benchmarks/type_probe.py --data datasets/synthetic --steps 480

docs/reproduction.md (section 1c) has the numbers it printed.
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default="datasets/synthetic", help="synthetic dataset folder")
    p.add_argument("--config", default="synthetic")
    p.add_argument("--steps", type=int, default=480, help="default fit: 16 epochs x 30")
    p.add_argument("--every", type=int, default=60)
    p.add_argument("--threads", type=int, default=0, help="TF intra-op threads (0: all)")
    p.add_argument("--set", dest="overrides", action="append", default=[], help="config override")
    args = p.parse_args()

    import keras
    import tensorflow as tf

    if args.threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    from anet_tf.config import load_config
    from anet_tf.data.pipeline import build_eval_dataset
    from anet_tf.data.pipeline import build_train_dataset
    from anet_tf.data.readers import load_dataset
    from anet_tf.model.backbone import build_backbone

    cfg = load_config(args.config, [f"data.root={args.data}", *args.overrides])
    ds = load_dataset(cfg)
    type_index = list(cfg.data.attributes).index("type")
    keras.utils.set_random_seed(cfg.train.seed)
    train, _ = build_train_dataset(ds, cfg.data)
    h, w = cfg.data.image_size
    backbone = build_backbone(
        cfg.model.backbone, base_width=cfg.model.base_width,
        last_stride=cfg.model.last_stride, input_shape=(h, w, 3),
    )
    x = keras.Input((h, w, 3))
    g = keras.layers.BatchNormalization()(keras.layers.GlobalAveragePooling2D()(backbone(x)))
    model = keras.Model(x, keras.layers.Dense(ds.num_classes[type_index])(g))
    optimizer = keras.optimizers.Adam(cfg.train.lr, amsgrad=True)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    @tf.function
    def step(images, labels):
        with tf.GradientTape() as tape:
            logits = model(images, training=True)
            known = labels >= 0
            loss = loss_fn(tf.boolean_mask(labels, known), tf.boolean_mask(logits, known))
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    def accuracy(records) -> float:
        hits = total = 0
        for images, targets in build_eval_dataset(records, cfg.data, ds.num_classes):
            pred = np.argmax(model(images, training=False).numpy(), 1)
            truth = targets["attributes"].numpy()[:, type_index]
            hits += int((pred[truth >= 0] == truth[truth >= 0]).sum())
            total += int((truth >= 0).sum())
        return hits / max(total, 1)

    t0 = time.perf_counter()
    test = list(ds.query) + list(ds.gallery)
    for i, (images, targets) in enumerate(train.take(args.steps), 1):
        loss = step(images, targets["attributes"][:, type_index])
        if i % args.every == 0 or i == args.steps:
            print(
                f"step {i}: loss {float(loss):.3f}, type top-1 train {100 * accuracy(ds.train):.1f}%"
                f", test {100 * accuracy(test):.1f}% ({time.perf_counter() - t0:.0f} s)",
                flush=True,
            )


if __name__ == "__main__":
    main()
