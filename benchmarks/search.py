"""Gallery search latency: one query against a 100,000-image index.

Random L2-normalised float32 gallery vectors (D = 128, the synthetic default's
feature j, and D = 512, the paper's) shaped like re-id features (10 images per
vehicle: a random unit centre per vehicle plus noise), with random predicted
attributes (10 colours, 7 types, as the synthetic dataset), are indexed with
:func:`anet_tf.search.index.build_index` and searched through
:meth:`GalleryIndex.search`, the call ``anet-tf search`` makes after embedding its
queries. Queries are new images of gallery vehicles, searched one at a time (batch 1,
top-10), and timed per query: the median, min and max over ``--queries`` queries
after ``--warmup`` untimed ones. Each case runs with faiss limited to 1 thread and
with all cores (``--threads-list``): on a shared machine OpenMP threads that wait
for a busy core make a batch-1 query slower, not faster. Cases:

- ``flat``: exact inner product (``IndexFlatIP``, the default index);
- ``flat + color``: the same with ``--where color=red`` (about 1/10 of the gallery);
- ``flat + color,type``: ``--where color=red,type=sedan`` (about 1/70);
- ``ivfpq``: ``--kind ivfpq`` with its default settings, with its recall@10 against
  the exact top-10 of the same queries;
- ``numpy``: the baseline, ``gallery @ q`` then ``argpartition`` top-10 (exact).

Embedding the query image (the SavedModel call) is not part of these timings.

    python benchmarks/search.py --json-out search.json
    python benchmarks/search.py --n 20000 --queries 50   # quick
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
from machine import machine_info

from anet_tf.search.embeddings import Embeddings
from anet_tf.search.index import build_index

COLORS = [
    "white",
    "black",
    "gray",
    "silver",
    "red",
    "blue",
    "yellow",
    "green",
    "brown",
    "orange",
]
TYPES = ["sedan", "suv", "van", "hatchback", "pickup", "bus", "truck"]


def machine() -> dict:
    """:func:`machine_info` plus the faiss version and its thread count."""
    import faiss

    info = machine_info()
    info["faiss"] = faiss.__version__
    info["faiss_threads"] = faiss.omp_get_max_threads()
    return info


def make_gallery(
    n: int, dim: int, seed: int, per_id: int = 10
) -> tuple[Embeddings, np.ndarray]:
    """``n`` images of ``n / per_id`` vehicles, and the vehicles' centres."""
    rng = np.random.default_rng(seed)
    centres = _unit(rng.standard_normal((max(1, n // per_id), dim), dtype=np.float32))
    x = _images_of(centres, np.arange(n) % len(centres), rng)
    color = rng.integers(0, len(COLORS), n)
    kind = rng.integers(0, len(TYPES), n)
    emb = Embeddings(
        paths=[f"gallery/{i:07d}.jpg" for i in range(n)],
        embedding=x,
        attribute_names=["color", "type"],
        attribute_classes=[COLORS, TYPES],
        probs={
            "color": np.eye(len(COLORS), dtype=np.float32)[color],
            "type": np.eye(len(TYPES), dtype=np.float32)[kind],
        },
        predicted={
            "color": np.asarray(COLORS)[color],
            "type": np.asarray(TYPES)[kind],
        },
        known={"color": np.full(n, "", str), "type": np.full(n, "", str)},
        pids=np.full(n, -1, np.int64),
        camids=np.full(n, -1, np.int64),
        model={
            "path": "benchmark",
            "fingerprint": "benchmark",
            "embedding_dim": dim,
            "attributes": [
                {"name": "color", "classes": COLORS},
                {"name": "type", "classes": TYPES},
            ],
        },
        source="random",
    )
    return emb, centres


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _images_of(
    centres: np.ndarray, ids: np.ndarray, rng, noise: float = 0.8
) -> np.ndarray:
    dim = centres.shape[1]
    n = rng.standard_normal((len(ids), dim), dtype=np.float32)
    return np.ascontiguousarray(_unit(centres[ids] + noise * n / np.sqrt(dim)))


def make_queries(centres: np.ndarray, count: int, seed: int) -> np.ndarray:
    """New images of random gallery vehicles."""
    rng = np.random.default_rng(seed + 1)
    return _images_of(centres, rng.integers(0, len(centres), count), rng)


def time_queries(fn, queries: np.ndarray, warmup: int) -> tuple[dict, list]:
    """Per-query latency in ms of ``fn(q [1, D]) -> ids``, and each query's ids."""
    for q in queries[:warmup]:
        fn(q[None])
    times, ids = [], []
    for q in queries[warmup:]:
        t0 = time.perf_counter()
        out = fn(q[None])
        times.append(1000 * (time.perf_counter() - t0))
        ids.append(out)
    t = np.asarray(times)
    stats = {
        "median_ms": round(float(np.median(t)), 3),
        "min_ms": round(float(t.min()), 3),
        "max_ms": round(float(t.max()), 3),
        "p95_ms": round(float(np.percentile(t, 95)), 3),
        "queries": len(t),
    }
    return stats, ids


def numpy_top_k(vectors: np.ndarray, k: int):
    def search(q):
        scores = vectors @ q[0]
        top = np.argpartition(-scores, k)[:k]
        return top[np.argsort(-scores[top], kind="stable")]

    return search


def _label(case: str, threads: int) -> str:
    return f"{case}, {threads} thread{'s' if threads > 1 else ''}"


def bench_dim(n: int, dim: int, args) -> dict:
    import faiss

    gallery, centres = make_gallery(n, dim, args.seed)
    queries = make_queries(centres, args.warmup + args.queries, args.seed)
    k = args.top_k
    result: dict = {"dim": dim, "n": n, "cases": {}}

    t0 = time.perf_counter()
    flat = build_index([gallery])
    result["flat_build_s"] = round(time.perf_counter() - t0, 2)
    t0 = time.perf_counter()
    ivf = build_index([gallery], kind="ivfpq", seed=args.seed)
    result["ivfpq_build_s"] = round(time.perf_counter() - t0, 2)
    result["ivfpq_params"] = ivf.meta["params"]
    print(
        f"  D={dim}: built flat in {result['flat_build_s']} s, "
        f"{ivf.meta['params']['factory']} (nprobe {ivf.meta['params']['nprobe']}) in "
        f"{result['ivfpq_build_s']} s"
    )

    cases = {
        "flat": lambda q: flat.search(q, k)[1][0],
        "flat + color": lambda q: flat.search(q, k, where={"color": ["red"]})[1][0],
        "flat + color,type": lambda q: flat.search(
            q, k, where={"color": ["red"], "type": ["sedan"]}
        )[1][0],
        "ivfpq": lambda q: ivf.search(q, k)[1][0],
    }
    found = {}

    def run(name, fn):
        stats, ids = time_queries(fn, queries, args.warmup)
        result["cases"][name] = stats
        found[name] = ids
        print(
            f"  D={dim:<4} {name:<32} median {stats['median_ms']:8.3f} ms   "
            f"min {stats['min_ms']:8.3f}   max {stats['max_ms']:8.3f}   "
            f"p95 {stats['p95_ms']:8.3f}"
        )

    run("numpy (baseline)", numpy_top_k(gallery.embedding, k))
    default_threads = faiss.omp_get_max_threads()
    for threads in args.threads_list:
        threads = threads or default_threads
        faiss.omp_set_num_threads(threads)
        for name, fn in cases.items():
            run(_label(name, threads), fn)
    faiss.omp_set_num_threads(default_threads)
    first = args.threads_list[0] or default_threads
    exact = found[_label("flat", first)]
    same = np.mean(
        [
            np.array_equal(a, b)
            for a, b in zip(found["numpy (baseline)"], exact, strict=True)
        ]
    )
    recall = np.mean(
        [
            len(set(a.tolist()) & set(b.tolist())) / k
            for a, b in zip(found[_label("ivfpq", first)], exact, strict=True)
        ]
    )
    base = result["cases"]["numpy (baseline)"]["median_ms"]
    for stats in result["cases"].values():
        stats["speedup_vs_numpy"] = round(base / stats["median_ms"], 2)
    result["flat_equals_numpy_fraction"] = float(same)
    result["ivfpq_recall_at_k"] = round(float(recall), 4)
    print(
        f"  D={dim:<4} flat top-{k} == numpy top-{k} for {100 * same:.0f}% of queries; "
        f"ivfpq recall@{k} against flat: {recall:.3f}"
    )
    return result


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--n", type=int, default=100_000, help="gallery images (default 100,000)"
    )
    p.add_argument("--dims", type=int, nargs="+", default=[128, 512])
    p.add_argument("--queries", type=int, default=200, help="timed queries per case")
    p.add_argument("--warmup", type=int, default=20, help="untimed queries first")
    p.add_argument("--top-k", type=int, default=10)
    p.add_argument(
        "--threads-list",
        type=int,
        nargs="+",
        default=[1, 0],
        help="faiss OpenMP thread counts to time (0 = all cores; default 1 0)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json-out", default=None)
    args = p.parse_args(argv)
    info = machine()
    print("machine:", json.dumps(info))
    print(
        f"parameters: n={args.n} dims={args.dims} top_k={args.top_k} "
        f"queries={args.queries} warmup={args.warmup} batch=1"
    )
    load_before = os.getloadavg()
    print(f"load average at start: {load_before}")
    results = [bench_dim(args.n, d, args) for d in args.dims]
    load_after = os.getloadavg()
    print(f"load average at end: {load_after}")
    target = 50.0
    for r in results:
        for name, stats in r["cases"].items():
            if name.startswith("flat"):
                verdict = "met" if stats["median_ms"] < target else "NOT met"
                print(
                    f"target < {target:.0f} ms, D={r['dim']}, {name}: {verdict} "
                    f"({stats['median_ms']:.2f} ms)"
                )
    if args.json_out:
        payload = {
            "benchmark": "search",
            "machine": info,
            "parameters": vars(args),
            "loadavg_before": load_before,
            "loadavg_after": load_after,
            "results": results,
        }
        with open(args.json_out, "w", encoding="utf-8") as fh:
            json.dump(payload, fh, indent=2)
        print(f"wrote {args.json_out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
