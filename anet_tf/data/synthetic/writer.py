"""Writing the synthetic dataset: :func:`generate` draws the identities, their
cameras and their train / query / gallery splits, renders every image and writes
the folder format of :mod:`anet_tf.data.generic` with the generator arguments
beside it."""

from __future__ import annotations

import dataclasses
import os
import shutil

import numpy as np
from PIL import Image

from anet_tf.config import SynthConfig
from anet_tf.data.generic import ATTRIBUTE_DIR
from anet_tf.data.generic import MANIFEST
from anet_tf.data.generic import write_folder
from anet_tf.data.records import UNKNOWN
from anet_tf.data.records import Record
from anet_tf.data.records import ReidDataset
from anet_tf.data.synthetic.scene import TrackStep
from anet_tf.data.synthetic.scene import make_camera
from anet_tf.data.synthetic.scene import render_image
from anet_tf.data.synthetic.vehicles import COLORS
from anet_tf.data.synthetic.vehicles import TYPES
from anet_tf.data.synthetic.vehicles import balanced_attributes
from anet_tf.data.synthetic.vehicles import sample_vehicle

ATTRIBUTES = ("color", "type")
SETTINGS = "synth.yaml"  # the generator arguments, written beside the manifest
TRACK_START = 1_796_256_000  # 2026-12-03T00:00:00Z, the earliest time of a track
TRACK_ENTRY_S = 600  # vehicles enter the road within these seconds of TRACK_START
TRACK_LAP_S = 3600  # a vehicle's next pass of its cameras comes this much later


# long: 23 lines of docstring; the body writes the splits and the settings file in one pass that the generated files' byte-identity depends on.
def generate(
    out_dir: str,
    *,
    ids: int = 120,
    test_ids: int = 40,
    cameras: int = 6,
    images_per_id: int = 12,
    image_size: int = 128,
    unlabelled_fraction: float = 0.1,
    seed: int = 0,
    balanced_train: bool = True,
    track_length: int = 1,
    overwrite: bool = False,
) -> str:
    """Render the synthetic dataset into ``out_dir`` in the folder format.

    Args:
        out_dir: output folder; created, or must be empty unless ``overwrite``.
        ids: identities in total, numbered from 1; the first ``ids - test_ids``
            train, the rest are split into query and gallery.
        test_ids: identities of the test split.
        cameras: cameras, numbered from 1.
        images_per_id: images per identity, spread over 2 or more cameras.
        image_size: side of the square JPEG images.
        unlabelled_fraction: fraction of train and of test identities whose
            attribute cells are left empty (unknown).
        seed: a non-negative integer; the same arguments give byte-identical
            files (with the same NumPy and Pillow versions).
        balanced_train: give every colour and type the same number of training
            identities (:func:`balanced_attributes`) instead of drawing them
            independently; the test split is the same either way.
        track_length: crops per track. Above 1, each of the ``images_per_id``
            photos becomes a track of this many consecutive crops by its camera
            (:func:`track_steps`: the vehicle comes closer, so it grows, moves, and
            its crop gets larger; light and blur change a little), with
            ``track_id`` and ``time`` columns (a second between crops; the
            tracks' times as a road gives them, :func:`track_times`). 1: no
            tracks, and the files of the generator without this option.
        overwrite: replace a dataset already in ``out_dir`` (only the files this
            generator writes are removed).

    Returns:
        ``out_dir``.
    """
    _check_arguments(
        ids, test_ids, cameras, images_per_id, image_size, unlabelled_fraction, seed
    )
    if track_length < 1:
        raise ValueError(
            f"need track_length >= 1. Received: track_length={track_length}"
        )
    _prepare(out_dir, overwrite)
    image_dir = os.path.join(out_dir, "images")
    os.makedirs(image_dir)

    camera_models = [
        make_camera(c, image_size, np.random.default_rng([seed, 1, c]))
        for c in range(cameras)
    ]
    num_train = ids - test_ids
    split_rng = np.random.default_rng([seed, 2])
    unlabelled = set()
    for group in (range(1, num_train + 1), range(num_train + 1, ids + 1)):
        count = int(unlabelled_fraction * len(group) + 0.5)  # half rounds up
        unlabelled.update(int(p) for p in split_rng.permutation(list(group))[:count])

    color_names, type_names = list(COLORS), list(TYPES)
    dataset = ReidDataset(
        name="synthetic",
        root=os.path.abspath(out_dir),
        attribute_names=list(ATTRIBUTES),
        attribute_classes=[color_names, type_names],
    )
    design = (
        balanced_attributes(num_train, np.random.default_rng([seed, 5]))
        if balanced_train
        else [(None, None)] * num_train
    )
    road = road_positions(seed, cameras) if track_length > 1 else None
    for pid in range(1, ids + 1):
        rng = np.random.default_rng([seed, 3, pid])
        color, type_ = design[pid - 1] if pid <= num_train else (None, None)
        spec = sample_vehicle(rng, color=color, type_=type_)
        attributes = (
            (UNKNOWN, UNKNOWN)
            if pid in unlabelled
            else (color_names.index(spec.color), type_names.index(spec.type))
        )
        cams = _cameras_of(rng, cameras, images_per_id)
        splits = ["train"] * images_per_id
        if pid > num_train:
            splits = _test_splits(rng, cams)
        sprites: dict = {}
        if road is not None:
            starts = track_times(cams, road, np.random.default_rng([seed, 8, pid]))
        for k, (cam, split) in enumerate(zip(cams, splits, strict=True)):
            if track_length == 1:
                image = render_image(
                    spec,
                    camera_models[cam - 1],
                    image_size,
                    np.random.default_rng([seed, 4, pid, k]),
                    sprites,
                )
                path = os.path.join(image_dir, f"{pid:04d}_c{cam:02d}_{k:03d}.jpg")
                image.save(path, "JPEG", quality=95)
                dataset.split(split).append(Record(path, pid, cam, attributes, split))
                continue
            track = f"{pid:04d}_c{cam:02d}_{k:03d}"
            start = starts[k]
            steps = track_steps(
                track_length, np.random.default_rng([seed, 6, pid, k]), image_size
            )
            for i, (step, side) in enumerate(steps):
                image = render_image(
                    spec,
                    camera_models[cam - 1],
                    image_size,
                    np.random.default_rng([seed, 4, pid, k]),
                    sprites,
                    step,
                )
                if side != image_size:
                    image = image.resize((side, side), Image.LANCZOS)
                path = os.path.join(image_dir, f"{track}_{i:02d}.jpg")
                image.save(path, "JPEG", quality=95)
                dataset.split(split).append(
                    Record(path, pid, cam, attributes, split, track, start + i)
                )
    write_folder(dataset, out_dir)
    with open(os.path.join(out_dir, SETTINGS), "w", encoding="utf-8") as f:
        f.write("# Generated by anet_tf.data.synthetic.generate with:\n")
        for key, value in dict(
            ids=ids,
            test_ids=test_ids,
            cameras=cameras,
            images_per_id=images_per_id,
            image_size=image_size,
            unlabelled_fraction=unlabelled_fraction,
            seed=seed,
            balanced_train=balanced_train,
        ).items():
            f.write(f"{key}: {value}\n")
        if track_length != 1:  # the settings file of a dataset without tracks stays
            f.write(f"track_length: {track_length}\n")
    return out_dir


