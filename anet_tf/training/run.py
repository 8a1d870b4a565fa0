"""The run folder: its layout, its config, its log, its lock.

A run folder (``anet-tf fit --out RUN``) holds::

    config.yaml       the resolved config (CONFIG_FILE), written once at the start
    changes.yaml      settings changed on ``fit --resume RUN --set k=v`` (CHANGES_FILE)
    lock              held (flock) by the process training in the folder (LOCK_FILE)
    log.csv           one row per completed epoch (LOG_FILE)
    checkpoints/      complete checkpoints, see :mod:`anet_tf.training.checkpoint`
    tensorboard/      event files
    metrics.json      the final evaluation (METRICS_FILE)
    export/           the SavedModel, when exported

This module is the one place that knows these names and how they are written, so the
rules that keep a run intact are in one place:

* one process trains in a folder at a time (:class:`RunLock`, a kernel ``flock``, so
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
import errno
import fcntl
import json
import os
import shutil
import socket

import yaml

from anet_tf.config import Config
from anet_tf.config import config_from_dict

CONFIG_FILE = "config.yaml"
CHANGES_FILE = "changes.yaml"
LOCK_FILE = "lock"
LOG_FILE = "log.csv"
METRICS_FILE = "metrics.json"
CHECKPOINTS = "checkpoints"

# The log's leading columns; the loss terms of the variant and eval_* follow.
LOG_FIXED = ["stage", "epoch", "global_epoch", "lr", "epoch_time_s", "images_per_s"]


class RunFolderError(RuntimeError):
    """A run folder cannot be used as asked; the message is one line for the user."""


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
    with open(path, encoding="utf-8") as fh:
        raw = yaml.safe_load(fh)
    return config_from_dict(raw, source=path)


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


def apply_resume_overrides(run_dir: str, overrides: list[str], command: str) -> Config:
    """The run's config with ``overrides`` applied, after checking every key may
    change mid-run; the new config replaces config.yaml and the change is appended to
    changes.yaml (what, when, the command). Raises RunFolderError naming a key that
    may not change."""
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
    before, after = _flatten(cfg.to_dict()), _flatten(new.to_dict())
    changed = {k: {"from": before.get(k), "to": after[k]} for k in after if after[k] != before.get(k)}
    if changed:
        path = os.path.join(run_dir, CHANGES_FILE)
        history = []
        if os.path.exists(path):
            with open(path, encoding="utf-8") as fh:
                history = yaml.safe_load(fh) or []
        history.append(
            {
                "date": datetime.datetime.now().isoformat(timespec="seconds"),
                "command": command,
                "changed": changed,
            }
        )
        atomic_write_text(path, yaml.safe_dump(history, sort_keys=False))
        raw = new.to_dict()
        raw["data"]["root"] = cfg.data.root
        new = config_from_dict(raw, source=cfg.source)
        save_run_config(new, run_dir)
    return new


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


def finished_state(cfg: Config, run_dir: str):
    """The newest checkpoint's state when the run is finished (every planned epoch
    trained and metrics.json written), else None."""
    from anet_tf.training.checkpoint import CheckpointManager

    directory = os.path.join(run_dir, CHECKPOINTS)
    if not os.path.isfile(os.path.join(run_dir, METRICS_FILE)) or not os.path.isdir(directory):
        return None
    latest = CheckpointManager(directory).latest()
    if latest is None or latest[1].global_epoch < planned_epochs(cfg):
        return None
    return latest[1]


# -------------------------------------------------------------------- the lock
class RunLock:
    """Exclusive use of a run folder by one process.

    ``flock`` on ``RUN/lock``: the kernel releases it when the holder exits, however
    it exits (``kill -9`` included), so a stale lock never blocks a run; the file
    keeps the holder's pid and host, which name the holder when a second process is
    refused, and tell the next holder that it took over from a process that died.
    A lock on a network file system may not exclude processes on other hosts.
    """

    def __init__(self, run_dir: str):
        self.run_dir = run_dir
        self.path = os.path.join(run_dir, LOCK_FILE)
        self._fh = None
        self.took_over: str | None = None

    def acquire(self) -> RunLock:
        os.makedirs(self.run_dir, exist_ok=True)
        fh = open(self.path, "a+", encoding="utf-8")
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                fh.close()
                raise
            fh.seek(0)
            holder = _describe_holder(fh.read())
            fh.close()
            raise RunFolderError(
                f"{self.run_dir} is in use by {holder}; wait for it to finish, stop it, "
                "or choose another --out"
            ) from None
        fh.seek(0)
        previous = fh.read().strip()
        if previous:
            self.took_over = _describe_holder(previous)
        fh.seek(0)
        fh.truncate()
        fh.write(
            json.dumps(
                {
                    "pid": os.getpid(),
                    "host": socket.gethostname(),
                    "since": datetime.datetime.now().isoformat(timespec="seconds"),
                }
            )
        )
        fh.flush()
        self._fh = fh
        return self

    def release(self) -> None:
        if self._fh is None:
            return
        try:
            self._fh.seek(0)
            self._fh.truncate()
            self._fh.flush()
            fcntl.flock(self._fh.fileno(), fcntl.LOCK_UN)
        finally:
            self._fh.close()
            self._fh = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _describe_holder(text: str) -> str:
    try:
        info = json.loads(text)
        return f"process {info['pid']} on {info['host']} (since {info['since']})"
    except (ValueError, KeyError, TypeError):
        return "another process"


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


def remove_path(path: str) -> None:
    """Remove a folder (not through a link) or a file; what cannot be removed stays."""
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    else:
        try:
            os.remove(path)
        except OSError:
            pass


def atomic_write_text(path: str, text: str) -> None:
    """Write a file so that a reader (or a kill) sees the old or the new one whole."""
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        fsync_dir(os.path.dirname(path) or ".")
    except BaseException:
        try:
            os.remove(tmp)
        except OSError:
            pass
        raise


def fsync_dir(path: str) -> None:
    """Flush a folder's entries (a rename into it) to disk; best effort."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# --------------------------------------------------------------------- the log
