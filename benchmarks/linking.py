"""Cross-camera linking of tracks into vehicles: quality of the methods on
synthetic multi-camera tracks.

A synthetic road (``--setting``): cameras along it at known distances, each
seeing vehicles from one view (front, rear or side); every vehicle enters at a
random time, drives a run of consecutive cameras in one direction at its own
speed (so the gap between two cameras is distance / speed), is missed by a camera
now and then, stays 4-12 s in a camera's view (one crop a second) and its track
is sometimes broken in two by the tracker. A crop's feature is, before
L2-normalisation, its vehicle's unit centre + a per-(vehicle, view) offset + a
per-track offset + per-crop noise (each offset a Gaussian of the given norm); its
attribute probabilities (colour, 10 classes; type, 6) are a softmax with the
vehicle's true class raised. ``hard`` has more vehicles (more tracks of one camera
at once), noisier features and near-duplicates: a share of vehicles are twins of
another (a centre close to it, the same colour and type), as two cars of one model
and colour. The travel-time windows given to the linker are those a user would
write from the road: distance / 80 km/h less 12 s (the longest time in a view) to
distance / 25 km/h (the vehicles drive 30-70 km/h).

Methods (each with its threshold, and the full method's attribute weight, chosen
on a validation road of another seed to maximise pairwise F1, then scored on the
test roads):

- ``full``: :func:`anet_tf.search.link.link_tracks` with the track features, the
  constraints (same-camera overlap, travel windows) and the attribute term;
- ``appearance + constraints``: the same without attributes;
- ``appearance only``: average linkage of the track features, no constraint;
- ``image-level vote``: no track feature: up to 4 crops of each track clustered by
  SciPy's average linkage, each track taking its crops' majority cluster.

Scores (:mod:`anet_tf.evaluation.linking`): pairwise precision/recall/F1 of
same-vehicle track pairs, IDF1 over tracks and over crops, and the number of
forbidden pairs linked (0 for the constrained methods, by construction).

    python benchmarks/linking.py --json-out linking.json
    python benchmarks/linking.py --setting easy --seeds 1   # quick

With ``--crops FILE.npz`` it measures the same methods on a real model's
embeddings instead of synthetic vectors: ``FILE.npz`` is ``anet-tf embed`` of
(without ``--per-track``) the test crops of a synthetic dataset with tracks
(``anet-tf synth --track-length N``), ``--dataset`` that dataset's folder. Its
tracks are the ``track_id`` groups (features and attribute probabilities averaged
as ``embed --per-track`` does), their times and cameras those the generator
wrote; the travel windows are those a user would write from the dataset's road
(:func:`anet_tf.data.synthetic.writer.road_positions`): at least distance / 80 km/h
less 12 s between two cameras, no upper bound (a vehicle passes its cameras again
an hour later). Thresholds and the attribute weight are chosen on half of the
vehicles and scored on the other half, both ways (2-fold by vehicle).

    python benchmarks/linking.py --crops query.npz gallery.npz --dataset tracks40
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from dataclasses import dataclass

import numpy as np
import yaml
from machine import machine_info

from anet_tf.evaluation.linking import linking_scores
from anet_tf.evaluation.tracks import track_groups
from anet_tf.search.link import cannot_link
from anet_tf.search.link import constrained_agglomerative
from anet_tf.search.link import link_tracks
from anet_tf.search.link import track_similarity
from anet_tf.search.link import violations

DIM = 128
COLOR_PRIOR = np.array([0.22, 0.18, 0.14, 0.12, 0.08, 0.08, 0.06, 0.05, 0.04, 0.03])
TYPE_PRIOR = np.array([0.35, 0.25, 0.15, 0.1, 0.1, 0.05])
VIEWS = 3
EPOCH = 1_796_285_700  # 2026-12-03T08:15:00Z
SETTINGS = {
    "easy": dict(
        vehicles=120, cameras=4, period=900, twins=0.0, twin_offset=0.0,
        view=0.9, track=0.6, crop=0.8, attribute_gain=3.0,
    ),
    "hard": dict(
        vehicles=300, cameras=6, period=900, twins=0.3, twin_offset=0.5,
        view=1.1, track=0.7, crop=1.0, attribute_gain=2.0,
    ),
}  # fmt: skip
THRESHOLDS = np.round(np.arange(0.05, 0.951, 0.025), 3)
# a trained model's cosines crowd near 1 (different vehicles' tracks: median ~0.9)
REAL_THRESHOLDS = np.round(
    np.concatenate([np.arange(0.5, 0.95, 0.025), np.arange(0.95, 0.9995, 0.001)]), 4
)
ATTRIBUTE_WEIGHTS = (0.0, 0.1, 0.2, 0.4, 0.8)
CROPS_PER_TRACK = 4  # image-level vote
NO_UPPER_BOUND_S = 1e9  # a travel window open above


@dataclass
class Road:
    """Synthetic tracks: per track its camera, times, vehicle, crops."""

    cameras: np.ndarray
    start: np.ndarray
    end: np.ndarray
    vehicle: np.ndarray
    crops: list  # per track: float32 [L, D] crop features
    color: list  # per track: [L, 10] crop probabilities
    kind: list  # per track: [L, 6]
    windows: dict

    @property
    def lengths(self) -> np.ndarray:
        return np.asarray([len(c) for c in self.crops])

    def track_features(self) -> np.ndarray:
        means = np.stack([c.mean(axis=0) for c in self.crops])
        return means / np.linalg.norm(means, axis=1, keepdims=True)

    def track_probs(self) -> list[np.ndarray]:
        return [
            np.stack([p.mean(axis=0) for p in probs])
            for probs in (self.color, self.kind)
        ]


def _unit(rng, n, norm=1.0) -> np.ndarray:
    x = rng.normal(size=(n, DIM))
    return norm * x / np.linalg.norm(x, axis=1, keepdims=True)


def _probs(rng, true: int, classes: int, length: int, gain: float) -> np.ndarray:
    logits = rng.normal(size=(length, classes))
    logits[:, true] += gain
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def make_road(setting: str, seed: int) -> Road:
    """The synthetic road of ``setting`` (the module docstring)."""
    p = SETTINGS[setting]
    rng = np.random.default_rng(seed)
    n, m = p["vehicles"], p["cameras"]
    position = np.concatenate([[0.0], np.cumsum(rng.uniform(0.5, 1.5, m - 1))])  # km
    view = rng.integers(0, VIEWS, m)
    centre = _unit(rng, n)
    color = rng.choice(len(COLOR_PRIOR), n, p=COLOR_PRIOR)
    kind = rng.choice(len(TYPE_PRIOR), n, p=TYPE_PRIOR)
    twins = rng.random(n) < p["twins"]
    for v in np.flatnonzero(twins):
        other = int(rng.integers(0, n))
        if other != v:
            c = centre[other] + _unit(rng, 1, p["twin_offset"])[0]
            centre[v] = c / np.linalg.norm(c)
            color[v], kind[v] = color[other], kind[other]
    view_offset = _unit(rng, n * VIEWS, p["view"]).reshape(n, VIEWS, DIM)
    tracks = []
    for v in range(n):
        first, last = sorted(rng.integers(0, m, 2))
        route = list(range(first, last + 1))
        if rng.random() < 0.5:
            route.reverse()
        speed = rng.uniform(30, 70) / 3600  # km/s
        t = rng.uniform(0, p["period"])
        for k, cam in enumerate(route):
            if k:
                t += abs(position[cam] - position[route[k - 1]]) / speed
            dwell = int(rng.integers(4, 13))
            if rng.random() < 0.1:  # missed by this camera
                continue
            begin = int(t - dwell / 2)  # t: when it passes the camera
            pieces = [(begin, begin + dwell)]
            if rng.random() < 0.15 and dwell >= 4:  # the tracker breaks the track
                cut = begin + int(rng.integers(1, dwell - 1))
                pieces = [(begin, cut), (cut + 1, begin + dwell)]
            for s, e in pieces:
                length = e - s + 1
                base = (
                    centre[v] + view_offset[v, view[cam]] + _unit(rng, 1, p["track"])[0]
                )
                crops = base + _unit(rng, length, p["crop"])
                crops /= np.linalg.norm(crops, axis=1, keepdims=True)
                gain = p["attribute_gain"]
                tracks.append(
                    (cam, EPOCH + s, EPOCH + e, v, crops.astype(np.float32),
                     _probs(rng, color[v], len(COLOR_PRIOR), length, gain),
                     _probs(rng, kind[v], len(TYPE_PRIOR), length, gain))
                )  # fmt: skip
    windows = {}
    for a in range(m):
        for b in range(a + 1, m):
            km = abs(position[a] - position[b])
            # the gap from leaving one view to entering the other: travel time
            # less up to a dwell (12 s)
            windows[a, b] = (km / 80 * 3600 - 12, km / 25 * 3600)
    cams, start, end, vehicle, crops, colors, kinds = zip(*tracks, strict=True)
    return Road(
        np.asarray(cams), np.asarray(start), np.asarray(end), np.asarray(vehicle),
        list(crops), list(colors), list(kinds), windows,
    )  # fmt: skip


def image_level(road: Road):
    """A function threshold -> global ids: crops clustered by average linkage
    (SciPy), each track taking its crops' majority cluster."""
    from scipy.cluster.hierarchy import fcluster
    from scipy.cluster.hierarchy import linkage

    picks, owner = [], []
    for t, crops in enumerate(road.crops):
        rows = np.linspace(0, len(crops) - 1, min(CROPS_PER_TRACK, len(crops))).astype(
            int
        )
        picks.append(crops[rows])
        owner.extend([t] * len(rows))
    x = np.concatenate(picks).astype(np.float64)
    owner = np.asarray(owner)
    tree = linkage(x, method="average", metric="cosine")

    def ids(threshold: float) -> np.ndarray:
        crop_ids = fcluster(tree, 1.0 - threshold, criterion="distance")
        out = np.empty(len(road.crops), np.int64)
        for t in range(len(road.crops)):
            values, counts = np.unique(crop_ids[owner == t], return_counts=True)
            out[t] = values[np.argmax(counts)]
        return out

    return ids


