"""A run's checkpoints as a run is used: which checkpoint and weights file a run
folder, checkpoint folder or weights file stands for, the trained network loaded
from them, and whether the run is finished.

The run folder's layout is :mod:`anet_tf.training.run`'s, a checkpoint folder's
:mod:`anet_tf.training.checkpoint`'s; this module joins the two (``checkpoint``
imports ``run``, never the other way round).
"""

from __future__ import annotations

import os

from anet_tf.config import Config
from anet_tf.training.checkpoint import BEST
from anet_tf.training.checkpoint import POINTER
from anet_tf.training.checkpoint import WEIGHTS
from anet_tf.training.checkpoint import CheckpointManager
from anet_tf.training.checkpoint import TrainState
from anet_tf.training.checkpoint import checkpoint_weights
from anet_tf.training.run import CHECKPOINTS
from anet_tf.training.run import CONFIG_FILE
from anet_tf.training.run import METRICS_FILE
from anet_tf.training.run import is_run
from anet_tf.training.run import load_run_config
from anet_tf.training.run import planned_epochs


def run_checkpoint(run_dir: str) -> str:
    """The checkpoint folder a run is used through: ``checkpoints/best`` when it
    exists, else the newest complete checkpoint.

    Raises:
        FileNotFoundError: the run has no checkpoint yet.
    """
    directory = os.path.join(run_dir, CHECKPOINTS)
    best = os.path.join(directory, BEST)
    if os.path.isfile(os.path.join(best, WEIGHTS)):
        return best
    latest = CheckpointManager(directory).latest() if os.path.isdir(directory) else None
    if latest is None:
        raise FileNotFoundError(
            f"{run_dir}: the run has no checkpoint yet ({CHECKPOINTS}/{BEST} or {POINTER})"
        )
    return latest[0]


def find_run_dir(path: str) -> str:
    """The run directory of a checkpoint folder or weights file: the nearest parent
    (up to three levels) holding the run's config."""
    probe = os.path.abspath(path)
    for _ in range(4):
        if is_run(probe):
            return probe
        probe = os.path.dirname(probe)
    raise FileNotFoundError(
        f"{path}: no {CONFIG_FILE} in it or in its parents; a checkpoint must sit "
        f"in a run directory (RUN/{CHECKPOINTS}/epoch-NNNN/{WEIGHTS})"
    )


def resolve_weights(source: str) -> tuple[str, str]:
    """(run_dir, weights file) of a run directory, checkpoint folder or weights file.

    A run directory gives its ``checkpoints/best`` when it exists, else its last
    complete checkpoint.
    """
    if not os.path.exists(source):
        raise FileNotFoundError(f"{source}: no such run directory or checkpoint")
    if os.path.isdir(source) and is_run(source):
        return source, checkpoint_weights(run_checkpoint(source))
    return find_run_dir(source), checkpoint_weights(source)


def load_trained(source: str):
    """(net, cfg, dataset) of a run directory or checkpoint, weights loaded.

    The dataset is read for its attribute class names and training images (the
    int8 calibration set); a synthetic dataset must exist at ``data.root``.
    """
    from anet_tf.data.readers import load_dataset
    from anet_tf.training.checkpoint import load_net_weights
    from anet_tf.training.fit import build_trainer

    run_dir, weights = resolve_weights(source)
    cfg = load_run_config(run_dir)
    dataset = load_dataset(cfg)
    trainer = build_trainer(
        cfg, len(dataset.train_pids()), dataset.num_classes, load_pretrained=False
    )
    load_net_weights(trainer.net, weights)
    return trainer.net, cfg, dataset


def finished_state(cfg: Config, run_dir: str) -> TrainState | None:
    """The newest checkpoint's state when the run is finished (every planned epoch
    trained and metrics.json written), else None."""
    directory = os.path.join(run_dir, CHECKPOINTS)
    if not os.path.isfile(os.path.join(run_dir, METRICS_FILE)) or not os.path.isdir(directory):
        return None
    latest = CheckpointManager(directory).latest()
    if latest is None or latest[1].global_epoch < planned_epochs(cfg):
        return None
    return latest[1]
