"""The synthetic vehicle dataset: determinism, splits, unlabelled identities, looks."""

import hashlib
import os
from dataclasses import replace

import numpy as np
import pytest

from anet_tf.config import SynthConfig
from anet_tf.data.generic import read_folder
from anet_tf.data.records import pattern_index
from anet_tf.data.synthetic import COLORS
from anet_tf.data.synthetic import TYPES
from anet_tf.data.synthetic import generate
from anet_tf.data.synthetic import generate_from_config
from anet_tf.data.synthetic import render_vehicle
from anet_tf.data.synthetic import sample_vehicle

TINY = dict(
    ids=8,
    test_ids=3,
    cameras=3,
    images_per_id=4,
    image_size=64,
    unlabelled_fraction=0.25,
)


def digest(root) -> dict[str, str]:
    """sha256 of every file under ``root``, by relative path."""
    out = {}
    for folder, _, names in os.walk(root):
        for name in names:
            path = os.path.join(folder, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, root)] = hashlib.sha256(f.read()).hexdigest()
    return out


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("synth") / "tiny")
    generate_from_config(SynthConfig(**TINY, seed=0), root)
    return root


@pytest.fixture(scope="module")
def dataset(tiny):
    return read_folder(tiny, ["color", "type"])


def test_same_seed_gives_identical_files(tiny, tmp_path):
    again = generate(str(tmp_path / "again"), **TINY, seed=0)
    first = digest(tiny)
    assert len(first) == 8 * 4 + 4  # images, manifest, two class files, settings
    assert digest(again) == first


def test_other_seed_gives_other_files(tiny, tmp_path):
    other = digest(generate(str(tmp_path / "other"), **TINY, seed=1))
    first = digest(tiny)
    images = [p for p in first if p.startswith("images")]
    assert sum(first[p] != other.get(p) for p in images) >= len(images) // 2
    assert first["manifest.csv"] != other["manifest.csv"]


def test_reads_back_with_veri_like_splits(dataset):
    assert dataset.attribute_classes == [list(COLORS), list(TYPES)]
    assert len(dataset.train) == 5 * 4
    assert dataset.train_pids() == [1, 2, 3, 4, 5]
    test = dataset.query + dataset.gallery
    assert len(test) == 3 * 4
    assert {r.pid for r in dataset.query} == {6, 7, 8}
    assert {r.pid for r in dataset.gallery} == {6, 7, 8}
    assert {r.camid for r in dataset.train + test} <= {1, 2, 3}
    assert dataset.problems == []
    for pid in range(1, 9):
        cams = {r.camid for r in dataset.train + test if r.pid == pid}
        assert len(cams) >= 2, f"identity {pid} seen by one camera only"


def test_every_query_has_a_cross_camera_gallery_match(dataset):
    assert dataset.query
    for q in dataset.query:
        assert any(g.pid == q.pid and g.camid != q.camid for g in dataset.gallery)
    # At most one query per camera of an identity.
    pairs = [(q.pid, q.camid) for q in dataset.query]
    assert len(pairs) == len(set(pairs))


def test_unlabelled_fraction_gives_unknown_attributes(dataset):
    records = dataset.train + dataset.query + dataset.gallery
    by_pid = {}
    for r in records:
        by_pid.setdefault(r.pid, set()).add(r.attributes)
    assert all(len(values) == 1 for values in by_pid.values())
    unknown = sorted(p for p, v in by_pid.items() if v == {(-1, -1)})
    # 0.25 of 5 train and of 3 test identities, rounded: one of each.
    assert len(unknown) == 2
    assert sum(p <= 5 for p in unknown) == 1
    labelled = [a for p, v in by_pid.items() if p not in unknown for a in v]
    assert all(c >= 0 and t >= 0 for c, t in labelled)


def test_pattern_index_on_records(dataset):
    m = dataset.num_classes
    assert m == [10, 7]
    for r in dataset.train + dataset.query + dataset.gallery:
        index = pattern_index(r.attributes, m)
        if -1 in r.attributes:
            assert index == -1
        else:
            assert index == r.attributes[0] * 7 + r.attributes[1]
            assert 0 <= index < 70