def methods(road: Road) -> dict:
    """``{name: f(threshold, attribute_weight) -> ids}`` for the module's methods."""
    features = road.track_features()
    probs = road.track_probs()
    bare = np.zeros((len(features),) * 2, bool)
    vote = image_level(road)

    def full(t, w):
        return link_tracks(
            features, road.cameras, road.start, road.end, threshold=t,
            attributes=probs, attribute_weight=w, travel_windows=road.windows,
        )  # fmt: skip

    def appearance(t, w):
        return constrained_agglomerative(
            1.0 - track_similarity(features), bare, 1.0 - t
        )

    return {
        "full": full,
        "appearance + constraints": lambda t, w: full(t, 0.0),
        "appearance only": appearance,
        "image-level vote": lambda t, w: vote(t),
    }


def tune(road: Road, thresholds: np.ndarray = THRESHOLDS) -> dict:
    """Per method the (threshold, attribute weight) of the best pairwise F1."""
    best = {}
    for name, fn in methods(road).items():
        weights = ATTRIBUTE_WEIGHTS if name == "full" else (0.0,)
        scored = []
        for w in weights:
            for t in thresholds:
                f1 = linking_scores(road.vehicle, fn(float(t), w))["f1"]
                scored.append((f1, -w, float(t)))  # a tie: the smaller weight
        f1, w, t = max(scored)
        w = -w
        best[name] = {"threshold": t, "attribute_weight": w, "validation_f1": f1}
    return best


