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