def track_steps(
    length: int, rng: np.random.Generator, image_size: int
) -> list[tuple[TrackStep, int]]:
    """The crops of one track: (change from the track's base photo, crop side in
    pixels) for each, in time order. The vehicle comes closer as time goes on:
    it grows by up to 12 % and drifts sideways, and the detector's crop grows from
    70 % to 100 % of ``image_size`` (the earlier crops are rendered in full and
    scaled down, so they hold less detail); light (+-3 %) and blur (up to 0.5 px)
    change a little from crop to crop."""
    steps = []
    for i in range(length):
        t = i / (length - 1) if length > 1 else 1.0
        step = TrackStep(
            scale=0.94 + 0.12 * t + float(rng.uniform(-0.02, 0.02)),
            dx=0.08 * (t - 0.5) + float(rng.uniform(-0.01, 0.01)),
            dy=0.02 * (t - 0.5),
            light=1.0 + float(rng.uniform(-0.03, 0.03)),
            blur=float(rng.uniform(0.0, 0.5)),
        )
        steps.append((step, max(16, round(image_size * (0.7 + 0.3 * t)))))
    return steps


def road_positions(seed: int, cameras: int) -> np.ndarray:
    """Where the cameras of a dataset with tracks stand along its road, in km from
    camera 1 (index ``c - 1`` for camera ``c``): 0.5-1.5 km apart, in order."""
    gaps = np.random.default_rng([seed, 7]).uniform(0.5, 1.5, cameras - 1)
    return np.concatenate([[0.0], np.cumsum(gaps)])