def score(road: Road, chosen: dict, weight_grid: bool) -> dict:
    forbidden = cannot_link(road.cameras, road.start, road.end, road.windows)
    out = {"truth_violations": violations(road.vehicle, forbidden)}  # 0: windows right
    for name, fn in methods(road).items():
        t, w = chosen[name]["threshold"], chosen[name]["attribute_weight"]
        ids = fn(t, w)
        out[name] = {
            **linking_scores(road.vehicle, ids),
            "idf1_crops": linking_scores(road.vehicle, ids, road.lengths)["idf1"],
            "violations": violations(ids, forbidden),
            "vehicles_found": int(len(np.unique(ids))),
        }
    if weight_grid:  # the attribute term at the full method's threshold
        fn = methods(road)["full"]
        t = chosen["full"]["threshold"]
        out["attribute_weights"] = {
            str(w): linking_scores(road.vehicle, fn(t, w))["f1"]
            for w in ATTRIBUTE_WEIGHTS
        }
    return out


def time_full(road: Road, chosen: dict, repeats: int = 3) -> dict:
    fn = methods(road)["full"]
    t, w = chosen["full"]["threshold"], chosen["full"]["attribute_weight"]
    fn(t, w)  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn(t, w)
        times.append(time.perf_counter() - t0)
    return {
        "median_s": statistics.median(times),
        "min_s": min(times),
        "max_s": max(times),
    }