def test_colour_is_visible_on_the_body():
    rng = np.random.default_rng(0)
    for _ in range(6):
        spec = sample_vehicle(rng)
        for view in ("side", "front", "rear"):
            pixels = np.asarray(render_vehicle(spec, view, 200))
            body = pixels[pixels[..., 3] > 0][:, :3].astype(int)
            # Glass, tyres, lights and details cover the rest; the exact body colour
            # alone still covers a fifth of the vehicle (shaded parts come on top).
            share = (body == spec.body).all(axis=1).mean()
            assert share > 0.15, (spec.type, spec.color, view, share)
            assert np.abs(np.array(spec.body) - COLORS[spec.color]).max() <= 10


def test_types_have_distinct_silhouettes():
    rng = np.random.default_rng(0)
    base = sample_vehicle(rng)
    masks = {}
    for type_ in TYPES:
        # Same length, wheels on the same ground line: what a camera compares.
        alpha = np.asarray(render_vehicle(replace(base, type=type_), "side", 200))
        mask = np.zeros((200, 200), bool)
        mask[200 - alpha.shape[0] :] = alpha[..., 3] > 0
        masks[type_] = mask
    for i, a in enumerate(TYPES):
        for b in TYPES[i + 1 :]:
            iou = (masks[a] & masks[b]).sum() / (masks[a] | masks[b]).sum()
            assert iou < 0.9, f"{a} and {b} silhouettes overlap {iou:.2f}"


def test_refuses_a_non_empty_folder_unless_overwrite(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not empty"):
        generate(str(tmp_path), **TINY)
    with pytest.raises(FileExistsError, match="notes.txt"):
        generate(str(tmp_path), **TINY, overwrite=True)
    root = str(tmp_path / "data")
    generate(root, **{**TINY, "ids": 6})
    generate(root, **TINY, overwrite=True)
    assert len(os.listdir(os.path.join(root, "images"))) == 8 * 4


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"test_ids": 8}, "test_ids=8, ids=8"),
        ({"cameras": 1}, "cameras=1"),
        ({"images_per_id": 1}, "images_per_id=1"),
        ({"unlabelled_fraction": 1.0}, "unlabelled_fraction=1.0"),
    ],
)
def test_bad_arguments(tmp_path, change, message):
    with pytest.raises(ValueError, match=f"Received: {message}"):
        generate(str(tmp_path / "x"), **{**TINY, **change})


def test_balanced_attributes_cover_every_class_evenly():
    from collections import Counter

    from anet_tf.data.synthetic import balanced_attributes

    design = balanced_attributes(80, np.random.default_rng(0))
    colors = Counter(c for c, _ in design)
    types = Counter(t for _, t in design)
    assert set(colors) == set(COLORS) and set(types) == set(TYPES)
    assert max(colors.values()) - min(colors.values()) <= 1
    assert max(types.values()) - min(types.values()) <= 1
    # Not one fixed pairing: colours meet several types.
    assert len(set(design)) > len(COLORS)


def test_balanced_train_leaves_the_test_split_unchanged(tmp_path):
    args = dict(TINY, ids=30, test_ids=6, seed=3)
    on = generate(str(tmp_path / "on"), **args, balanced_train=True)
    off = generate(str(tmp_path / "off"), **args, balanced_train=False)
    a, b = read_folder(on, ["color", "type"]), read_folder(off, ["color", "type"])
    da, db = digest(on), digest(off)
    for split in ("query", "gallery"):
        ra, rb = a.split(split), b.split(split)
        assert [(r.pid, r.camid, r.attributes) for r in ra] == [
            (r.pid, r.camid, r.attributes) for r in rb
        ]
        for r in ra:
            rel = os.path.relpath(r.path, on)
            assert da[rel] == db[rel]
    # ... while the training identities' colours do change.
    assert [r.attributes for r in a.train] != [r.attributes for r in b.train]
    counts = np.bincount(
        [r.attributes[0] for r in a.train if r.attributes[0] >= 0], minlength=len(COLORS)
    )
    assert (counts > 0).sum() >= len(COLORS) - 3  # 24 ids, 10 colours, some unlabelled
