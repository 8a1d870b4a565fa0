"""The run folder: its layout, its config, its log, its lock.

A run folder (``anet-tf fit --out RUN``) holds::

    config.yaml       the resolved config (CONFIG_FILE), written once at the start
    network.json      what rebuilding the network needs beyond the config: training
                      identities, attribute classes, input size, who wrote it
                      (NETWORK_FILE, :class:`NetworkDescription`), written at the start
    teacher.json      the teacher of a distilled run (``anet-tf distill``): its run,
                      weights file and the weights' SHA-256 (TEACHER_FILE,
                      :mod:`anet_tf.training.distill`), written before training
    changes.yaml      settings changed on ``fit --resume RUN --set k=v`` (CHANGES_FILE)
    lock              held (flock) by the process fitting in the folder: training,
                      refit, evaluation and export (LOCK_FILE)
    log.csv           one row per completed epoch (LOG_FILE)
    checkpoints/      complete checkpoints, see :mod:`anet_tf.training.checkpoint`
                      (which one a run is used through: :mod:`anet_tf.training.run_checkpoints`)
    tensorboard/      event files
    metrics.json      the final evaluation (METRICS_FILE)
    export/           the SavedModel, when exported

This module is the one place that knows these names and how they are written, so the
rules that keep a run intact are in one place:

* one process fits (trains, evaluates, exports) in a folder at a time (:class:`RunLock`, a kernel ``flock``, so
  a lock left by ``kill -9`` is free again and is taken over with a note);
* a log row is written only after its checkpoint is published, and on resume the log
  is reconciled with the checkpoint (:func:`reconcile_log`), so a kill at any point
  leaves exactly one row per completed epoch;
* temporary files of an interrupted save are removed on start and resume
  (:func:`remove_stale_temporaries`).
"""

from __future__ import annotations

import csv
import datetime
import json
import os
from dataclasses import dataclass

import yaml

from anet_tf.config import Config
from anet_tf.config import config_from_dict
from anet_tf.io import DamagedFileError
from anet_tf.io import FileLock
from anet_tf.io import LockHeldError
from anet_tf.io import atomic_file
from anet_tf.io import atomic_write_text
from anet_tf.io import is_disk_full
from anet_tf.io import read_json_file
from anet_tf.io import read_yaml_file
from anet_tf.io import remove_path

CONFIG_FILE = "config.yaml"
CHANGES_FILE = "changes.yaml"
LOCK_FILE = "lock"
LOG_FILE = "log.csv"
METRICS_FILE = "metrics.json"
CHECKPOINTS = "checkpoints"
NETWORK_FILE = "network.json"
TEACHER_FILE = "teacher.json"
TENSORBOARD = "tensorboard"
EXPORT = "export"
NETWORK_FORMAT = "anet-tf-network/1"

# The log's leading columns; the loss terms of the variant and eval_* follow.
LOG_FIXED = ["stage", "epoch", "global_epoch", "lr", "epoch_time_s", "images_per_s"]


class RunFolderError(RuntimeError):
    """A run folder cannot be used as asked; the message is one line for the user."""


class DiskFullError(RunFolderError):
    """No space left while writing into the run folder; what was there is intact."""


def is_run(run_dir: str) -> bool:
    return os.path.isfile(os.path.join(run_dir, CONFIG_FILE))


# ------------------------------------------------------------------ the config
def save_run_config(cfg: Config, run_dir: str) -> str:
    """Write the resolved config (data.root made absolute, so the run can be used
    from any working directory)."""
    os.makedirs(run_dir, exist_ok=True)
    path = os.path.join(run_dir, CONFIG_FILE)
    raw = cfg.to_dict()
    raw["data"]["root"] = os.path.abspath(cfg.data.root)
    text = f"# resolved config of this run (from {cfg.source})\n" + yaml.safe_dump(
        raw, sort_keys=False
    )
    atomic_write_text(path, text)
    return path


