"""Replacing an exported SavedModel version is atomic: a failure between moving
the old version aside and renaming the new one in puts the old version back at
once; a kill there leaves it whole aside, read meanwhile through committed_folder
(and by the package's loaders at the version's own path) and put back by
recover_folder, which the next export calls first.

The network is conftest.py's tiny export network (untrained; no training here).
"""

import errno
import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

import anet_tf
from anet_tf.export.saved_model import EMBEDDING
from anet_tf.export.saved_model import SIGNATURE_IMAGES
from anet_tf.export.saved_model import export_saved_model
from anet_tf.io import aside_path
from anet_tf.io import committed_folder
from anet_tf.io import recover_folder
from anet_tf.search.serving import model_fingerprint
from anet_tf.search.serving import resolve_model_dir

TESTS = os.path.dirname(os.path.abspath(__file__))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, tiny_export_run, export_image_size, random_pixels):
    """(net, cfg, dataset, pixels float32 [2, H, W, 3], the version folder exported
    once, its embedding of the pixels); a test copies the folder and works on the
    copy."""
    tmp = str(tmp_path_factory.mktemp("replace"))
    net, cfg, dataset = tiny_export_run(tmp)
    h, w = export_image_size
    pixels = np.stack([random_pixels(h, w, seed=s) for s in (1, 2)]).astype(np.float32)
    path = export_saved_model(
        net, cfg, dataset, os.path.join(tmp, "export"), warmup=False
    )
    return net, cfg, dataset, pixels, path, _embedding(path, pixels)


def _copy(version: str, out: str) -> str:
    """A copy of the exported ``version`` folder as ``out/anet/1``."""
    path = os.path.join(out, "anet", "1")
    shutil.copytree(version, path)
    return path


def _embedding(folder: str, pixels) -> np.ndarray:
    """The embedding of TF's own loader, through the committed version."""
    loaded = tf.saved_model.load(committed_folder(folder))
    return loaded.signatures[SIGNATURE_IMAGES](images=tf.constant(pixels))[
        EMBEDDING
    ].numpy()


def test_a_failure_between_the_renames_keeps_the_old_version(
    tiny, tmp_path, monkeypatch
):
    net, cfg, dataset, _, exported, _ = tiny
    path = _copy(exported, str(tmp_path))
    base = os.path.dirname(path)
    fingerprint = model_fingerprint(path)
    real_replace = os.replace

    def failing_replace(src, dst):
        if os.path.basename(src).startswith(".1.staging-"):  # the new version in
            raise OSError(errno.EIO, "Input/output error (injected)", src)
        return real_replace(src, dst)

    old = [v.numpy() for v in net.trainable_variables]
    try:
        for v in net.trainable_variables:  # a new export computes something else
            v.assign(v.numpy() + 0.05)
        monkeypatch.setattr(os, "replace", failing_replace)
        with pytest.raises(OSError, match="injected"):
            export_saved_model(net, cfg, dataset, str(tmp_path), warmup=False)
        monkeypatch.undo()
        # The old version is back (replace_folder undid the swap), whole (the
        # fingerprint hashes every weight's checksum); the staging folder is gone.
        assert os.listdir(base) == ["1"] and model_fingerprint(path) == fingerprint
        # The next export replaces it with the new one.
        assert (
            export_saved_model(net, cfg, dataset, str(tmp_path), warmup=False) == path
        )
        assert os.listdir(base) == ["1"]
        assert model_fingerprint(path) != fingerprint, "the new weights are not in"
    finally:
        for v, value in zip(net.trainable_variables, old, strict=True):
            v.assign(value)


KILLER = textwrap.dedent(
    """
    import os, sys
    sys.path.insert(0, {tests!r})
    from conftest import _tiny_export_run
    from anet_tf.export.saved_model import export_saved_model

    net, cfg, dataset = _tiny_export_run({tmp!r})
    real_replace = os.replace

    def replace(src, dst):
        if os.path.basename(src).startswith(".1.staging-"):
            os._exit(9)  # killed between the old version aside and the new one in
        return real_replace(src, dst)

    os.replace = replace
    export_saved_model(net, cfg, dataset, {out!r}, warmup=False)
    """
)


def test_a_kill_between_the_renames_is_rolled_back_by_recover_folder(tiny, tmp_path):
    pixels, exported, before = tiny[3:]
    out = str(tmp_path / "out")
    path = _copy(exported, out)
    fingerprint = model_fingerprint(path)
    script = KILLER.format(tests=TESTS, tmp=str(tmp_path / "child"), out=out)
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run(
        [sys.executable, "-c", script],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 9, proc.stderr[-2000:]
    base = os.path.dirname(path)
    left = sorted(os.listdir(base))
    assert left[0] == ".1.replaced" and left[1].startswith(".1.staging-"), left
    assert len(left) == 2 and not os.path.exists(path)
    # A reader meanwhile: the last complete version, read through committed_folder
    # by TF's loader, and by the package's loaders at the version's own path.
    assert committed_folder(path) == aside_path(path)
    np.testing.assert_allclose(_embedding(path, pixels), before, atol=1e-6)
    assert resolve_model_dir(base) == resolve_model_dir(path) == path
    assert model_fingerprint(path) == fingerprint
    model = anet_tf.load(path)
    assert model.path == path
    np.testing.assert_allclose(model.embed(list(pixels)), before, atol=1e-5)
    # The writer's recovery: the old version back, the dead writer's staging gone.
    done = recover_folder(path)
    assert done and "rolled back" in done
    assert os.listdir(base) == ["1"] and model_fingerprint(path) == fingerprint
    assert recover_folder(path) is None
