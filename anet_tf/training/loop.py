"""A training loop for strategies where Keras' ``fit`` does not work.

Under ``MultiWorkerMirroredStrategy`` Keras 3 ``fit`` fails (keras-team/keras#20585:
``Attempt to convert a value (PerReplica...)``, then ``Invalid reduction dimension``).
This loop runs the *same* ``ANetTrainer.train_step`` through ``strategy.run`` over a
dataset from ``distribute_datasets_from_function`` and drives the same callbacks, so
there is one definition of the step.

Each input pipeline (one per worker) builds its own P x K batches of the per-replica
batch size, seeded by the pipeline id, so every replica's batch is P x K and the
workers see different identities.
"""

from __future__ import annotations

import dataclasses

import keras
import tensorflow as tf


def sync_moving_statistics(net, strategy) -> None:
    """Average the non-trainable variables (BatchNorm moving statistics) over all
    replicas of all workers.

    Gradients are all-reduced, so trainable weights agree everywhere, but each
    replica updates its moving statistics from its own batches. Averaging them at
    every epoch end (PyTorch DDP broadcasts them instead) makes every worker hold
    the same model, so any worker's checkpoint is the model.
    """
    variables = list(net.non_trainable_variables)
    if not variables:
        return
    local = strategy.run(lambda: [tf.identity(v.value) for v in variables])
    for var, value in zip(variables, local):
        var.assign(strategy.reduce(tf.distribute.ReduceOp.MEAN, value, axis=None))


def custom_fit(
    trainer,
    strategy,
    dataset,
    data_cfg,
    *,
    epochs: int,
    initial_epoch: int,
    steps_per_epoch: int,
    callbacks,
    epoch_seed_offset: int = 0,
    verbose: int = 1,
):
    """Train ``trainer`` for ``epochs - initial_epoch`` epochs with ``strategy.run``."""
    from anet_tf.data.pipeline import build_train_dataset

    def dataset_fn(context: tf.distribute.InputContext):
        per_worker_cfg = dataclasses.replace(
            data_cfg, seed=data_cfg.seed + 100_003 * context.input_pipeline_id
        )
        local_replicas = context.num_replicas_in_sync // context.num_input_pipelines
        ds, _ = build_train_dataset(
            dataset,
            per_worker_cfg,
            num_replicas=local_replicas,
            epoch_seed_offset=epoch_seed_offset,
            steps_per_epoch=steps_per_epoch,
        )
        # build_train_dataset batches num_replicas x (P x K); split into per-replica
        # batches, which distribute_datasets_from_function hands out in turn.
        return ds.unbatch().batch(data_cfg.batch_size, drop_remainder=True)

    dist_ds = strategy.distribute_datasets_from_function(dataset_fn)
    iterator = iter(dist_ds)

    @tf.function
    def step(it):
        strategy.run(trainer.train_step, args=(next(it),))

    cb = keras.callbacks.CallbackList(list(callbacks), model=trainer)
    cb.on_train_begin()
    for epoch in range(initial_epoch, epochs):
        for tracker in trainer.metrics:
            tracker.reset_state()
        cb.on_epoch_begin(epoch)
        logs = {}
        for batch in range(steps_per_epoch):
            cb.on_train_batch_begin(batch)
            step(iterator)
            logs = {
                name: float(tracker.result())
                for name, tracker in trainer.trackers.items()
                if tracker.count.numpy() > 0
            }
            cb.on_train_batch_end(batch, logs)
            if trainer.stop_training:
                break
        if verbose:
            terms = " ".join(f"{k}={v:.4f}" for k, v in logs.items())
            print(f"epoch {epoch + 1}/{epochs}: {terms}")
        cb.on_epoch_end(epoch, logs)  # SyncMovingStatistics joins every worker first
        if trainer.stop_training:
            break
    cb.on_train_end()