def load_run_config(run_dir: str) -> Config:
    path = os.path.join(run_dir, CONFIG_FILE)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{run_dir} is not a run directory: {CONFIG_FILE} is missing")
    raw = read_yaml_file(
        path, advice="it is written once when the run starts: restore it from a backup"
    )
    if not isinstance(raw, dict):
        raise DamagedFileError(f"{path} is damaged (not a mapping of config sections)")
    return config_from_dict(raw, source=path)


# ----------------------------------------------------------------- the network
@dataclass(frozen=True)
class NetworkDescription:
    """What rebuilding a run's network needs beyond its config, kept in the run
    (``network.json``) so that the run loads, evaluates and exports without its
    training data.

    Args:
        num_ids: training identities (classes of the ID classifiers).
        attribute_names: the attributes of ``data.attributes``, in order.
        attribute_classes: each attribute's class names; index = class id.
        input_size: [height, width] of the network's input.
        dataset: the training dataset's reader name and folder (for messages).
        written_by: package and framework versions that wrote it.
    """

    num_ids: int
    attribute_names: tuple[str, ...]
    attribute_classes: tuple[tuple[str, ...], ...]
    input_size: tuple[int, int]
    dataset: dict
    written_by: dict

    @property
    def num_classes(self) -> list[int]:
        """m_i, the number of classes of each attribute."""
        return [len(c) for c in self.attribute_classes]

    @property
    def name(self) -> str:
        """The training dataset's reader name (as a dataset's ``name``)."""
        return str(self.dataset.get("name", ""))

    def to_dict(self) -> dict:
        return {
            "format": NETWORK_FORMAT,
            "num_ids": self.num_ids,
            "attributes": [
                {"name": n, "classes": list(c)}
                for n, c in zip(self.attribute_names, self.attribute_classes, strict=True)
            ],
            "input_size": list(self.input_size),
            "dataset": dict(self.dataset),
            "written_by": dict(self.written_by),
        }

    @classmethod
    def from_dict(cls, raw, path: str = NETWORK_FILE) -> NetworkDescription:
        """The description of a ``network.json`` document.

        Raises:
            DamagedFileError: not a description of this format, naming the field.
        """
        advice = "remove it: the run then rebuilds it from its dataset"

        def bad(what):
            return DamagedFileError(f"{path} is damaged ({what}); {advice}")

        if not isinstance(raw, dict) or raw.get("format") != NETWORK_FORMAT:
            got = raw.get("format") if isinstance(raw, dict) else type(raw).__name__
            raise bad(f"format {got!r}, this anet-tf reads {NETWORK_FORMAT}")
        num_ids = raw.get("num_ids")
        if not isinstance(num_ids, int) or isinstance(num_ids, bool) or num_ids < 1:
            raise bad(f"num_ids: a positive integer is needed, got {num_ids!r}")
        attributes = raw.get("attributes")
        if not isinstance(attributes, list):
            raise bad("attributes: a list is needed")
        names, classes = [], []
        for i, a in enumerate(attributes):
            if (
                not isinstance(a, dict)
                or not isinstance(a.get("name"), str)
                or not isinstance(a.get("classes"), list)
                or not all(isinstance(c, str) for c in a["classes"])
            ):
                raise bad(f"attributes[{i}]: {{name: str, classes: [str, ...]}} is needed")
            names.append(a["name"])
            classes.append(tuple(a["classes"]))
        size = raw.get("input_size")
        if (
            not isinstance(size, list)
            or len(size) != 2
            or not all(isinstance(x, int) and x > 0 for x in size)
        ):
            raise bad(f"input_size: [height, width] is needed, got {size!r}")
        return cls(
            num_ids=num_ids,
            attribute_names=tuple(names),
            attribute_classes=tuple(classes),
            input_size=(size[0], size[1]),
            dataset=dict(raw.get("dataset") or {}),
            written_by=dict(raw.get("written_by") or {}),
        )


