"""Atomic, resumable checkpoints: network weights, optimizer state and progress.

Layout inside ``RUN_DIR/checkpoints/``::

    epoch-0003/            one complete checkpoint per saved epoch
        net.weights.h5     the functional network's weights
        optimizer.npz      every optimizer variable (iterations, moments, lr)
        state.json         stage, epoch within the stage, global epoch, metrics
    last.json              pointer to the newest complete checkpoint
    best/                  the best checkpoint so far (hard links to its files)

A checkpoint is written into ``epoch-NNNN.tmp-<pid>/``, flushed to disk, renamed to
``epoch-NNNN/`` and only then published by atomically replacing ``last.json``
(``os.replace``). A kill at any moment (including ``kill -9`` during a save) therefore
leaves ``last.json`` pointing at a complete checkpoint; half-written folders are
ignored and cleaned up at the next save.
"""

from __future__ import annotations

import json
import os
import shutil
import zipfile
from dataclasses import asdict
from dataclasses import dataclass

import numpy as np

from anet_tf.io import atomic_write_text as _atomic_write_text
from anet_tf.io import damaged
from anet_tf.io import fsync_dir as _fsync_dir
from anet_tf.io import is_disk_full as _is_disk_full
from anet_tf.io import read_json_file
from anet_tf.io import remove_path as _remove
from anet_tf.training.run import DiskFullError

POINTER = "last.json"
BEST = "best"
WEIGHTS = "net.weights.h5"
OPTIMIZER = "optimizer.npz"
STATE = "state.json"


@dataclass
class TrainState:
    """Where training stands after a completed epoch.

    Args:
        stage: 1 or 2.
        stage_epoch: epochs completed in this stage.
        global_epoch: epochs completed over both stages (drives the lr schedule).
        best_score: best value of the selection score so far (higher is better).
        best_key: what the score is (e.g. "mAP" or "-total").
        metrics: the epoch's log row (numbers), from which a lost row is restored.
        train_seconds: wall time of training so far, summed over interrupted and
            resumed sessions (older checkpoints: 0).
        attribute_refit_c: the ``train.attribute_refit_c`` the attribute
            classifiers of these weights were refitted with after the last stage;
            None when they were not.
    """

    stage: int
    stage_epoch: int
    global_epoch: int
    best_score: float | None = None
    best_key: str = ""
    metrics: dict | None = None
    train_seconds: float = 0.0  # wall time spent training up to here, all sessions
    attribute_refit_c: float | None = None


def _mb(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


def folder_bytes(path: str) -> int:
    total = 0
    for dirpath, _, files in os.walk(path):
        for name in files:
            try:
                total += os.path.getsize(os.path.join(dirpath, name))
            except OSError:
                pass
    return total


def _link_or_copy(src: str, dst: str) -> str:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)
    return dst


def _fsync_tree(path: str) -> None:
    for dirpath, _, files in os.walk(path):
        for name in files:
            with open(os.path.join(dirpath, name), "rb") as fh:
                os.fsync(fh.fileno())
        _fsync_dir(dirpath)