def _mean(results: list[dict], name: str, key: str) -> str:
    values = [r[name][key] for r in results]
    if len(values) == 1:
        return f"{values[0]:.3f}" if isinstance(values[0], float) else str(values[0])
    return f"{np.mean(values):.3f} ({min(values):.3f}-{max(values):.3f})"


def table(setting: str, chosen: dict, results: list[dict]) -> str:
    lines = [
        f"| {setting} | threshold | attr. weight | pairwise P | pairwise R | pairwise F1 "
        "| IDF1 (tracks) | IDF1 (crops) | forbidden pairs linked |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name in chosen:
        cells = [
            _mean(results, name, k)
            for k in ("precision", "recall", "f1", "idf1", "idf1_crops")
        ]
        linked = sum(r[name]["violations"] for r in results)
        lines.append(
            f"| {name} | {chosen[name]['threshold']:.3f} | "
            f"{chosen[name]['attribute_weight']:g} | {' | '.join(cells)} | {linked} |"
        )
    return "\n".join(lines)


# ------------------------------------------------------- a real model's embeddings


def road_of_crops(crops_files: list[str], dataset: str) -> Road:
    """The tracks of crop embeddings files (e.g. the query and the gallery split) of
    a synthetic dataset with tracks, and the travel windows of its road (module
    docstring)."""
    from anet_tf.data.synthetic.writer import SETTINGS as SYNTH_SETTINGS
    from anet_tf.data.synthetic.writer import road_positions
    from anet_tf.search.embeddings import load_embeddings

    with open(f"{dataset}/{SYNTH_SETTINGS}", encoding="utf-8") as fh:
        synth = yaml.safe_load(fh)
    road = road_positions(int(synth["seed"]), int(synth["cameras"]))
    windows = {}
    for a in range(1, len(road) + 1):
        for b in range(a + 1, len(road) + 1):
            km = abs(road[a - 1] - road[b - 1])
            windows[a, b] = (km / 80 * 3600 - 12, NO_UPPER_BOUND_S)
    tracks = []  # (camera, start, end, vehicle, crops, colour, type) per track
    for path in crops_files:
        emb = load_embeddings(path)
        color, kind = (emb.probs[a] for a in emb.attribute_names[:2])
        times = np.asarray(emb.times, np.int64)
        for g in track_groups(emb.track_ids.tolist()):
            tracks.append(
                (emb.camids[g[0]], times[g].min(), times[g].max(), emb.pids[g[0]],
                 np.asarray(emb.embedding[g], np.float32), color[g], kind[g])
            )  # fmt: skip
    cams, start, end, vehicle, crops, colors, kinds = zip(*tracks, strict=True)
    return Road(
        np.asarray(cams), np.asarray(start), np.asarray(end), np.asarray(vehicle),
        list(crops), list(colors), list(kinds), windows,
    )  # fmt: skip


def part(road: Road, keep: np.ndarray) -> Road:
    """The tracks ``keep`` (bool [T]) of ``road``."""
    idx = np.flatnonzero(keep)
    return Road(
        road.cameras[idx], road.start[idx], road.end[idx], road.vehicle[idx],
        [road.crops[i] for i in idx], [road.color[i] for i in idx],
        [road.kind[i] for i in idx], road.windows,
    )  # fmt: skip


def constraint_counts(road: Road) -> dict:
    """How much the constraints can do: pairs of tracks of different vehicles, of
    those the ones the same-camera overlap forbids and the ones all constraints
    forbid, and forbidden pairs of one vehicle (0: the windows hold)."""
    other = road.vehicle[:, None] != road.vehicle[None, :]
    upper = np.triu(np.ones_like(other), 1)
    overlap = cannot_link(road.cameras, road.start, road.end)
    both = cannot_link(road.cameras, road.start, road.end, road.windows)
    return {
        "different_vehicle_pairs": int((other & upper).sum()),
        "forbidden_by_overlap": int((overlap & other & upper).sum()),
        "forbidden_by_all": int((both & other & upper).sum()),
        "truth_violations": violations(road.vehicle, both),
    }


def real_main(args, info: dict) -> int:
    road = road_of_crops(args.crops, args.dataset)
    vehicles = np.unique(road.vehicle)
    fold = np.isin(road.vehicle, vehicles[::2])
    counts = constraint_counts(road)
    print(f"parameters: crops={args.crops} dataset={args.dataset}")
    print(f"{len(road.crops)} tracks of {len(vehicles)} vehicles, "
          f"{int(road.lengths.sum())} crops, cameras {sorted(set(road.cameras.tolist()))}; "
          f"constraints:", json.dumps(counts))  # fmt: skip
    folds = []
    for tune_on, score_on in ((fold, ~fold), (~fold, fold)):
        chosen = tune(part(road, tune_on), REAL_THRESHOLDS)
        result = score(part(road, score_on), chosen, weight_grid=False)
        folds.append({"chosen": chosen, "result": result})
    results = [f["result"] for f in folds]
    lines = [
        "| method | thresholds (folds) | attr. weight | pairwise P | pairwise R "
        "| pairwise F1 | IDF1 (tracks) | IDF1 (crops) | forbidden pairs linked |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name in folds[0]["chosen"]:
        cells = [
            _mean(results, name, k)
            for k in ("precision", "recall", "f1", "idf1", "idf1_crops")
        ]
        t = "/".join(f"{f['chosen'][name]['threshold']:.3f}" for f in folds)
        w = "/".join(f"{f['chosen'][name]['attribute_weight']:g}" for f in folds)
        linked = sum(r[name]["violations"] for r in results)
        lines.append(f"| {name} | {t} | {w} | {' | '.join(cells)} | {linked} |")
    print("\n" + "\n".join(lines))
    if args.json_out:
        payload = {"machine": info, "crops": args.crops, "dataset": args.dataset,
                   "tracks": len(road.crops), "vehicles": int(len(vehicles)),
                   "constraints": counts, "folds": folds}  # fmt: skip
        with open(args.json_out, "w", encoding="utf-8") as fh:
            json.dump(payload, fh, indent=2, default=float)
        print(f"wrote {args.json_out}")
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--setting", choices=[*SETTINGS, "both"], default="both")
    p.add_argument("--seeds", type=int, default=3, help="test roads per setting")
    p.add_argument("--json-out", default=None)
    p.add_argument(
        "--crops",
        nargs="+",
        default=None,
        metavar="FILE.npz",
        help="a real model's crop embeddings (anet-tf embed, e.g. of the query and "
        "the gallery split) of a synthetic dataset with tracks, instead of synthetic "
        "vectors",
    )
    p.add_argument("--dataset", default=None, help="with --crops: the dataset's folder")
    args = p.parse_args(argv)
    if args.crops and not args.dataset:
        p.error("--crops needs --dataset (the folder with its synth.yaml)")
    info = machine_info()
    print("machine:", json.dumps(info))
    if args.crops:
        return real_main(args, info)
    settings = list(SETTINGS) if args.setting == "both" else [args.setting]
    payload = {"machine": info, "settings": {}}
    for setting in settings:
        print(f"parameters ({setting}):", json.dumps(SETTINGS[setting]))
        chosen = tune(make_road(setting, seed=1000))
        roads = [make_road(setting, seed=s) for s in range(args.seeds)]
        results = [score(r, chosen, weight_grid=True) for r in roads]
        sizes = [len(r.crops) for r in roads]
        timing = time_full(roads[0], chosen)
        print(f"\n{setting}: {len(roads)} test roads of {sizes} tracks; linking "
              f"{sizes[0]} tracks (full): median {timing['median_s']:.3f} s "
              f"(min {timing['min_s']:.3f}, max {timing['max_s']:.3f})")  # fmt: skip
        print(table(setting, chosen, results))
        print("forbidden pairs of one true vehicle (0: the windows hold):",
              [r["truth_violations"] for r in results])  # fmt: skip
        grid = {
            w: [r["attribute_weights"][str(w)] for r in results]
            for w in ATTRIBUTE_WEIGHTS
        }
        print("pairwise F1 of full by attribute weight (its threshold): " + ", ".join(
            f"{w:g}: {np.mean(v):.3f} ({min(v):.3f}-{max(v):.3f})" for w, v in grid.items()))  # fmt: skip
        payload["settings"][setting] = {
            "parameters": SETTINGS[setting],
            "chosen": chosen,
            "tracks": sizes,
            "results": results,
            "timing_full": timing,
        }
    if args.json_out:
        with open(args.json_out, "w", encoding="utf-8") as fh:
            json.dump(payload, fh, indent=2)
        print(f"wrote {args.json_out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