def describe_network(cfg: Config, dataset) -> NetworkDescription:
    """The :class:`NetworkDescription` of the network ``cfg`` builds for
    ``dataset`` (its training identities and attribute classes)."""
    import keras

    from anet_tf._version import __version__

    written_by = {"anet_tf": __version__, "keras": keras.__version__, "backend": keras.backend.backend()}
    try:
        import tensorflow as tf

        written_by["tensorflow"] = tf.__version__
    except ImportError:  # pragma: no cover - the JAX backend without TensorFlow
        pass
    return NetworkDescription(
        num_ids=len(dataset.train_pids()),
        attribute_names=tuple(dataset.attribute_names),
        attribute_classes=tuple(tuple(c) for c in dataset.attribute_classes),
        input_size=(int(cfg.data.image_size[0]), int(cfg.data.image_size[1])),
        dataset={"name": dataset.name, "root": os.path.abspath(dataset.root)},
        written_by=written_by,
    )


def save_network_description(run_dir: str, description: NetworkDescription) -> str:
    """Write ``RUN/network.json`` (atomically)."""
    path = os.path.join(run_dir, NETWORK_FILE)
    atomic_write_text(path, json.dumps(description.to_dict(), indent=2) + "\n")
    return path


def load_network_description(run_dir: str) -> NetworkDescription | None:
    """The run's :class:`NetworkDescription`, or None for a run written before runs
    kept one.

    Raises:
        DamagedFileError: the file is not valid JSON or not a description.
    """
    path = os.path.join(run_dir, NETWORK_FILE)
    if not os.path.isfile(path):
        return None
    advice = "remove it: the run then rebuilds it from its dataset"
    return NetworkDescription.from_dict(read_json_file(path, advice), path)


# Keys that may change when a run is resumed: the schedule ahead of it and how it is
# evaluated. Everything that shapes the network, the data or the losses may not (the
# checkpoint would no longer be the run the config describes).
RESUMABLE_KEYS = (
    "train.lr",
    "train.lr_milestones",
    "train.lr_gamma",
    "train.lr_schedule",
    "train.lr_delay_epochs",
    "train.lr_min",
    "train.warmup_iters",
    "train.warmup_factor",
    "train.stage1.epochs",
    "train.stage1.lr",
    "train.stage1.steps_per_epoch",
    "train.stage2.epochs",
    "train.stage2.lr",
    "train.stage2.steps_per_epoch",
    "train.eval_every",
    "train.attribute_refit",
    "train.attribute_refit_c",
    "eval.",
)


def resumable(key: str) -> bool:
    key = key.strip()
    return any(key == k or (k.endswith(".") and key.startswith(k)) for k in RESUMABLE_KEYS)


def apply_resume_overrides(run_dir: str, overrides: list[str]) -> Config:
    """The run's config with ``overrides`` applied, after checking every key may
    change mid-run. Nothing is written here: :func:`record_resume_changes` writes
    the change once the resumed run holds the folder's lock. Raises RunFolderError
    naming a key that may not change."""
    from anet_tf.config import apply_overrides

    refused = [o.split("=", 1)[0].strip() for o in overrides if not resumable(o.split("=", 1)[0])]
    if refused:
        raise RunFolderError(
            f"{run_dir}: {', '.join(refused)} cannot change when a run is resumed (only "
            f"the schedule ahead and evaluation settings can: "
            f"{', '.join(k + '*' if k.endswith('.') else k for k in RESUMABLE_KEYS)}); "
            "start a new run with --out"
        )
    cfg = load_run_config(run_dir)
    new = apply_overrides(cfg, overrides)
    raw = new.to_dict()
    raw["data"]["root"] = cfg.data.root
    return config_from_dict(raw, source=cfg.source)


