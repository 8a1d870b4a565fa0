"""Atomic checkpoints and the lr schedule of the two-stage training."""

import json
import os

import keras
import numpy as np
import pytest

from anet_tf.training.checkpoint import CheckpointManager
from anet_tf.training.checkpoint import TrainState
from anet_tf.training.trainer import lr_at_epoch


def tiny_net():
    inp = keras.Input((4,))
    out = keras.layers.Dense(3, name="d")(keras.layers.Dense(5)(inp))
    return keras.Model(inp, out)


def trained_optimizer(net):
    opt = keras.optimizers.Adam(amsgrad=True, learning_rate=1e-2)
    opt.build(net.trainable_variables)
    grads = [np.ones(v.shape, "float32") for v in net.trainable_variables]
    opt.apply(grads, net.trainable_variables)
    return opt


def test_save_restore_weights_and_optimizer(tmp_path):
    net = tiny_net()
    opt = trained_optimizer(net)
    mgr = CheckpointManager(str(tmp_path / "ckpt"))
    mgr.save(net, opt, TrainState(stage=1, stage_epoch=3, global_epoch=3))
    path, state = mgr.latest()
    assert (state.stage, state.stage_epoch, state.global_epoch) == (1, 3, 3)

    net2 = tiny_net()
    opt2 = keras.optimizers.Adam(amsgrad=True, learning_rate=1e-2)
    opt2.build(net2.trainable_variables)
    CheckpointManager.restore(path, net2, opt2)
    for a, b in zip(net.weights, net2.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    for a, b in zip(opt.variables, opt2.variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert int(opt2.iterations.numpy()) == 1


def test_pointer_always_names_a_complete_checkpoint(tmp_path):
    """A save killed half-way leaves a *.tmp-* folder; last.json still names the
    previous complete checkpoint, and the next save cleans the debris."""
    net = tiny_net()
    opt = trained_optimizer(net)
    mgr = CheckpointManager(str(tmp_path / "ckpt"), keep=2)
    mgr.save(net, opt, TrainState(stage=1, stage_epoch=1, global_epoch=1))
    # Simulate a kill during the next save: a partial temp folder, no pointer update.
    partial = tmp_path / "ckpt" / "epoch-0002.tmp-99999"
    partial.mkdir()
    (partial / "net.weights.h5").write_bytes(b"\x89HDF\r\n")
    path, state = mgr.latest()
    assert os.path.basename(path) == "epoch-0001" and state.global_epoch == 1
    CheckpointManager.restore(path, tiny_net())
    for e in (2, 3, 4):
        mgr.save(net, opt, TrainState(stage=1, stage_epoch=e, global_epoch=e))
    names = sorted(os.listdir(tmp_path / "ckpt"))
    assert names == ["epoch-0003", "epoch-0004", "last.json"]
    with open(tmp_path / "ckpt" / "last.json") as fh:
        assert json.load(fh)["checkpoint"] == "epoch-0004"


def test_best_copy(tmp_path):
    net = tiny_net()
    mgr = CheckpointManager(str(tmp_path / "ckpt"))
    mgr.save(net, None, TrainState(1, 1, 1, best_score=0.5, best_key="mAP"), is_best=True)
    before = np.asarray(net.weights[0]).copy()
    net.weights[0].assign(before + 1)
    mgr.save(net, None, TrainState(1, 2, 2, best_score=0.5, best_key="mAP"), is_best=False)
    restored = tiny_net()
    state = CheckpointManager.restore(str(tmp_path / "ckpt" / "best"), restored)
    np.testing.assert_array_equal(np.asarray(restored.weights[0]), before)
    assert state.global_epoch == 1


def test_optimizer_mismatch_is_refused(tmp_path):
    net = tiny_net()
    mgr = CheckpointManager(str(tmp_path / "ckpt"))
    mgr.save(net, trained_optimizer(net), TrainState(1, 1, 1))
    other = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    opt = keras.optimizers.Adam(amsgrad=True)
    opt.build(other.trainable_variables)
    with pytest.raises(ValueError, match="optimizer"):
        CheckpointManager.restore(mgr.latest()[0], net, opt)


def test_loss_scale_mismatch_names_the_backends_mixed_precision(tmp_path):
    """A mixed-precision run saved without loss scaling (bfloat16 on JAX) and
    resumed with it (float16 on TensorFlow): the error says why they differ."""
    net = tiny_net()
    mgr = CheckpointManager(str(tmp_path / "ckpt"))
    mgr.save(net, trained_optimizer(net), TrainState(1, 1, 1))
    scaled = keras.optimizers.LossScaleOptimizer(keras.optimizers.Adam(amsgrad=True))
    scaled.build(net.trainable_variables)
    with pytest.raises(ValueError, match="Keras backend it was trained on"):
        CheckpointManager.restore(mgr.latest()[0], net, scaled)


def test_lr_schedule_counts_over_both_stages():
    """Section 4.2: 6e-4, x0.1 at epochs 60, 120 and 150 (stage 2 starts at 150)."""
    lr = [lr_at_epoch(e, 6e-4, [60, 120, 150], 0.1) for e in (0, 59, 60, 119, 120, 149, 150, 209)]
    np.testing.assert_allclose(lr, [6e-4, 6e-4, 6e-5, 6e-5, 6e-6, 6e-6, 6e-7, 6e-7], rtol=1e-9)


def test_best_is_recovered_after_a_kill_between_renames(tmp_path):
    """best/ is replaced by two renames; a kill between them leaves only best.old-*,
    which the next save puts back instead of deleting."""
    net = tiny_net()
    mgr = CheckpointManager(str(tmp_path / "ckpt"))
    mgr.save(net, None, TrainState(1, 1, 1, best_score=-1.0, best_key="-total@stage1"), is_best=True)
    os.replace(tmp_path / "ckpt" / "best", tmp_path / "ckpt" / "best.old-4242")
    mgr.save(net, None, TrainState(1, 2, 2, best_score=-1.0, best_key="-total@stage1"), is_best=False)
    assert CheckpointManager.read_state(str(tmp_path / "ckpt" / "best")).global_epoch == 1
    assert not any(".old-" in d for d in os.listdir(tmp_path / "ckpt"))


# ------------------------------------------- a failed save never loses the newest
def _weights_of(path):
    net = tiny_net()
    CheckpointManager.restore(path, net)
    return float(np.asarray(net.weights[0])[0, 0])


def _set_weights(net, value):
    for v in net.weights:
        v.assign(np.full(v.shape, value, "float32"))


def _fail_at(monkeypatch, ckpt_dir, step, exc):
    """Make step ``step`` of a save raise ``exc``: a write of one of the
    checkpoint's files, a rename into place, the pointer, or best/'s links."""
    from anet_tf.training import checkpoint as ck

    def failing(*args, **kwargs):
        raise exc

    if step == "weights":
        monkeypatch.setattr(keras.Model, "save_weights", failing)
    elif step == "optimizer":
        monkeypatch.setattr(ck.np, "savez", failing)
    elif step == "flush":
        monkeypatch.setattr(ck, "_fsync_tree", failing)
    elif step == "pointer":
        monkeypatch.setattr(ck, "_atomic_write_text", failing)
    elif step == "best":
        monkeypatch.setattr(ck.shutil, "copytree", failing)
    elif step.startswith("rename"):
        # the n-th rename of a folder inside the checkpoints folder
        wanted = int(step[-1])
        real = os.replace
        seen = []

        def replace(src, dst, *a, **k):
            if str(src).startswith(ckpt_dir) and os.path.isdir(src):
                seen.append(src)
                if len(seen) == wanted:
                    raise exc
            return real(src, dst, *a, **k)

        monkeypatch.setattr(ck.os, "replace", replace)
    else:
        raise AssertionError(step)


STEPS = ["weights", "optimizer", "flush", "rename1", "rename2", "pointer", "best"]


@pytest.mark.parametrize("error", ["ENOSPC", "KeyboardInterrupt"])
@pytest.mark.parametrize(
    "step, same_epoch",
    # a new epoch's save renames one folder (no old one to set aside)
    [(step, same) for step in STEPS for same in (True, False) if same or step != "rename2"],
    ids=lambda v: ("resave" if v else "next-epoch") if isinstance(v, bool) else v,
)
def test_a_failed_save_keeps_a_complete_published_checkpoint(tmp_path, monkeypatch, step, error, same_epoch):
    """A save (the refit's re-save of the newest epoch, or the next epoch's) that
    fails at any step, for space or by Ctrl-C, leaves last.json naming a complete
    checkpoint: the previous one with its weights, or, once the pointer is written,
    the new one; no temporary folder is left behind."""
    import errno

    from anet_tf.training.run import DiskFullError

    ckpt = str(tmp_path / "ckpt")
    net = tiny_net()
    opt = trained_optimizer(net)
    mgr = CheckpointManager(ckpt)
    _set_weights(net, 1.0)
    mgr.save(net, opt, TrainState(1, 2, 2, best_score=1.0, best_key="mAP"), is_best=True)
    _set_weights(net, 2.0)
    new_state = TrainState(1, 2, 2, attribute_refit_c=1.0) if same_epoch else TrainState(1, 3, 3)
    exc = OSError(errno.ENOSPC, "No space left on device") if error == "ENOSPC" else KeyboardInterrupt()
    _fail_at(monkeypatch, ckpt, step, exc)
    expected = DiskFullError if error == "ENOSPC" else KeyboardInterrupt
    with pytest.raises(expected) as raised:
        mgr.save(net, opt, new_state, is_best=True)
    monkeypatch.undo()
    if error == "ENOSPC":
        msg = str(raised.value)
        assert "\n" not in msg and "no space left" in msg
        assert ("best/ could not be updated" in msg) == (step == "best")

    path, state = CheckpointManager(ckpt).latest()
    published_new = step == "best"  # every earlier step fails before the pointer
    assert os.path.isdir(path)
    assert _weights_of(path) == (2.0 if published_new else 1.0)
    assert state == (new_state if published_new else TrainState(1, 2, 2, best_score=1.0, best_key="mAP"))
    assert _weights_of(os.path.join(ckpt, "best")) == 1.0
    assert not [d for d in os.listdir(ckpt) if ".tmp-" in d or ".old-" in d]
    # and the run goes on: the same save succeeds once the disk has room
    mgr.save(net, opt, new_state, is_best=True)
    path, state = CheckpointManager(ckpt).latest()
    assert (_weights_of(path), state) == (2.0, new_state)
    assert _weights_of(os.path.join(ckpt, "best")) == 2.0


def test_a_kill_between_the_renames_of_a_resave_is_recovered(tmp_path):
    """A kill after the old folder of a re-saved epoch was renamed aside and before
    the new one took its name: last.json names a folder found only as
    <name>.old-<pid>, which is put back."""
    net = tiny_net()
    mgr = CheckpointManager(str(tmp_path / "ckpt"))
    _set_weights(net, 1.0)
    mgr.save(net, None, TrainState(1, 2, 2))
    os.replace(tmp_path / "ckpt" / "epoch-0002", tmp_path / "ckpt" / "epoch-0002.old-4242")
    path, state = CheckpointManager(str(tmp_path / "ckpt")).latest()
    assert os.path.basename(path) == "epoch-0002" and _weights_of(path) == 1.0
    assert state.global_epoch == 2


def test_a_kill_after_the_rename_before_the_pointer_reads_the_folders_state(tmp_path):
    """A kill after the re-saved folder took its name and before last.json was
    rewritten: the state comes from the folder itself, so weights and state agree
    (the refit counts as done)."""
    net = tiny_net()
    mgr = CheckpointManager(str(tmp_path / "ckpt"))
    mgr.save(net, None, TrainState(1, 2, 2))
    pointer = (tmp_path / "ckpt" / "last.json").read_text()
    mgr.save(net, None, TrainState(1, 2, 2, attribute_refit_c=0.5))
    (tmp_path / "ckpt" / "last.json").write_text(pointer)  # the stale pointer
    _, state = CheckpointManager(str(tmp_path / "ckpt")).latest()
    assert state.attribute_refit_c == 0.5


@pytest.mark.parametrize(
    "damage, expected",
    [
        (lambda p: p.write_text('{"checkpoint": "epoch-00'), "not valid JSON: line 1"),
        (lambda p: p.write_text('{"checkpoint": "epoch-0009"}'), "not a checkpoint folder"),
        (lambda p: p.write_text("[1, 2]"), 'no "checkpoint" entry'),
    ],
    ids=["truncated", "dangling", "not-a-record"],
)
def test_a_damaged_pointer_names_the_file_and_the_newest_folder(tmp_path, damage, expected):
    from anet_tf.io import DamagedFileError

    net = tiny_net()
    mgr = CheckpointManager(str(tmp_path / "ckpt"))
    mgr.save(net, None, TrainState(1, 1, 1))
    mgr.save(net, None, TrainState(1, 2, 2))
    damage(tmp_path / "ckpt" / "last.json")
    with pytest.raises(DamagedFileError) as err:
        mgr.latest()
    msg = str(err.value)
    assert str(tmp_path / "ckpt" / "last.json") in msg and expected in msg
    assert '{"checkpoint": "epoch-0002"}' in msg and "\n" not in msg


@pytest.mark.parametrize(
    "file, damage",
    [
        ("net.weights.h5", "truncate"),
        ("net.weights.h5", "garbage"),
        ("optimizer.npz", "empty"),
        ("optimizer.npz", "garbage"),
        ("state.json", "truncate"),
    ],
)
def test_a_damaged_checkpoint_file_is_named_with_the_other_checkpoints(tmp_path, file, damage):
    from anet_tf.io import DamagedFileError

    net = tiny_net()
    opt = trained_optimizer(net)
    mgr = CheckpointManager(str(tmp_path / "ckpt"))
    mgr.save(net, opt, TrainState(1, 1, 1))
    mgr.save(net, opt, TrainState(1, 2, 2))
    target = tmp_path / "ckpt" / "epoch-0002" / file
    data = target.read_bytes()
    target.unlink()  # never through a hard link another folder shares
    target.write_bytes({"truncate": data[: len(data) // 3], "garbage": b"not a checkpoint\n" * 9, "empty": b""}[damage])
    with pytest.raises(DamagedFileError) as err:
        CheckpointManager.restore(str(tmp_path / "ckpt" / "epoch-0002"), tiny_net(), trained_optimizer(tiny_net()))
    msg = str(err.value)
    assert msg.startswith(f"{target} is damaged") and "\n" not in msg
    assert "epoch-0001" in msg and "--checkpoint" in msg


def test_a_resave_on_a_really_full_disk_keeps_the_checkpoint(tmp_path):
    """The refit's re-save of the newest epoch on a real file system with no room
    left (a small tmpfs, filled): one line, the checkpoint as it was, and the same
    save succeeds once space is freed."""
    import shutil
    import subprocess

    from anet_tf.training.run import DiskFullError

    mnt = tmp_path / "small"
    mnt.mkdir()
    if not shutil.which("mount") or os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2M", "tmpfs", str(mnt)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        net = keras.Sequential([keras.Input((64,)), keras.layers.Dense(512), keras.layers.Dense(8)])
        mgr = CheckpointManager(str(mnt / "ckpt"))
        _set_weights(net, 1.0)
        mgr.save(net, None, TrainState(2, 1, 3))
        filler = mnt / "filler"
        free = shutil.disk_usage(mnt).free
        with open(filler, "wb") as fh:  # leave less than one checkpoint free
            fh.write(b"\0" * max(0, free - 64 * 1024))
        _set_weights(net, 2.0)
        with pytest.raises(DiskFullError) as err:
            mgr.save(net, None, TrainState(2, 1, 3, attribute_refit_c=1.0))
        assert "epoch-0003 as it was before this save is kept" in str(err.value)
        path, state = CheckpointManager(str(mnt / "ckpt")).latest()
        restored = keras.Sequential([keras.Input((64,)), keras.layers.Dense(512), keras.layers.Dense(8)])
        CheckpointManager.restore(path, restored)
        assert float(np.asarray(restored.weights[0])[0, 0]) == 1.0 and state.attribute_refit_c is None
        os.remove(filler)
        mgr.save(net, None, TrainState(2, 1, 3, attribute_refit_c=1.0))
        assert CheckpointManager(str(mnt / "ckpt")).latest()[1].attribute_refit_c == 1.0
    finally:
        import gc
        import time

        gc.collect()  # h5py closes a file when its object goes
        for _ in range(20):
            if subprocess.run(["umount", str(mnt)], capture_output=True).returncode == 0:
                break
            time.sleep(0.2)
        else:
            subprocess.run(["umount", "-l", str(mnt)], capture_output=True)
