"""A trained run as it is used: :class:`Run`, which checkpoint and weights file a
run folder, checkpoint folder or weights file stands for, the trained network
rebuilt from the run alone (its config and ``network.json``, no dataset, no
trainer), and whether the run is finished.

Every command that needs a run's network (``anet_tf.load``, ``export --run``,
``evaluate --run``, ``visualize activation``, the job after training) gets it from
:meth:`Run.network`.

The run folder's layout is :mod:`anet_tf.training.run`'s, a checkpoint folder's
:mod:`anet_tf.training.checkpoint`'s; this module joins the two (``checkpoint``
imports ``run``, never the other way round).
"""

from __future__ import annotations

import os
import sys

from anet_tf.config import Config
from anet_tf.io import damaged
from anet_tf.training.checkpoint import BEST
from anet_tf.training.checkpoint import POINTER
from anet_tf.training.checkpoint import WEIGHTS
from anet_tf.training.checkpoint import CheckpointManager
from anet_tf.training.checkpoint import TrainState
from anet_tf.training.checkpoint import checkpoint_weights
from anet_tf.training.run import CHECKPOINTS
from anet_tf.training.run import CONFIG_FILE
from anet_tf.training.run import METRICS_FILE
from anet_tf.training.run import NETWORK_FILE
from anet_tf.training.run import NetworkDescription
from anet_tf.training.run import describe_network
from anet_tf.training.run import is_run
from anet_tf.training.run import load_network_description
from anet_tf.training.run import load_run_config
from anet_tf.training.run import planned_epochs
from anet_tf.training.run import save_network_description


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


class Run:
    """A trained run: its folder, config, network description and checkpoints.

    Args:
        source: a run directory (used through its ``checkpoints/best``, else its
            newest complete checkpoint), a checkpoint folder or a
            ``net.weights.h5`` file inside a run.

    Raises:
        FileNotFoundError: no such path, or not inside a run.
    """

    def __init__(self, source: str):
        if not os.path.exists(source):
            raise FileNotFoundError(f"{source}: no such run directory or checkpoint")
        if os.path.isdir(source) and is_run(source):
            self.dir, self.checkpoint = source, None
        else:
            self.dir, self.checkpoint = find_run_dir(source), source
        self._config: Config | None = None
        self._description: NetworkDescription | None = None

    @classmethod
    def of_weights(cls, weights: str, cfg: Config, dataset) -> Run:
        """A weights file that is in no run folder (a converted or copied
        ``net.weights.h5``), described by ``cfg`` and the dataset it was trained
        on: ``evaluate --config C --checkpoint W``."""
        run = cls.__new__(cls)
        run.dir, run.checkpoint = None, weights
        run._config = cfg
        run._description = describe_network(cfg, dataset)
        return run

    @property
    def config(self) -> Config:
        """The run's config (``config.yaml``)."""
        if self._config is None:
            self._config = load_run_config(self.dir)
        return self._config

    def weights(self) -> str:
        """The weights file the run is used through."""
        if self.checkpoint is not None:
            return checkpoint_weights(self.checkpoint)
        return checkpoint_weights(run_checkpoint(self.dir))

    def description(self) -> NetworkDescription:
        """The run's :class:`~anet_tf.training.run.NetworkDescription`. A run
        written before runs kept one is described from its dataset once, and the
        description is written into it (said in one line on stderr), so that it
        loads without the dataset from then on.

        Raises:
            DamagedFileError: ``network.json`` is damaged.
            ConfigError, DataError: an old run whose dataset is not there.
        """
        if self._description is None:
            found = load_network_description(self.dir)
            self._description = found or self._describe_from_dataset()
        return self._description

    def _describe_from_dataset(self) -> NetworkDescription:
        from anet_tf.data.readers import load_dataset

        description = describe_network(self.config, load_dataset(self.config, check_images=False))
        path = os.path.join(self.dir, NETWORK_FILE)
        try:
            save_network_description(self.dir, description)
            note = f"wrote {path} from the run's dataset: the run now loads without it"
        except OSError as exc:
            note = (
                f"{self.dir} has no {NETWORK_FILE} (written before runs described their "
                f"network) and it cannot be written ({exc.strerror or exc}); it was read "
                "from the dataset: copy the run to a writable folder and load it once "
                "to make it portable"
            )
        print(f"[anet-tf] {note}", file=sys.stderr)
        return description

    def network(self, checkpoint: str | None = None):
        """The run's Keras network with the weights of ``checkpoint`` (a checkpoint
        folder or weights file; default :meth:`weights`), rebuilt from the config
        and the description alone: no dataset is read, no trainer built."""
        from anet_tf.model import build_model_from_config
        from anet_tf.training.checkpoint import load_net_weights

        cfg, description = self.config, self.description()
        if list(description.attribute_names) != list(cfg.data.attributes):
            raise damaged(
                os.path.join(self.dir, NETWORK_FILE),
                f"its attributes {list(description.attribute_names)} are not the "
                f"config's data.attributes {list(cfg.data.attributes)}",
                "remove it to describe the run again from its dataset",
            )
        net = build_model_from_config(
            cfg, description.num_ids, description.num_classes, load_pretrained=False
        )
        weights = checkpoint_weights(checkpoint) if checkpoint else self.weights()
        load_net_weights(net, weights)
        return net

    def dataset(self, check_images: bool = False):
        """The run's dataset (``data.root`` of its config), or None where it is not
        there any more (a run moved to another machine)."""
        from anet_tf.data.readers import check_data_root
        from anet_tf.data.readers import load_dataset

        try:
            check_data_root(self.config)
        except ValueError:
            return None
        return load_dataset(self.config, check_images=check_images)


def newest_epoch(run_dir: str) -> int | None:
    """The global epoch of the run's newest complete checkpoint, or None (no
    checkpoint yet, or its pointer unreadable)."""
    try:
        latest = CheckpointManager(os.path.join(run_dir, CHECKPOINTS)).latest()
    except (OSError, ValueError):
        return None
    return None if latest is None else latest[1].global_epoch


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