def record_resume_changes(run_dir: str, cfg: Config, command: str) -> dict:
    """Make ``cfg`` the run's config.yaml when it differs, and append what changed
    (from, to, when, ``command``) to changes.yaml. Call it holding the run's lock,
    when the resumed run is about to train. Returns the change (empty if none)."""
    saved = load_run_config(run_dir)
    before, after = _flatten(saved.to_dict()), _flatten(cfg.to_dict())
    changed = {k: {"from": before.get(k), "to": after[k]} for k in after if after[k] != before.get(k)}
    changed.pop("data.root", None)  # the same folder, written absolute
    if not changed:
        return {}
    path = os.path.join(run_dir, CHANGES_FILE)
    history = []
    if os.path.exists(path):
        history = read_yaml_file(path, advice="restore it, or move it aside") or []
    history.append(
        {
            "date": datetime.datetime.now().isoformat(timespec="seconds"),
            "command": command,
            "changed": changed,
        }
    )
    atomic_write_text(path, yaml.safe_dump(history, sort_keys=False))
    save_run_config(cfg, run_dir)
    return changed


def _flatten(node, prefix: str = "") -> dict:
    out = {}
    for key, value in node.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def planned_epochs(cfg: Config) -> int:
    """Global epochs of the whole run: stage 1, plus stage 2 for ANet."""
    return cfg.train.stage1.epochs + (cfg.train.stage2.epochs if cfg.model.variant == "anet" else 0)


# -------------------------------------------------------------------- the lock
class RunLock(FileLock):
    """Exclusive use of a run folder by one process: a :class:`~anet_tf.io.FileLock`
    on ``RUN/lock`` (released by the kernel however its holder exits, ``kill -9``
    included; the file names the holder). ``took_over`` names a holder that died
    with the lock (the next holder says so). A refusal is a
    :class:`RunFolderError`.
    """

    def __init__(self, run_dir: str, wait_s: float = 0.0):
        super().__init__(
            os.path.join(run_dir, LOCK_FILE),
            run_dir,
            "wait for it to finish, stop it, or choose another --out",
            wait_s=wait_s,
        )
        self.run_dir = run_dir

    def acquire(self) -> RunLock:
        os.makedirs(self.run_dir, exist_ok=True)
        try:
            super().acquire()
        except LockHeldError as exc:
            raise RunFolderError(str(exc)) from None
        return self


# ---------------------------------------------------------------- temporaries
def remove_stale_temporaries(run_dir: str) -> list[str]:
    """Remove what an interrupted write left (``*.tmp-<pid>`` folders and files in
    the run folder and its checkpoints). Only call it while holding the lock: then no
    other process is writing them. Returns the removed paths."""
    removed = []
    for folder in (run_dir, os.path.join(run_dir, CHECKPOINTS)):
        if not os.path.isdir(folder):
            continue
        for name in os.listdir(folder):
            if ".tmp-" not in name and not name.endswith(".tmp"):
                continue
            path = os.path.join(folder, name)
            remove_path(path)
            removed.append(path)
    return removed


# --------------------------------------------------------------------- the log
def log_path(run_dir: str) -> str:
    return os.path.join(run_dir, LOG_FILE)


def read_log(run_dir: str) -> tuple[list[str], list[dict]]:
    """(header, rows) of the run's log.csv; see :func:`read_log_complete` for a log
    that may end in a torn row."""
    header, rows, _ = read_log_complete(run_dir)
    return header, rows


def read_log_complete(run_dir: str) -> tuple[list[str], list[dict], int]:
    """(header, complete rows, rows left out) of the run's log.csv.

    Every row is written whole and ends in a line break, so a last line without
    one was torn by a kill or a full disk while it was written; it is left out, as
    is any row whose cell count is not the header's (a row glued onto a torn one
    by an older version)."""
    path = log_path(run_dir)
    if not os.path.exists(path):
        return [], [], 0
    with open(path, encoding="utf-8", errors="replace", newline="") as fh:
        text = fh.read()
    lines = text.splitlines(keepends=True)
    torn = 0
    if lines and not lines[-1].endswith(("\n", "\r")):
        lines.pop()
        torn = 1
    parsed = list(csv.reader(lines))
    if not parsed:
        return [], [], torn
    header, body = parsed[0], parsed[1:]
    rows = [dict(zip(header, cells)) for cells in body if len(cells) == len(header)]
    return header, rows, torn + len(body) - len(rows)


