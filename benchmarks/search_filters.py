"""Filtered search latency: attribute, camera and capture-time filters at 10^5.

The gallery is ``benchmarks/search_scale.py``'s (10 images per vehicle, a random
unit centre plus noise, each vehicle with a colour of 10 and a type of 7), and
each image has a camera (of 20) and a capture time (uniform over one day from
2026-12-03T00:00Z). Queries are new images of red sedans of the gallery,
searched one at a time (batch 1, top-10, 1 faiss thread, as ``anet-tf search``
for one query) through ``GalleryIndex.search`` / ``MilvusGallery.search``.
Filters:

- ``none``;
- ``color=red``: 1/10 of the gallery;
- ``color=red,type=sedan``: 1/70;
- ``cameras 3-7, 08:00-09:00``: 5/20 cameras and 1/24 of the day, 1/96;
- ``red, cameras 3-7, 08:00-09:00``: the three at once, 1/960.

faiss runs each filter three ways, in the same run: ``rebuilt`` (the filter's
bitmap made again for every query, as before the selection was kept),
``selector`` (kept per filter, searched through the index with an
``IDSelectorBitmap``: ``exact_max`` 0) and ``default`` (kept, and a selection
of at most ``exact_max`` items, ``EXACT_SELECTION_MAX_FLAT`` for flat and
``EXACT_SELECTION_MAX`` for IVF, searched exactly over its own vectors).
``--sweep`` times time windows keeping 250 to 32,000 items both ways, which is
how the threshold was picked. Recall@10 is against the exact filtered top-10.
Milvus Lite (``--milvus``) runs the same filters on a FLAT collection with
INVERTED scalar indexes on the filter fields.

    python benchmarks/search_filters.py --n 100000 --milvus --sweep --json-out f5.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from machine import machine_info  # noqa: E402
from search_scale import chunk_embeddings  # noqa: E402
from search_scale import make_chunk  # noqa: E402
from search_scale import make_queries  # noqa: E402
from search_scale import recall  # noqa: E402

from anet_tf.search.gallery import parse_where  # noqa: E402
from anet_tf.search.sources import parse_time  # noqa: E402

CAMERAS = 20
DAY0 = parse_time("2026-12-03T00:00:00Z")
FILTERS = {
    "none": {},
    "color=red (1/10)": {"where": "color=red"},
    "color=red,type=sedan (1/70)": {"where": "color=red,type=sedan"},
    "cameras 3-7, 08:00-09:00 (1/96)": {
        "cameras": "3-7",
        "since": "2026-12-03T08:00:00Z",
        "until": "2026-12-03T09:00:00Z",
    },
    "red, cameras 3-7, 08:00-09:00 (1/960)": {
        "where": "color=red",
        "cameras": "3-7",
        "since": "2026-12-03T08:00:00Z",
        "until": "2026-12-03T09:00:00Z",
    },
}


def make_gallery(n: int, dim: int, chunk: int, seed: int):
    """The gallery as one Embeddings, with cameras and capture times."""
    parts = []
    for c, start in enumerate(range(0, n, chunk)):
        x, color, kind = make_chunk(c, min(chunk, n - start), dim, seed)
        parts.append(chunk_embeddings(x, color, kind, start, dim))
    emb = parts[0]
    for p in parts[1:]:
        emb.paths += p.paths
        emb.embedding = np.concatenate([emb.embedding, p.embedding])
        for a in ("color", "type"):
            emb.probs[a] = np.concatenate([emb.probs[a], p.probs[a]])
            emb.predicted[a] = np.concatenate([emb.predicted[a], p.predicted[a]])
            emb.known[a] = np.concatenate([emb.known[a], p.known[a]])
        emb.pids = np.concatenate([emb.pids, p.pids])
    rng = np.random.default_rng([seed, 7])
    emb.camids = rng.integers(0, CAMERAS, n).astype(np.int64)
    emb.times = DAY0 + rng.integers(0, 86400, n).astype(np.int64)
    emb.source = f"generated {n}"
    return emb


def arguments(spec: dict) -> dict:
    out = dict(spec)
    if "where" in out:
        out["where"] = parse_where(out["where"])
    return out


def timed(search, queries, spec, warmup: int, before=None):
    for q in queries[:warmup]:
        if before:
            before()
        search(q[None], spec)
    times, ids = [], []
    for q in queries:
        if before:
            before()
        t = time.perf_counter()
        _, i = search(q[None], spec)
        times.append((time.perf_counter() - t) * 1e3)
        ids.append(i[0])
    t = np.asarray(times)
    return {
        "p50_ms": round(float(np.percentile(t, 50)), 3),
        "min_ms": round(float(t.min()), 3),
        "max_ms": round(float(t.max()), 3),
    }, np.asarray(ids)


def run_faiss(args, emb, queries, exact: dict) -> dict:
    import faiss

    from anet_tf.search.index import build_index

    faiss.omp_set_num_threads(args.build_threads)
    results = {}
    for kind in ("flat", "ivf"):
        t = time.perf_counter()
        index = build_index(
            [emb], kind=kind, nlist=args.nlist if kind == "ivf" else None
        )
        build_s = time.perf_counter() - t
        faiss.omp_set_num_threads(1)
        name = index.meta["params"].get("factory", "IndexFlatIP")
        print(f"[{name}] built in {build_s:.1f} s", flush=True)

        def search(q, spec, index=index):
            return index.search(q, 10, **spec, threads=1)

        default_max = index.exact_max
        res = {
            "build_s": round(build_s, 1),
            "params": index.meta["params"],
            "exact_max": default_max,
        }
        for label, spec in FILTERS.items():
            spec = arguments(spec)
            kept = (
                int(index.filter_mask(**spec_mask(spec)).sum()) if spec else len(index)
            )
            row = {"kept": kept}
            for way, exact_max, before in (
                ("rebuilt", 0, index.forget_selections),
                ("selector", 0, None),
                ("default", default_max, None),
            ):
                if not spec and way != "default":
                    continue
                index.exact_max = exact_max
                index.forget_selections()
                timing, ids = timed(search, queries, spec, args.warmup, before)
                timing["recall_at_10"] = round(recall(ids, exact[label]), 4)
                row[way] = timing
            res[label] = row
            print(name, label, json.dumps(row), flush=True)
        if args.sweep:
            res["sweep"] = sweep(args, index, queries)
        results[name] = res
        faiss.omp_set_num_threads(args.build_threads)
    return results


def spec_mask(spec: dict) -> dict:
    out = dict(spec)
    out["where"] = out.get("where", {})
    return out


def sweep(args, index, queries) -> list[dict]:
    """Time windows keeping about ``size`` items, through the selector and
    exactly over the selection."""
    rows = []
    for size in (250, 500, 1000, 2000, 4000, 8000, 16000, 32000):
        if size > len(index):
            break
        spec = {"since": DAY0, "until": DAY0 + int(86400 * size / len(index))}
        row = {"kept": int(index.filter_mask({}, **spec).sum())}
        for way, exact_max in (("selector", 0), ("exact", 10**9)):
            index.exact_max = exact_max
            index.forget_selections()

            def search(q, s):
                return index.search(q, 10, **s, threads=1)

            row[way], _ = timed(
                search, queries[: args.sweep_queries], spec, args.warmup
            )
        rows.append(row)
        print("  sweep", json.dumps(row), flush=True)
    return rows


def exact_answers(emb, queries) -> dict:
    """The exact filtered top-10 of every filter (NumPy over the whole gallery)."""
    from anet_tf.search.index import build_index

    index = build_index([emb])
    scores = queries @ emb.embedding.T
    out = {}
    for label, spec in FILTERS.items():
        spec = arguments(spec)
        mask = index.filter_mask(**spec_mask(spec)) if spec else None
        s = scores if mask is None else np.where(mask[None, :], scores, -np.inf)
        top = np.argsort(-s, axis=1)[:, :10]
        out[label] = np.where(np.take_along_axis(s, top, 1) > -np.inf, top, -1)
    return out


def run_milvus(args, emb, queries, exact: dict) -> dict:
    from anet_tf.search.milvus import build_collection

    if os.path.exists(args.db):
        shutil.rmtree(args.db)
    t = time.perf_counter()
    g = build_collection([emb], args.db, "bench")
    build_s = time.perf_counter() - t
    print(f"[Milvus Lite FLAT] built in {build_s:.1f} s", flush=True)
    q = queries[: args.milvus_queries]

    def search(v, spec):
        return g.search(v, 10, **spec)

    res = {"build_s": round(build_s, 1)}
    for label, spec in FILTERS.items():
        timing, ids = timed(search, q, arguments(spec), min(args.warmup, 5))
        timing["recall_at_10"] = round(recall(ids, exact[label][: len(q)]), 4)
        res[label] = timing
        print("Milvus Lite FLAT", label, json.dumps(timing), flush=True)
    g.close()
    shutil.rmtree(args.db, ignore_errors=True)
    return {"Milvus Lite FLAT": res}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=100_000)
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--chunk", type=int, default=50_000)
    p.add_argument("--queries", type=int, default=200)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--nlist", type=int, default=256, help="IVF lists (faiss)")
    p.add_argument("--milvus", action="store_true", help="also Milvus Lite FLAT")
    p.add_argument("--milvus-queries", type=int, default=50)
    p.add_argument("--sweep", action="store_true", help="the exact-search threshold")
    p.add_argument("--sweep-queries", type=int, default=100)
    p.add_argument("--build-threads", type=int, default=2)
    p.add_argument("--db", default="/tmp/search_filters.db")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json-out", default=None)
    args = p.parse_args()
    info = machine_info()
    import faiss

    info["faiss"] = faiss.__version__
    info["load_average_start"] = os.getloadavg()
    print(json.dumps(info), flush=True)
    t = time.perf_counter()
    emb = make_gallery(args.n, args.dim, args.chunk, args.seed)
    queries = make_queries(args.n, args.chunk, args.dim, args.queries, args.seed)
    exact = exact_answers(emb, queries)
    results = run_faiss(args, emb, queries, exact)
    if args.milvus:
        import importlib.metadata

        info["pymilvus"] = importlib.metadata.version("pymilvus")
        info["milvus_lite"] = importlib.metadata.version("milvus-lite")
        results.update(run_milvus(args, emb, queries, exact))
    info["load_average_end"] = os.getloadavg()
    out = {
        "command": " ".join(sys.argv),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": info,
        "n": args.n,
        "dim": args.dim,
        "queries": args.queries,
        "wall_s": round(time.perf_counter() - t, 1),
        "results": results,
    }
    print(json.dumps(out, indent=2))
    if args.json_out:
        with open(args.json_out, "w", encoding="utf-8") as fh:
            json.dump(out, fh, indent=2)


if __name__ == "__main__":
    main()