def track_times(
    cams: list[int], road: np.ndarray, rng: np.random.Generator
) -> list[int]:
    """The first time (seconds since 1970) of each of one vehicle's tracks, as a road
    gives them: the cameras stand along a road at ``road[c - 1]`` km; the vehicle
    enters it within :data:`TRACK_ENTRY_S` seconds of :data:`TRACK_START`, drives one
    way (up or down the road, half and half) at its own speed (30-70 km/h) and passes
    its cameras in order, so the gap between two of its cameras is their distance
    over its speed; the r-th track of a camera is on the r-th pass, each pass
    :data:`TRACK_LAP_S` after the one before (longer than any pass, so the passes
    never meet). The vehicles of a dataset share the first passes' minutes: one
    camera sees several at once, as cross-camera linking meets them."""
    speed = rng.uniform(30.0, 70.0) / 3600.0  # km/s
    entry = TRACK_START + rng.uniform(0.0, TRACK_ENTRY_S)
    at = [road[c - 1] for c in cams]
    origin = min(at) if rng.random() < 0.5 else max(at)
    seen: dict[int, int] = {}
    starts = []
    for cam, km in zip(cams, at, strict=True):
        lap = seen.get(cam, 0)
        seen[cam] = lap + 1
        starts.append(int(round(entry + lap * TRACK_LAP_S + abs(km - origin) / speed)))
    return starts


def generate_from_config(
    synth: SynthConfig, out_dir: str, overwrite: bool = False
) -> str:
    """:func:`generate` with the settings of a ``data.synth`` config section."""
    return generate(out_dir, overwrite=overwrite, **dataclasses.asdict(synth))


def _check_arguments(ids, test_ids, cameras, images_per_id, image_size, fraction, seed):
    if not 1 <= test_ids < ids:
        raise ValueError(
            f"need 1 <= test_ids < ids. Received: test_ids={test_ids}, ids={ids}"
        )
    if cameras < 2:
        raise ValueError(
            f"need cameras >= 2 for cross-camera queries. Received: cameras={cameras}"
        )
    if images_per_id < 2:
        raise ValueError(
            f"need images_per_id >= 2 (a query and a gallery image). Received: "
            f"images_per_id={images_per_id}"
        )
    if image_size < 32:
        raise ValueError(f"need image_size >= 32. Received: image_size={image_size}")
    if not 0.0 <= fraction < 1.0:
        raise ValueError(
            f"unlabelled_fraction must be in [0, 1). Received: "
            f"unlabelled_fraction={fraction}"
        )
    if seed < 0:
        raise ValueError(f"seed must be >= 0. Received: seed={seed}")


def _prepare(out_dir: str, overwrite: bool) -> None:
    """Create ``out_dir``; refuse to mix with existing files unless ``overwrite``."""
    ours = ("images", ATTRIBUTE_DIR, MANIFEST, SETTINGS)
    if os.path.isdir(out_dir) and os.listdir(out_dir):
        if not overwrite:
            raise FileExistsError(
                f"{out_dir} is not empty; choose a new folder, or pass "
                f"overwrite=True to replace a dataset generated there"
            )
        others = sorted(set(os.listdir(out_dir)) - set(ours))
        if others:
            raise FileExistsError(
                f"{out_dir} holds files the generator did not write "
                f"({', '.join(others[:5])}"
                f"); refusing to overwrite it"
            )
        for name in ours:
            path = os.path.join(out_dir, name)
            if os.path.isdir(path):
                shutil.rmtree(path)
            elif os.path.exists(path):
                os.remove(path)
    os.makedirs(out_dir, exist_ok=True)


def _cameras_of(rng: np.random.Generator, cameras: int, images: int) -> list[int]:
    """Camera (1-based) of each image: an identity passes 2 or more cameras, each of
    which takes at least one of its images."""
    seen = int(rng.integers(2, min(cameras, images) + 1))
    chosen = rng.choice(cameras, seen, replace=False) + 1
    cams = [int(chosen[k % seen]) for k in range(images)]
    rng.shuffle(cams)
    return cams


def _test_splits(rng: np.random.Generator, cams: list[int]) -> list[str]:
    """One query image from each of one or two cameras, never from every camera of
    the identity, so each query keeps a gallery image from a camera it is not."""
    distinct = sorted(set(cams))
    num_query = min(int(rng.integers(1, 3)), len(distinct) - 1)
    query_cams = set(int(c) for c in rng.choice(distinct, num_query, replace=False))
    splits = []
    for cam in cams:
        if cam in query_cams:
            query_cams.discard(cam)
            splits.append("query")
        else:
            splits.append("gallery")
    return splits