def copy_log_rows(source_run: str, run_dir: str, stage: int) -> int:
    """Write the complete rows of ``stage`` from ``source_run``'s log as
    ``run_dir``'s log (a run that starts from another's stage-1 snapshot);
    returns how many. Nothing is written when the source has no log."""
    header, rows, _ = read_log_complete(source_run)
    if not header:
        return 0
    kept = [r for r in rows if r.get("stage") == str(stage)]
    _write_log(run_dir, header, kept)
    return len(kept)


def _write_log(run_dir: str, header: list[str], rows: list[dict]) -> None:
    with atomic_file(log_path(run_dir), "w", encoding="utf-8", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=header, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)


def append_log_row(run_dir: str, row: dict, columns: list[str]) -> None:
    """Append one epoch's row; a column the file lacks (a new eval_* key) rewrites
    the file with the wider header. A write that fails (a full disk, Ctrl-C) leaves
    the file as it was: its row is restored from the checkpoint on resume.

    Raises:
        DiskFullError: no space left for the row (one line).
    """
    path = log_path(run_dir)
    exists = os.path.exists(path)
    size = os.path.getsize(path) if exists else 0
    try:
        _append_log_row(run_dir, row, columns)
    except BaseException as exc:
        if exists:
            try:
                with open(path, "r+b") as fh:
                    fh.truncate(size)
            except OSError:
                pass
        else:
            remove_path(path)
        if is_disk_full(exc):
            raise DiskFullError(
                f"{path}: no space left on the device while writing the row of epoch "
                f"{row.get('global_epoch', '?')} (its checkpoint is saved, and the row "
                f"is restored from it); free space, then continue with anet-tf fit "
                f"--resume {run_dir}"
            ) from None
        raise


def _append_log_row(run_dir: str, row: dict, columns: list[str]) -> None:
    fixed = LOG_FIXED + list(columns)
    header = fixed + sorted(k for k in row if k not in fixed)
    old_header, rows, _ = read_log_complete(run_dir)
    if old_header and set(header) <= set(old_header):
        header = old_header
    elif old_header:
        header = old_header + [k for k in header if k not in old_header]
        _write_log(run_dir, header, rows)
    path = log_path(run_dir)
    exists = os.path.exists(path)
    with open(path, "a", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=header, extrasaction="ignore")
        if not exists:
            w.writeheader()
        w.writerow(row)
        fh.flush()
        os.fsync(fh.fileno())


def reconcile_log(run_dir: str, global_epoch: int, row: dict | None, columns: list[str]) -> int:
    """Make log.csv hold exactly one row per epoch 1..``global_epoch``, the epochs
    the newest checkpoint completed: rows of later epochs (written by a run killed
    before it published their checkpoint, or by older versions that wrote the row
    first) and repeated rows are dropped, and a missing last row (a kill between
    publishing the checkpoint and writing its row) is restored from the checkpoint's
    own record (``row``). A torn last line (a kill or a full disk while it was
    written) is dropped first. Returns the number of rows changed."""
    header, rows, torn = read_log_complete(run_dir)
    kept: dict[int, dict] = {}
    for r in rows:
        try:
            epoch = int(float(r.get("global_epoch", "")))
        except ValueError:
            continue
        if epoch <= global_epoch:
            kept[epoch] = r  # a repeated epoch: the later row is the one resumed from
    changed = len(rows) - len(kept) + torn
    if global_epoch > 0 and global_epoch not in kept and row:
        kept[global_epoch] = {k: row.get(k, "") for k in row}
        changed += 1
        for k in LOG_FIXED + list(columns) + sorted(row):
            if k not in header:
                header.append(k)
    if changed:
        _write_log(run_dir, header or LOG_FIXED + list(columns), [kept[e] for e in sorted(kept)])
    return changed