def log_path(run_dir: str) -> str:
    return os.path.join(run_dir, LOG_FILE)


def read_log(run_dir: str) -> tuple[list[str], list[dict]]:
    path = log_path(run_dir)
    if not os.path.exists(path):
        return [], []
    with open(path, encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh)
        rows = list(reader)
        return list(reader.fieldnames or []), rows


def _write_log(run_dir: str, header: list[str], rows: list[dict]) -> None:
    path = log_path(run_dir)
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=header, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def append_log_row(run_dir: str, row: dict, columns: list[str]) -> None:
    """Append one epoch's row; a column the file lacks (a new eval_* key) rewrites
    the file with the wider header."""
    fixed = LOG_FIXED + list(columns)
    header = fixed + sorted(k for k in row if k not in fixed)
    old_header, _ = read_log(run_dir)
    if old_header and set(header) <= set(old_header):
        header = old_header
    elif old_header:
        _, rows = read_log(run_dir)
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
    own record (``row``). Returns the number of rows changed."""
    header, rows = read_log(run_dir)
    kept: dict[int, dict] = {}
    for r in rows:
        try:
            epoch = int(float(r.get("global_epoch", "")))
        except ValueError:
            continue
        if epoch <= global_epoch:
            kept[epoch] = r  # a repeated epoch: the later row is the one resumed from
    changed = len(rows) - len(kept)
    if global_epoch > 0 and global_epoch not in kept and row:
        kept[global_epoch] = {k: row.get(k, "") for k in row}
        changed += 1
        for k in LOG_FIXED + list(columns) + sorted(row):
            if k not in header:
                header.append(k)
    if changed:
        _write_log(run_dir, header or LOG_FIXED + list(columns), [kept[e] for e in sorted(kept)])
    return changed