class CheckpointManager:
    """Saves and restores complete training checkpoints of one run.

    Args:
        directory: ``RUN_DIR/checkpoints``.
        keep: how many epoch checkpoints to keep besides ``best/``.
    """

    def __init__(self, directory: str, keep: int = 2):
        self.directory = directory
        self.keep = keep
        os.makedirs(directory, exist_ok=True)

    # ---------------------------------------------------------------- saving
    def save(self, net, optimizer, state: TrainState, is_best: bool = False) -> str:
        """Write, publish (last.json) and, if ``is_best``, link as ``best/`` one
        checkpoint.

        Saving an epoch that already has a checkpoint (the attribute refit saves
        the newest epoch again) replaces it only once the new one is complete. Any
        failure, a kill or Ctrl-C at any step included, leaves a complete
        checkpoint published under ``last.json``: the new one when publishing
        finished, else the previous one; a full disk raises
        :class:`DiskFullError` (one line)."""
        self.recover()
        name = f"epoch-{state.global_epoch:04d}"
        final = os.path.join(self.directory, name)
        tmp = os.path.join(self.directory, f"{name}.tmp-{os.getpid()}")
        try:
            _remove(tmp)
            os.makedirs(tmp)
            net.save_weights(os.path.join(tmp, WEIGHTS))
            if optimizer is not None:
                np.savez(
                    os.path.join(tmp, OPTIMIZER),
                    **{f"v{i:05d}": v.numpy() for i, v in enumerate(optimizer.variables)},
                    __paths__=np.array([v.path for v in optimizer.variables]),
                )
            with open(os.path.join(tmp, STATE), "w", encoding="utf-8") as fh:
                json.dump(asdict(state), fh, indent=2)
            self._publish(tmp, final, state)
        except BaseException as exc:
            self._remove_own_temporaries()
            if _is_disk_full(exc):
                raise DiskFullError(self._disk_full_message(name, net, optimizer, False)) from None
            raise
        if is_best:
            try:
                self._replace_with_links(final, os.path.join(self.directory, BEST))
            except BaseException as exc:
                self.recover()
                self._remove_own_temporaries()
                if _is_disk_full(exc):
                    raise DiskFullError(self._disk_full_message(name, net, optimizer, True)) from None
                raise
        self._cleanup(current=name)
        return final

    def _remove_own_temporaries(self) -> None:
        for d in os.listdir(self.directory):
            if d.endswith(f".tmp-{os.getpid()}"):
                _remove(os.path.join(self.directory, d))

    def _replace_with_links(self, source: str, target: str) -> None:
        """Make ``target`` an atomic copy of the checkpoint folder ``source`` made
        of hard links (no second copy of the bytes on disk: checkpoint files are
        never rewritten in place), or of copies where links are not possible."""
        tmp = f"{target}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(source, tmp, copy_function=_link_or_copy)
        _fsync_tree(tmp)
        old = f"{target}.old-{os.getpid()}"
        if os.path.exists(target):
            os.replace(target, old)
        os.replace(tmp, target)
        shutil.rmtree(old, ignore_errors=True)
        _fsync_dir(self.directory)

    def _disk_full_message(self, name: str, net, optimizer, published: bool) -> str:
        try:
            latest = self.latest()
        except ValueError:  # a damaged pointer: say what matters here, the disk
            latest = None
        if latest is not None and os.path.isdir(latest[0]) and latest[0] != os.path.join(self.directory, name):
            needed = folder_bytes(latest[0])
        else:  # no earlier checkpoint to measure: the arrays' own size
            variables = list(net.weights) + (list(optimizer.variables) if optimizer is not None else [])
            needed = sum(int(np.prod(v.shape)) * np.dtype(v.dtype).itemsize for v in variables)
        free = shutil.disk_usage(self.directory).free
        if published:
            kept = f"{name} was saved but best/ could not be updated"
        elif latest is not None and os.path.basename(latest[0]) == name:
            kept = f"{name} as it was before this save is kept"
        elif latest is not None:
            kept = f"the previous checkpoint ({os.path.basename(latest[0])}) is kept"
        else:
            kept = "no checkpoint had been written yet"
        run_dir = os.path.dirname(os.path.abspath(self.directory))
        return (
            f"{self.directory}: no space left on the device while saving {name} "
            f"(a checkpoint needs about {_mb(needed)}, {_mb(free)} free); {kept}; free "
            f"space, then continue with anet-tf fit --resume {run_dir}"
        )

    def remove_unpublished(self) -> list[str]:
        """Remove epoch folders newer than the published checkpoint (a save that was
        interrupted after its rename), so they are never mistaken for progress."""
        latest = self.latest()
        newest = latest[1].global_epoch if latest else 0
        removed = []
        for d in os.listdir(self.directory):
            if d.startswith("epoch-") and ".tmp-" not in d:
                try:
                    number = int(d.split("-", 1)[1])
                except ValueError:
                    continue
                if number > newest:
                    _remove(os.path.join(self.directory, d))
                    removed.append(d)
        return removed

    def snapshot(self, name: str) -> str | None:
        """Copy the newest complete checkpoint to ``directory/name`` (atomically; an
        older copy is replaced), where pruning never removes it. Used to keep the
        end of stage 1, which ``anet-tf ablate`` shares between ANet with and
        without AC. Returns the copy, or None when there is no checkpoint yet."""
        latest = self.latest()
        if latest is None:
            return None
        target = os.path.join(self.directory, name)
        self._replace_with_links(latest[0], target)
        return target

    def start_from(self, source: str) -> str:
        """Make a complete checkpoint folder (e.g. another run's ``stage1`` snapshot)
        this run's newest checkpoint, so that resuming continues from it."""
        state = self.read_state(source)
        name = f"epoch-{state.global_epoch:04d}"
        final = os.path.join(self.directory, name)
        tmp = f"{final}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(source, tmp)
        self._publish(tmp, final, state)
        return final

    def _publish(self, tmp: str, final: str, state: TrainState) -> None:
        """Flush the complete checkpoint folder ``tmp``, rename it to ``final`` and
        point ``last.json`` at it: from here on it is the run's newest checkpoint.

        An existing ``final`` (the same epoch saved again) is first renamed to
        ``final.old-<pid>`` and removed only after ``last.json`` is written; when
        anything fails before that, the old folder is put back, so ``last.json``
        never names a missing or half-replaced folder. A kill between the renames
        leaves only ``final.old-<pid>``, which :meth:`recover` puts back."""
        _fsync_tree(tmp)
        pointer = os.path.join(self.directory, POINTER)
        record = {"checkpoint": os.path.basename(final), **asdict(state)}
        old = None
        if os.path.lexists(final):
            old = f"{final}.old-{os.getpid()}"
            _remove(old)
            os.replace(final, old)
        try:
            os.replace(tmp, final)
            _fsync_dir(self.directory)
            _atomic_write_text(pointer, json.dumps(record, indent=2))
        except BaseException:
            if not self._pointer_is(record):  # not published: undo
                if old is not None:
                    if os.path.lexists(final):
                        os.replace(final, tmp)
                    os.replace(old, final)
                    old = None
                elif os.path.lexists(final):
                    _remove(final)
                _fsync_dir(self.directory)
            raise
        finally:
            if old is not None and os.path.lexists(final):
                _remove(old)

    def _pointer_is(self, record: dict) -> bool:
        try:
            with open(os.path.join(self.directory, POINTER), encoding="utf-8") as fh:
                return json.load(fh) == json.loads(json.dumps(record))
        except (OSError, ValueError):
            return False

    def recover(self) -> list[str]:
        """Put back what a kill between two renames left aside: the folder
        ``last.json`` names, or ``best/``, found only as ``<name>.old-<pid>``.
        Returns the names put back."""
        restored = []
        wanted = [BEST]
        pointer = os.path.join(self.directory, POINTER)
        if os.path.exists(pointer):
            try:
                with open(pointer, encoding="utf-8") as fh:
                    wanted.append(str(json.load(fh)["checkpoint"]))
            except (OSError, ValueError, KeyError, TypeError):
                pass  # latest() names a damaged pointer
        for name in wanted:
            target = os.path.join(self.directory, name)
            if os.path.lexists(target):
                continue
            olds = sorted(d for d in os.listdir(self.directory) if d.startswith(f"{name}.old-"))
            if olds:
                os.replace(os.path.join(self.directory, olds[-1]), target)
                _fsync_dir(self.directory)
                restored.append(name)
        return restored

    def _cleanup(self, current: str) -> None:
        epochs = sorted(
            d
            for d in os.listdir(self.directory)
            if d.startswith("epoch-") and ".tmp-" not in d
        )
        for d in epochs[: -self.keep] if self.keep > 0 else []:
            if d != current:
                shutil.rmtree(os.path.join(self.directory, d), ignore_errors=True)
        self.recover()
        for d in os.listdir(self.directory):
            if ".tmp-" in d or ".old-" in d:
                _remove(os.path.join(self.directory, d))

    # ------------------------------------------------------------- restoring
    def latest(self) -> tuple[str, TrainState] | None:
        """The newest complete checkpoint folder and its state (from the folder's
        own ``state.json``), or None when nothing was published yet.

        Raises:
            DamagedFileError: ``last.json`` or the state it leads to is damaged.
        """
        pointer = os.path.join(self.directory, POINTER)
        if not os.path.exists(pointer):
            return None
        self.recover()
        newest = self._newest_folder()
        repair = (
            f'write {{"checkpoint": "{newest}"}} into it (the newest checkpoint folder)'
            if newest
            else "no checkpoint folder is left to point it at"
        )
        info = read_json_file(pointer, advice=repair)
        if not isinstance(info, dict) or not isinstance(info.get("checkpoint"), str):
            raise damaged(pointer, 'no "checkpoint" entry', repair)
        name = info["checkpoint"]
        path = os.path.join(self.directory, name)
        if os.path.basename(name) != name or not os.path.isdir(path):
            raise damaged(pointer, f"it names {name!r}, which is not a checkpoint folder here", repair)
        return path, self.read_state(path)

    def _newest_folder(self) -> str | None:
        epochs = sorted(
            d
            for d in os.listdir(self.directory)
            if d.startswith("epoch-") and "." not in d and os.path.isfile(os.path.join(self.directory, d, STATE))
        )
        return epochs[-1] if epochs else None

    @staticmethod
    def read_state(path: str) -> TrainState:
        """The :class:`TrainState` of a checkpoint folder.

        Raises:
            DamagedFileError: its ``state.json`` is missing or damaged.
        """
        file = os.path.join(path, STATE)
        if not os.path.isfile(file):
            raise damaged(file, "missing", other_checkpoints_advice(path))
        info = read_json_file(file, advice=other_checkpoints_advice(path))
        try:
            return TrainState(**info)
        except TypeError as exc:
            raise damaged(file, f"not a training state: {exc}", other_checkpoints_advice(path)) from None

    @staticmethod
    def restore(path: str, net, optimizer=None) -> TrainState:
        """Load weights (and optimizer state, if given) from a checkpoint folder.

        The optimizer must already be built over the same variables as when it was
        saved (the trainer builds it over the stage-1 trainable variables).

        Raises:
            DamagedFileError: a file of the checkpoint cannot be read.
            ValueError: the checkpoint belongs to another network or optimizer.
        """
        state = CheckpointManager.read_state(path)
        load_net_weights(net, os.path.join(path, WEIGHTS))
        opt_file = os.path.join(path, OPTIMIZER)
        if optimizer is not None and os.path.exists(opt_file):
            data = _read_npz(opt_file)
            saved_paths = list(data["__paths__"])
            variables = optimizer.variables
            if len(saved_paths) != len(variables):
                saved_scaled = any("loss_scale" in str(p) for p in saved_paths)
                scaled = any("loss_scale" in v.path for v in variables)
                hint = "was it saved by another model?"
                if saved_scaled != scaled:
                    # Mixed precision is float16 with loss scaling on TensorFlow and
                    # bfloat16 without on JAX: the optimizers differ by those slots.
                    hint = (
                        "one has loss-scale variables and the other not: a "
                        "mixed-precision run continues on the Keras backend it was "
                        "trained on (float16 with loss scaling on TensorFlow, bfloat16 "
                        "without on JAX)"
                    )
                raise ValueError(
                    f"{opt_file}: optimizer state has {len(saved_paths)} variables, "
                    f"the optimizer has {len(variables)}; {hint}"
                )
            for i, var in enumerate(variables):
                value = data.get(f"v{i:05d}")
                if value is None:
                    raise damaged(opt_file, f"variable v{i:05d} is missing", other_checkpoints_advice(path))
                if tuple(value.shape) != tuple(var.shape):
                    raise ValueError(
                        f"{opt_file}: optimizer variable {saved_paths[i]} has shape "
                        f"{value.shape}, expected {tuple(var.shape)}"
                    )
                var.assign(value)
        return state


