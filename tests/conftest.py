"""Shared test settings: quiet TensorFlow, CPU only."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import pytest  # noqa: E402

# The smallest settings that still train both stages of every variant (CPU, seconds).
TINY_OVERRIDES = [
    "data.image_size=[32, 32]",
    "data.batch_size=8",
    "data.num_instances=4",
    "data.test_batch_size=16",
    "model.base_width=8",
    "model.s_f=16",
    "model.s_a=8",
    "model.s_j=16",
    "train.stage1.epochs=2",
    "train.stage1.steps_per_epoch=2",
    "train.stage2.epochs=1",
    "train.stage2.steps_per_epoch=2",
    "train.lr_milestones=[2]",
    "train.strategy=one_device",
]


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory):
    """A small synthetic dataset (10 identities, 32 px), written once per session."""
    from anet_tf.data.synthetic import generate

    root = tmp_path_factory.mktemp("tiny-synth")
    generate(str(root), ids=10, test_ids=4, cameras=3, images_per_id=5, image_size=32, seed=3)
    return str(root)


@pytest.fixture
def tiny_overrides(tiny_dataset):
    """``--set`` items of a tiny run on :func:`tiny_dataset`."""
    return [f"data.root={tiny_dataset}", *TINY_OVERRIDES]


@pytest.fixture
def make_tiny_cfg(tiny_overrides):
    """``make_tiny_cfg(*extra_overrides)`` -> a validated tiny config."""
    from anet_tf.config import load_config

    return lambda *extra: load_config("synthetic", [*tiny_overrides, *extra])