def _read_npz(path: str) -> dict:
    """Every array of an ``.npz`` file, or :class:`DamagedFileError`."""
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as exc:
        raise damaged(path, str(exc) or type(exc).__name__, other_checkpoints_advice(path)) from None
    if "__paths__" not in arrays:
        raise damaged(path, "it lists no variables (__paths__)", other_checkpoints_advice(path))
    return arrays


def load_net_weights(net, weights: str) -> None:
    """``net.load_weights(weights)``; a file that is not readable HDF5 (truncated,
    overwritten, empty) is :class:`DamagedFileError` naming it and the run's other
    checkpoints."""
    try:
        net.load_weights(weights)
    except OSError as exc:
        if not os.path.isfile(weights):
            raise FileNotFoundError(f"checkpoint weights not found: {weights}") from None
        what = str(exc).removeprefix("Unable to synchronously open file ").strip("() ")
        raise damaged(weights, what or "not an HDF5 file", other_checkpoints_advice(weights)) from None


def other_checkpoints_advice(path: str) -> str:
    """What to do about a damaged file in a checkpoint folder: restore it, or use
    one of the run's other complete checkpoints (named)."""
    folder = path if os.path.isdir(path) else os.path.dirname(path)
    directory = os.path.dirname(os.path.abspath(folder))
    own = os.path.basename(os.path.abspath(folder))
    others = []
    if os.path.isdir(directory):
        others = sorted(
            d
            for d in os.listdir(directory)
            if d != own
            and "." not in d
            and os.path.isfile(os.path.join(directory, d, WEIGHTS))
        )
    if not others:
        return "restore it from a backup; the run has no other checkpoint"
    return (
        "restore it from a backup, or use another checkpoint of the run with "
        f"--checkpoint {os.path.join(directory, others[-1])} (there are: {', '.join(others)})"
    )


def checkpoint_weights(path: str) -> str:
    """The weights file of a checkpoint folder, or ``path`` itself when it is the
    file.

    Raises:
        FileNotFoundError: there is no such file.
    """
    weights = os.path.join(path, WEIGHTS) if os.path.isdir(path) else path
    if not os.path.isfile(weights):
        raise FileNotFoundError(f"checkpoint weights not found: {weights}")
    return weights
