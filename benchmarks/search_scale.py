"""The limits of one machine: gallery search at 10^5-10^7 vectors.

Generated re-id-like gallery vectors (10 images per vehicle: a random unit centre
per vehicle plus noise, as ``benchmarks/search.py``), each vehicle with a random
colour (of 10) and type (of 7) that all its images carry, are streamed in chunks of ``--chunk`` vectors,
so memory holds the indexes and one chunk, never the whole gallery. Each chunk is
added to every index under test and folded into the exact top-10 of each query
(unfiltered and per filter), the ground truth of recall@10.

Per index: build time (training plus adding every chunk), index memory (the
serialised faiss index; for Milvus Lite, which serves from inside the process,
this process's memory growth while it builds and loads the collection, and the
database's size on disk), recall@10 against the exact top-10, and batch-1 latency p50 / p99 over ``--queries`` queries (top-10) with no filter, with
``color=red`` (1/10 of the gallery) and with ``color=red,type=sedan`` (1/70). The
queries are new images of red sedans of the gallery, so the exact top-10 are
mostly the images of the query's vehicle, filtered or not. With ``--vectors
isotropic`` (the default) the vectors are isotropic in D dimensions, a hard case
for IVF's clustering; ``--vectors model`` draws them from the generator fitted to
a trained run's embeddings (``benchmarks/model_vectors.py``, ``--vector-model``).
IVF kinds are also timed at ``--nprobe-extra`` lists.

``ivfpqr`` builds one IVF-PQ and wraps it with each refine of ``--refines``
(:func:`ivfpqr_indexes`), and times each also at the ``--sweep`` settings
(``NPROBExK_FACTOR``, no filter). ``--kinds ivfpq:1024,ivfpqr`` gives a kind its
own nlist. The refine ``fp16-disk`` (``index build --refine fp16-disk``) writes its
float16 rows chunk by chunk to ``refine.npy`` in ``--refine-dir`` and searches them
through a memory map: its memory is the IVF-PQ alone, the file's size is reported
apart, and it is timed first with the file out of the page cache (``cold``:
``posix_fadvise(DONTNEED)`` after an ``fsync``; the unfiltered queries, no
warm-up), without and with the prefetch of each shortlist's rows
(:meth:`GalleryIndex.prefetch_refine_rows`), then as the others (the rows those
queries read now cached; since 2026-12-07 each filter's queries also run once
untimed first, so its rows are cached too).

Backends:

- ``faiss``: the kinds of ``--kinds`` (flat, ivf, ivfpq, hnsw) built with the
  settings of :func:`anet_tf.search.gallery.index_params` (``--nlist`` etc.
  override them) and searched through :meth:`GalleryIndex.search` (what
  ``anet-tf search`` calls), with 1 faiss thread as the CLI for batch-1 queries.
  IVF kinds train on the first ``--train`` vectors.
- ``milvus``: a Milvus Lite database (``--db``), built with
  :func:`anet_tf.search.milvus.build_collection` on the first chunk and the same
  insert for the others, searched through :meth:`MilvusGallery.search`; the time
  of one incremental ``index add`` of a further chunk (with its duplicate check)
  is reported too. ``--milvus-types`` instead inserts the gallery once and
  builds, loads and searches each Milvus index type of the list over it
  (:func:`run_milvus_types`), at the settings of ``--kind ivfpqr``.

    python benchmarks/search_scale.py --n 1000000 --kinds flat,ivf,ivfpq --nlist 1024 --json-out s6.json
    python benchmarks/search_scale.py --n 10000000 --kinds ivfpq --nlist 1024 --json-out s7.json
    python benchmarks/search_scale.py --backend milvus --n 100000 --kinds flat,ivf --json-out m5.json
    python benchmarks/search_scale.py --vectors model --n 1000000 --kinds ivfpqr --opq 256 \
        --refines fp16,flat --sweep 32x10,32x50,64x50 --json-out m6opq2.json
    python benchmarks/search_scale.py --vectors model --n 100000 --kinds ivfpqr \
        --refines fp16-disk,fp16 --json-out m5disk.json
    python benchmarks/search_scale.py --backend milvus --vectors model --n 100000 \
        --queries 100 --milvus-types FLAT,IVF_SQ8,IVF_RABITQ,HNSW_SQ --json-out m5types.json
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from machine import machine_info  # noqa: E402
from model_vectors import DEFAULT_MODEL_FILE  # noqa: E402
from model_vectors import VectorModel  # noqa: E402
from model_vectors import model_chunk  # noqa: E402
from model_vectors import model_queries  # noqa: E402
from search import COLORS  # noqa: E402
from search import TYPES  # noqa: E402

from anet_tf.search.embeddings import Embeddings  # noqa: E402
from anet_tf.search.gallery import index_params  # noqa: E402
from anet_tf.search.gallery import parse_where  # noqa: E402

PER_ID = 10
NOISE = 0.8
FILTERS = {"none": "", "color": "color=red", "color,type": "color=red,type=sedan"}
MODEL = {
    "path": "benchmark",
    "fingerprint": "benchmark",
    "embedding_dim": 0,
    "attributes": [
        {"name": "color", "classes": COLORS},
        {"name": "type", "classes": TYPES},
    ],
}


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def chunk_centres(c: int, size: int, dim: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng([seed, c, 0])
    return _unit(rng.standard_normal((max(1, size // PER_ID), dim), dtype=np.float32))


def vehicle_attributes(c: int, vehicles: int, seed: int):
    """Each vehicle's colour and type codes (all its images share them)."""
    rng = np.random.default_rng([seed, c, 2])
    return rng.integers(0, len(COLORS), vehicles), rng.integers(0, len(TYPES), vehicles)


# The fitted generator of ``--vectors model`` (benchmarks/model_vectors.py); None:
# isotropic vectors.
VECTOR_MODEL = None


def make_chunk(c: int, size: int, dim: int, seed: int):
    """Chunk ``c``: its vectors (float32 [size, D]) and colour and type codes."""
    if VECTOR_MODEL is not None:
        return model_chunk(VECTOR_MODEL, c, size, dim, seed, PER_ID)
    centres = chunk_centres(c, size, dim, seed)
    rng = np.random.default_rng([seed, c, 1])
    ids = np.arange(size) % len(centres)
    noise = rng.standard_normal((size, dim), dtype=np.float32)
    x = np.ascontiguousarray(_unit(centres[ids] + NOISE * noise / np.sqrt(dim)))
    color, kind = vehicle_attributes(c, len(centres), seed)
    return x, color[ids], kind[ids]


def make_queries(n: int, chunk: int, dim: int, count: int, seed: int) -> np.ndarray:
    """New images of random red sedans of the gallery (of random chunks), so each
    filter keeps the query's vehicle, as a search for a red sedan does."""
    if VECTOR_MODEL is not None:
        red, sedan = COLORS.index("red"), TYPES.index("sedan")
        return model_queries(
            VECTOR_MODEL, n, chunk, dim, count, seed, PER_ID, red, sedan
        )
    rng = np.random.default_rng([seed, 10**9])
    chunks = rng.integers(0, max(1, n // chunk), count)
    red, sedan = COLORS.index("red"), TYPES.index("sedan")
    out = []
    for c in chunks:
        centres = chunk_centres(int(c), chunk, dim, seed)
        color, kind = vehicle_attributes(int(c), len(centres), seed)
        centre = centres[rng.choice(np.flatnonzero((color == red) & (kind == sedan)))]
        noise = rng.standard_normal(dim).astype(np.float32)
        out.append(centre + NOISE * noise / np.sqrt(dim))
    return np.ascontiguousarray(_unit(np.asarray(out, np.float32)))


def chunk_embeddings(x, color, kind, start: int, dim: int) -> Embeddings:
    n = len(x)
    model = dict(MODEL, embedding_dim=dim)
    return Embeddings(
        paths=[f"gallery/{start + i:08d}.jpg" for i in range(n)],
        embedding=x,
        attribute_names=["color", "type"],
        attribute_classes=[COLORS, TYPES],
        probs={
            "color": np.eye(len(COLORS), dtype=np.float32)[color],
            "type": np.eye(len(TYPES), dtype=np.float32)[kind],
        },
        predicted={"color": np.asarray(COLORS)[color], "type": np.asarray(TYPES)[kind]},
        known={"color": np.full(n, "", str), "type": np.full(n, "", str)},
        pids=np.arange(start, start + n, dtype=np.int64) // PER_ID,
        camids=np.full(n, -1, np.int64),
        model=model,
        source=f"chunk@{start}",
    )


class ExactTopK:
    """The exact top-k of each query, per filter, folded over chunks."""

    def __init__(self, queries: np.ndarray, k: int = 10):
        self.q, self.k = queries, k
        self.scores = {
            f: np.full((len(queries), k), -np.inf, np.float32) for f in FILTERS
        }
        self.ids = {f: np.full((len(queries), k), -1, np.int64) for f in FILTERS}

    def fold(self, x, color, kind, start: int) -> None:
        s = self.q @ x.T
        masks = {
            "none": None,
            "color": color == COLORS.index("red"),
            "color,type": (color == COLORS.index("red"))
            & (kind == TYPES.index("sedan")),
        }
        for f, mask in masks.items():
            sf = s if mask is None else np.where(mask[None, :], s, -np.inf)
            both_s = np.concatenate([self.scores[f], sf], 1)
            both_i = np.concatenate(
                [
                    self.ids[f],
                    np.broadcast_to(np.arange(start, start + len(x)), sf.shape),
                ],
                1,
            )
            top = np.argpartition(-both_s, self.k - 1, axis=1)[:, : self.k]
            self.scores[f] = np.take_along_axis(both_s, top, 1)
            self.ids[f] = np.take_along_axis(both_i, top, 1)


def recall(found: np.ndarray, exact: np.ndarray) -> float:
    hits = [
        len(set(f[f >= 0]) & set(e[e >= 0])) / max(1, (e >= 0).sum())
        for f, e in zip(found, exact, strict=True)
    ]
    return float(np.mean(hits))


def latencies(search, queries, where, warmup: int) -> tuple[dict, np.ndarray]:
    for q in queries[:warmup]:
        search(q[None], where)
    times, ids = [], []
    for q in queries:
        t = time.perf_counter()
        _, i = search(q[None], where)
        times.append((time.perf_counter() - t) * 1e3)
        ids.append(i[0])
    t = np.asarray(times)
    return {
        "p50_ms": round(float(np.percentile(t, 50)), 3),
        "p99_ms": round(float(np.percentile(t, 99)), 3),
        "max_ms": round(float(t.max()), 3),
    }, np.asarray(ids)


def rss_mb(pid: int | str = "self") -> float:
    with open(f"/proc/{pid}/status", encoding="utf-8") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def folder_mb(path: str) -> float:
    total = 0
    for dirpath, _, files in os.walk(path):
        for f in files:
            total += os.path.getsize(os.path.join(dirpath, f))
    return total / 2**20


# ------------------------------------------------------------------------- faiss


def faiss_indexes(args, dim: int):
    import faiss

    from anet_tf.search.index import FORMAT
    from anet_tf.search.index import GalleryIndex
    from anet_tf.search.index import _new_faiss_index

    faiss.omp_set_num_threads(args.build_threads)
    out = {}
    sample = None
    for spec in args.kinds:
        kind, _, nlist = spec.partition(":")  # "ivfpq:1024": this kind's nlist
        given = {
            "nlist": int(nlist) if nlist else args.nlist,
            "m": args.pq_m,
            "nprobe": args.nprobe,
            "M": args.hnsw_m,
        }
        if kind == "ivfpqr":
            out.update(ivfpqr_indexes(args, dim, given))
            continue
        params = index_params(kind, args.n, dim, **given)
        t = time.perf_counter()
        if kind in ("ivf", "ivfpq"):
            if sample is None:
                parts, have, c = [], 0, 0
                while have < args.train:
                    x, _, _ = make_chunk(c, args.chunk, dim, args.seed)
                    parts.append(x[: args.train - have])
                    have += len(parts[-1])
                    c += 1
                sample = np.concatenate(parts)
            index = _new_faiss_index(kind, params, sample, args.seed)
        else:
            index = _new_faiss_index(
                kind, params, np.zeros((0, dim), np.float32), args.seed
            )
        train_s = time.perf_counter() - t
        meta = {
            "format": FORMAT,
            "kind": kind,
            "dim": dim,
            "count": 0,
            "params": params,
            "model": dict(MODEL, embedding_dim=dim),
            "sources": [],
        }
        out[kind] = {
            "index": GalleryIndex(index, meta, {}),
            "train_s": train_s,
            "add_s": 0.0,
        }
        print(
            f"[{kind}] {params.get('factory', 'IndexFlatIP')} trained in {train_s:.1f} s",
            flush=True,
        )
    return out


def _sample(args, dim: int, count: int) -> np.ndarray:
    """The first ``count`` gallery vectors (chunks are independent draws)."""
    parts, have, c = [], 0, 0
    while have < count:
        x, _, _ = make_chunk(c, args.chunk, dim, args.seed)
        parts.append(x[: count - have])
        have += len(parts[-1])
        c += 1
    return np.concatenate(parts)


def ivfpqr_indexes(args, dim: int, given: dict) -> dict:
    """One ivfpqr per refine of ``--refines``, sharing one IVF-PQ: the first is
    made by :func:`anet_tf.search.index._new_faiss_index` (as ``index build``),
    the others wrap its IVF-PQ in a ``faiss.IndexRefine`` with their own refine
    codes, so the IVF-PQ is trained and filled once. Entry ``ivfpqr-base`` adds
    to the shared IVF-PQ; each ``ivfpqr[REFINE]`` adds to its refine codes."""
    import faiss

    from anet_tf.search.gallery import REFINE_ON_DISK
    from anet_tf.search.index import FORMAT
    from anet_tf.search.index import IVFPQR_TRAIN_PER_LIST
    from anet_tf.search.index import GalleryIndex
    from anet_tf.search.index import _new_faiss_index
    from anet_tf.search.index import _write_refine_header
    from anet_tf.search.index import _write_refine_rows

    refines = args.refines.split(",")
    given = dict(given, opq=args.opq, k_factor=args.k_factor, refine=refines[0])
    params = index_params("ivfpqr", args.n, dim, **given)
    sample = _sample(
        args, dim, min(args.n, max(65536, IVFPQR_TRAIN_PER_LIST * params["nlist"]))
    )
    t = time.perf_counter()
    first = _new_faiss_index("ivfpqr", params, sample, args.seed)
    base = first if refines[0] == REFINE_ON_DISK else first.base_index
    factory = params["factory"]
    if refines[0] != REFINE_ON_DISK:
        factory = factory.rsplit(",", 1)[0]
    train_s = time.perf_counter() - t
    print(
        f"[ivfpqr] {params['factory']} trained on {len(sample)} in {train_s:.1f} s",
        flush=True,
    )
    # "first" owns the shared IVF-PQ: kept here until every variant is measured
    out = {
        "ivfpqr-base": {
            "add": base.add,
            "train_s": train_s,
            "add_s": 0.0,
            "base": base,
            "owner": first,
        }
    }
    for r in refines:
        p = dict(params, refine=r, factory=f"{factory},{r}")
        t = time.perf_counter()
        if r == REFINE_ON_DISK:
            index, refine = base, None
            file = os.path.join(args.refine_dir, f"search_scale-{os.getpid()}.npy")
            fh = open(file, "wb")  # closed by map_refine_file, before the searches
            _write_refine_header(fh, args.n, dim)
        elif r == refines[0]:
            index, refine = first, faiss.downcast_index(first.refine_index)
        else:
            code = {"flat": "Flat", "fp16": "SQfp16", "sq8": "SQ8", "sq4": "SQ4"}[r]
            refine = faiss.index_factory(dim, code, faiss.METRIC_INNER_PRODUCT)
            refine.train(sample)
            index = faiss.IndexRefine(base, refine)
            index.own_fields = False
        meta = {
            "format": FORMAT,
            "kind": "ivfpqr",
            "dim": dim,
            "count": 0,
            "params": p,
            "model": dict(MODEL, embedding_dim=dim),
            "sources": [],
        }
        out[f"ivfpqr[{r}]"] = {
            "index": GalleryIndex(index, meta, {}),
            "refine": refine,
            "train_s": time.perf_counter() - t,
            "add_s": 0.0,
        }
        if r == REFINE_ON_DISK:
            out[f"ivfpqr[{r}]"].update(
                add=lambda x, fh=fh: _write_refine_rows(fh, x),
                refine_file=file,
                refine_fh=fh,
            )
        else:
            out[f"ivfpqr[{r}]"]["add"] = refine.add
    return out


def map_refine_file(b: dict, g, args, dim: int) -> None:
    """Close the ``fp16-disk`` entry's ``refine.npy``, drop it from the page cache
    (written to disk first) and map it as the gallery's refine rows."""
    from anet_tf.search.index import _map_refine

    b["refine_fh"].close()
    g.refine_parts = []  # unmapped: the cache drops only pages no map holds
    file = b["refine_file"]
    with open(file, "rb") as fh:
        os.fsync(fh.fileno())
        os.posix_fadvise(fh.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
        g.refine_parts = [_map_refine(file, os.path.dirname(file), fh, args.n, dim)]


def mapped_mb(file: str) -> float:
    """How much of ``file`` this process's memory maps hold resident (smaps Rss)."""
    total, inside = 0, False
    with open("/proc/self/smaps", encoding="utf-8") as fh:
        for line in fh:
            if re.match(r"^[0-9a-f]+-[0-9a-f]+ ", line):
                inside = line.rstrip().endswith(file)
            elif inside and line.startswith("Rss:"):
                total += int(line.split()[1])
    return total / 1024


def run_faiss(args, dim: int, queries: np.ndarray) -> dict:
    import faiss

    built = faiss_indexes(args, dim)
    exact = ExactTopK(queries)
    colors, types = [], []
    t0 = time.perf_counter()
    for c, start in enumerate(range(0, args.n, args.chunk)):
        size = min(args.chunk, args.n - start)
        x, color, kind = make_chunk(c, size, dim, args.seed)
        exact.fold(x, color, kind, start)
        colors.append(color.astype(np.int16))
        types.append(kind.astype(np.int16))
        for b in built.values():
            t = time.perf_counter()
            b["add"](x) if "add" in b else b["index"].index.add(x)
            b["add_s"] += time.perf_counter() - t
        if c % 10 == 0:
            print(
                f"  {start + size} vectors, {time.perf_counter() - t0:.0f} s, rss {rss_mb():.0f} MB",
                flush=True,
            )
    items = {
        "color_pred": np.concatenate(colors),
        "type_pred": np.concatenate(types),
        "color_known": np.full(args.n, -1, np.int16),
        "type_known": np.full(args.n, -1, np.int16),
        "camid": np.full(args.n, -1, np.int64),
        "time": np.full(args.n, -1, np.int64),
    }
    faiss.omp_set_num_threads(1)
    results = {}
    shared = built.pop("ivfpqr-base", None)
    for kind, b in built.items():
        if kind.startswith("ivfpqr["):
            b["index"].index.ntotal = shared["base"].ntotal
            b["train_s"] += shared["train_s"]
            b["add_s"] += shared["add_s"]
            base_bytes = faiss.serialize_index(shared["base"]).nbytes
            size = base_bytes
            if b["refine"] is not None:
                size += b["refine"].sa_code_size() * b["refine"].ntotal
        g = b["index"]
        g.items = items
        g.meta["count"] = len(g)
        if not kind.startswith("ivfpqr["):
            size = faiss.serialize_index(g.index).nbytes

        def search(q, where, g=g):
            return g.search(q, 10, where=where, threads=1)

        cold = {}
        if "refine_file" in b:
            for prefetch in (False, True):  # each off a cold page cache
                map_refine_file(b, g, args, dim)
                g.prefetch = prefetch
                timing, ids = latencies(search, queries, {}, 0)
                name = "cold_page_cache" + ("" if prefetch else "_no_prefetch")
                cold[name] = dict(
                    timing, recall_at_10=round(recall(ids, exact.ids["none"]), 4)
                )
        results[kind] = case(
            args, b, size, search, queries, exact, prime="refine_file" in b
        )
        if cold:
            results[kind].update(
                cold, refine_file_mb=round(os.path.getsize(b["refine_file"]) / 2**20, 1)
            )
        results[kind]["params"] = dict(g.meta["params"])
        print(kind, json.dumps(results[kind]), flush=True)
        for spec in (
            args.sweep.split(",") if kind.startswith("ivfpqr[") and args.sweep else []
        ):
            nprobe, k_factor = (int(v) for v in spec.split("x"))
            g.meta["params"]["k_factor"] = k_factor

            def swept(q, where, g=g, nprobe=nprobe):
                return g.search(q, 10, where=where, threads=1, nprobe=nprobe)

            timing, ids = latencies(swept, queries, {}, args.warmup)
            name = f"{kind}@nprobe={nprobe},k_factor={k_factor}"
            results[name] = dict(
                timing, recall_at_10=round(recall(ids, exact.ids["none"]), 4)
            )
            if args.where_missed:
                results[name].update(
                    where_missed(
                        g, shared["base"], queries, exact.ids["none"], nprobe, k_factor
                    )
                )
            print(name, json.dumps(results[name]), flush=True)
        g.meta["params"] = results[kind]["params"]
        if "refine_file" in b:
            results[kind]["refine_file_resident_mb"] = round(
                mapped_mb(b["refine_file"]), 1
            )
            g.refine_parts = []
            if not args.keep_refine_file:
                os.remove(b["refine_file"])
        if kind in ("ivf", "ivfpq") and args.nprobe_extra:

            def deeper(q, where, g=g):
                return g.search(q, 10, where=where, threads=1, nprobe=args.nprobe_extra)

            name = f"{kind}@nprobe={args.nprobe_extra}"
            results[name] = case(args, b, size, deeper, queries, exact)
            print(name, json.dumps(results[name]), flush=True)
        b["index"] = None
        del g
    return results


def case(args, b, size_bytes, search, queries, exact, prime: bool = False) -> dict:
    """Build figures, then recall@10 and latency per filter. ``prime``: each
    filter's queries first run once untimed, so an on-disk refine's rows they read
    are cached, as the unfiltered ones are after the cold-cache runs (without it
    a filter's timed queries read rows no earlier query read)."""
    out = {
        "build_s": round(b["train_s"] + b["add_s"], 1),
        "train_s": round(b["train_s"], 1),
        "add_s": round(b["add_s"], 1),
        "index_mb": round(size_bytes / 2**20, 1),
        "bytes_per_vector": round(size_bytes / args.n, 1),
    }
    for f, spec in FILTERS.items():
        if prime:
            latencies(search, queries, parse_where(spec), 0)
        timing, ids = latencies(search, queries, parse_where(spec), args.warmup)
        out[f] = dict(timing, recall_at_10=round(recall(ids, exact.ids[f]), 4))
    return out


def where_missed(g, base, queries, exact_ids, nprobe: int, k_factor: int) -> dict:
    """Where an ivfpqr loses the true top-10 (unfiltered): the share of them in
    the lists the HNSW quantizer probes (``in_probed_lists``: the lists limit),
    and in the IVF-PQ's best ``k_factor`` * 10 (``in_shortlist``: the PQ codes
    limit too); what the refine then finds is ``recall_at_10``. ``base``: the
    IVF-PQ (with its OPQ), whose lists are read through a direct map."""
    import faiss

    from anet_tf.search.index import _shortlist_params

    ivf = faiss.extract_index_ivf(base)
    if ivf.direct_map.no():
        ivf.make_direct_map()
    x = np.ascontiguousarray(queries, np.float32)
    pre = faiss.downcast_index(base)
    if isinstance(pre, faiss.IndexPreTransform):
        for i in range(pre.chain.size()):
            x = faiss.downcast_VectorTransform(pre.chain.at(i)).apply(x)
    params = _shortlist_params(faiss, g.meta["params"], None, nprobe)
    _, probed = ivf.quantizer.search(x, nprobe, params=params.quantizer_params)
    _, shortlist = base.search(
        np.ascontiguousarray(queries, np.float32), 10 * k_factor, params=params
    )
    in_lists, in_short = [], []
    for r, true in enumerate(exact_ids):
        true, lists = true[true >= 0], set(probed[r].tolist())
        listed = [int(ivf.direct_map.get(int(i))) >> 32 in lists for i in true]
        in_lists.append(np.mean(listed))
        in_short.append(len(set(true) & set(shortlist[r])) / max(1, len(true)))
    return {
        "in_probed_lists": round(float(np.mean(in_lists)), 4),
        "in_shortlist": round(float(np.mean(in_short)), 4),
    }


# ------------------------------------------------------------------------ milvus


def fill_collection(args, dim: int, db: str, exact, b: dict, kind: str, given: dict):
    """Milvus Lite collection ``bench`` of ``db``: built (``kind``, ``given``) on
    the first chunk, the others inserted; each chunk folded into ``exact``, the
    insert seconds added to ``b["add_s"]``. Returns the gallery."""
    from anet_tf.search.milvus import _insert
    from anet_tf.search.milvus import build_collection
    from anet_tf.search.milvus import gallery_rows

    for c, start in enumerate(range(0, args.n, args.chunk)):
        size = min(args.chunk, args.n - start)
        x, color, ty = make_chunk(c, size, dim, args.seed)
        exact.fold(x, color, ty, start)
        emb = chunk_embeddings(x, color, ty, start, dim)
        t = time.perf_counter()
        if c == 0:
            g = build_collection([emb], db, "bench", kind=kind, **given)
        else:
            _insert(g.client, db, "bench", gallery_rows([emb]), start)
        b["add_s"] += time.perf_counter() - t
        if c % 5 == 0:
            print(f"  [{kind}] {start + size} rows, {b['add_s']:.0f} s", flush=True)
    return g


def run_milvus(args, dim: int, queries: np.ndarray) -> dict:
    from anet_tf.search.milvus import open_collection
    from anet_tf.search.targets import add_to_gallery

    results = {}
    for kind in args.kinds:
        db = args.db.replace(".db", f"-{kind}.db")
        if os.path.exists(db):
            shutil.rmtree(db)
        rss_before = rss_mb()
        exact = ExactTopK(queries)
        given = {
            "nlist": args.nlist,
            "m": args.pq_m,
            "nprobe": args.nprobe,
            "M": args.hnsw_m,
        }
        b = {"train_s": 0.0, "add_s": 0.0}
        g = fill_collection(args, dim, db, exact, b, kind, given)
        t = time.perf_counter()
        g.client.flush("bench")
        g.meta["next_id"] = args.n
        g.save_meta()
        g = open_collection(db, "bench")
        b["add_s"] += time.perf_counter() - t
        assert len(g) == args.n, (len(g), args.n)

        def search(q, where, g=g):
            return g.search(q, 10, where=where)

        # Milvus Lite serves from inside this process: its memory is this
        # process's growth while the collection was built and loaded.
        res = case(args, b, 0, search, queries, exact)
        del res["index_mb"], res["bytes_per_vector"]
        res["process_rss_growth_mb"] = round(rss_mb() - rss_before, 1)
        res["disk_mb"] = round(folder_mb(db), 1)
        res["params"] = g.meta["params"]
        extra = min(args.chunk, 10_000)
        x, color, ty = make_chunk(10**6, extra, dim, args.seed)
        t = time.perf_counter()
        add_to_gallery(db, [chunk_embeddings(x, color, ty, 10**9, dim)], "bench")
        res["index_add_rows"] = extra
        res["index_add_s"] = round(time.perf_counter() - t, 2)
        results[kind] = res
        print(kind, json.dumps(res), flush=True)
        g.client.drop_collection("bench")
        del g
    return results


def milvus_type_settings(name: str, n: int, dim: int, k: int = 10) -> tuple:
    """The build and search params of the Milvus index type ``name`` at the
    settings of ``index build --kind ivfpqr`` for ``n`` vectors (nlist, m,
    nprobe, a shortlist of k_factor·k re-ranked on FP16 codes where the type
    has a refine), as a Milvus server takes them."""
    p = index_params("ivfpqr", n, dim)
    nlist, nprobe, kf = p["nlist"], p["nprobe"], p["k_factor"]
    fp16 = {"refine": True, "refine_type": "FP16"}
    hnsw = {"M": 32, "efConstruction": 200}
    return {
        "FLAT": ({}, {}),
        "IVF_FLAT": ({"nlist": nlist}, {"nprobe": nprobe}),
        "IVF_SQ8": ({"nlist": nlist}, {"nprobe": nprobe}),
        "IVF_PQ": ({"nlist": nlist, "m": p["m"], "nbits": 8}, {"nprobe": nprobe}),
        "IVF_RABITQ": (
            {"nlist": nlist, **fp16},
            {"nprobe": nprobe, "rbq_query_bits": 0, "refine_k": kf},
        ),
        "SCANN": (
            {"nlist": nlist, "with_raw_data": True},
            {"nprobe": nprobe, "reorder_k": kf * k},
        ),
        "HNSW": (hnsw, {"ef": 64}),  # index build --kind hnsw's efSearch
        "HNSW_SQ": (
            {**hnsw, "sq_type": "SQ8", **fp16},
            {"ef": kf * k, "refine_k": kf},
        ),
        "HNSW_PQ": (
            {**hnsw, "m": p["m"], "nbits": 8, **fp16},
            {"ef": kf * k, "refine_k": kf},
        ),
        "DISKANN": ({}, {"search_list": kf * k}),
    }[name]


def index_files(db: str, index_type: str) -> tuple[int, int, int]:
    """Milvus Lite's sealed segments of ``db`` (data files), the index files of
    ``index_type`` beside them, and those files' bytes: every segment has one
    when the search goes through the index (the memtable, flushed, is empty)."""
    import glob

    parts = os.path.join(db, "collections", "bench", "partitions", "*")
    data = glob.glob(os.path.join(parts, "data", "*.parquet")) or glob.glob(
        os.path.join(parts, "**", "data_*.parquet"), recursive=True
    )
    idx = [
        f
        for f in glob.glob(os.path.join(parts, "indexes", "*"))
        if f.endswith(f".{index_type.lower()}.idx")
    ]
    return len(data), len(idx), sum(os.path.getsize(f) for f in idx)


def drop_vector_index(client, wait_s: float = 120.0) -> None:
    """Drop collection ``bench``'s vector index and wait until it is gone: at 10^6
    rows Milvus Lite 3.2 returned from a drop whose index was still listed, and
    the next ``create_index`` failed with "index already exists"."""
    deadline = time.monotonic() + wait_s
    while True:
        client.drop_index("bench", "embedding")
        if not client.list_indexes("bench", field_name="embedding"):
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"the vector index was still listed after {wait_s:.0f} s")
        time.sleep(1.0)


def run_milvus_types(args, dim: int, queries: np.ndarray) -> dict:
    """``--milvus-types``: the gallery inserted once (as ``index build`` with
    ``--kind flat`` and the chunks after it), then, per Milvus index type, the
    collection released, its vector index dropped and made again as that type
    (:func:`milvus_type_settings`), loaded (Milvus Lite builds each sealed
    segment's index then: ``index_s``) and searched through
    :meth:`MilvusGallery.search` with that type's search params. A type Milvus
    Lite cannot build or load is reported with its error."""
    from anet_tf.search.milvus import build_params
    from anet_tf.search.milvus import open_collection

    db = args.db.replace(".db", "-types.db")
    if os.path.exists(db):
        shutil.rmtree(db)
    exact = ExactTopK(queries)
    b = {"train_s": 0.0, "add_s": 0.0}
    g = fill_collection(args, dim, db, exact, b, "flat", {})
    g.client.flush("bench")
    g.meta["next_id"] = args.n
    g.save_meta()
    results = {"insert": {"rows": args.n, "insert_s": round(b["add_s"], 1)}}
    for name in args.milvus_types:
        build, search_params = milvus_type_settings(name, args.n, dim)
        res = {"build_params": build, "search_params": search_params}
        results[name] = res
        client = g.client
        rss_before = rss_mb()
        t = time.perf_counter()
        try:
            client.release_collection("bench")
            drop_vector_index(client)
            index = client.prepare_index_params()
            index.add_index(
                "embedding",
                index_type=name,
                metric_type="IP",
                params=build_params(build, lite=True),
            )
            client.create_index("bench", index)
            client.load_collection("bench")
        except Exception as exc:  # noqa: BLE001 - recorded: what Lite refuses
            res["error"] = str(exc).strip().splitlines()[0][:300]
            print(name, "ERROR", res["error"], flush=True)
            continue
        res["index_s"] = round(time.perf_counter() - t, 1)
        segments, files, size = index_files(db, name)
        res.update(segments=segments, index_files=files)
        res["index_mb"] = round(size / 2**20, 1)
        res["index_bytes_per_vector"] = round(size / args.n, 1)
        res["process_rss_growth_mb"] = round(rss_mb() - rss_before, 1)
        g = open_collection(db, "bench")
        g._search_params = lambda top_k, nprobe, sp=search_params: sp

        def search(q, where, g=g):
            return g.search(q, 10, where=where)

        timed = case(args, {"train_s": 0.0, "add_s": 0.0}, 0, search, queries, exact)
        res.update({f: timed[f] for f in FILTERS})
        res["disk_mb"] = round(folder_mb(db), 1)
        res["load_average"] = os.getloadavg()
        print(name, json.dumps(res), flush=True)
    return results


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--backend", choices=["faiss", "milvus"], default="faiss")
    p.add_argument("--n", type=int, default=1_000_000)
    p.add_argument(
        "--dim", type=int, default=512, help="512: the served ANet embedding"
    )
    p.add_argument(
        "--kinds",
        default="flat,ivfpq",
        help="comma list of flat, ivf, ivfpq, hnsw, ivfpqr; KIND:NLIST gives that "
        "kind its own nlist",
    )
    p.add_argument("--chunk", type=int, default=50_000)
    p.add_argument("--queries", type=int, default=200)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--train", type=int, default=65_536, help="IVF training vectors")
    p.add_argument("--nlist", type=int, default=None)
    p.add_argument("--pq-m", type=int, default=None)
    p.add_argument("--nprobe", type=int, default=None)
    p.add_argument("--hnsw-m", type=int, default=None)
    p.add_argument(
        "--nprobe-extra",
        type=int,
        default=128,
        help="IVF lists of a second timing (0: none)",
    )
    p.add_argument("--build-threads", type=int, default=2)
    p.add_argument("--db", default="/tmp/search_scale.db")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--vectors",
        choices=["isotropic", "model"],
        default="isotropic",
        help="isotropic random clusters (the worst case), or drawn from the "
        "generator fitted to a trained run's embeddings (--vector-model)",
    )
    p.add_argument(
        "--vector-model",
        default=DEFAULT_MODEL_FILE,
        help="the fitted generator of `benchmarks/model_vectors.py fit`",
    )
    p.add_argument(
        "--refines",
        default="sq8",
        help="ivfpqr: refine codes to build over one shared IVF-PQ (comma list of "
        "flat, fp16, sq8, sq4, fp16-disk)",
    )
    p.add_argument(
        "--refine-dir",
        default="/tmp",
        help="fp16-disk: the folder of its refine.npy (2·D bytes a vector)",
    )
    p.add_argument(
        "--keep-refine-file",
        action="store_true",
        help="fp16-disk: keep the refine file (removed after the run by default)",
    )
    p.add_argument(
        "--opq", type=int, default=None, help="ivfpqr: OPQ output dims (0: none)"
    )
    p.add_argument(
        "--k-factor", type=int, default=None, help="ivfpqr: shortlist factor"
    )
    p.add_argument(
        "--sweep",
        default="",
        help="ivfpqr: extra unfiltered timings NPROBExK_FACTOR, comma list (e.g. 16x4,64x10)",
    )
    p.add_argument(
        "--where-missed",
        action="store_true",
        help="ivfpqr: per --sweep setting, the share of the true top-10 in the "
        "probed lists and in the IVF-PQ's shortlist",
    )
    p.add_argument(
        "--milvus-types",
        default="",
        help="milvus: Milvus index types to build over one inserted gallery, at "
        "the settings of --kind ivfpqr (comma list of FLAT, IVF_FLAT, IVF_SQ8, "
        "IVF_PQ, IVF_RABITQ, SCANN, HNSW, HNSW_SQ, HNSW_PQ, DISKANN)",
    )
    p.add_argument("--json-out", default=None)
    args = p.parse_args()
    args.kinds = args.kinds.split(",")
    args.milvus_types = [t for t in args.milvus_types.split(",") if t]
    if args.vectors == "model":
        global VECTOR_MODEL
        VECTOR_MODEL = VectorModel.load(args.vector_model)
    info = machine_info()
    info["load_average_start"] = os.getloadavg()
    if args.backend == "faiss":
        import faiss

        info["faiss"] = faiss.__version__
    else:
        import importlib.metadata

        info["pymilvus"] = importlib.metadata.version("pymilvus")
        info["milvus_lite"] = importlib.metadata.version("milvus-lite")
    print(json.dumps(info), flush=True)
    queries = make_queries(args.n, args.chunk, args.dim, args.queries, args.seed)
    t = time.perf_counter()
    run = run_faiss if args.backend == "faiss" else run_milvus
    if args.backend == "milvus" and args.milvus_types:
        run = run_milvus_types
    results = run(args, args.dim, queries)
    info["load_average_end"] = os.getloadavg()
    out = {
        "command": " ".join(sys.argv),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": info,
        "n": args.n,
        "dim": args.dim,
        "vectors": args.vectors,
        **(
            {"vector_model": VECTOR_MODEL.summary()} if VECTOR_MODEL is not None else {}
        ),
        "queries": args.queries,
        "peak_rss_mb": round(
            resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1
        ),
        "wall_s": round(time.perf_counter() - t, 1),
        "results": results,
    }
    print(json.dumps(out, indent=2))
    if args.json_out:
        with open(args.json_out, "w", encoding="utf-8") as fh:
            json.dump(out, fh, indent=2)


if __name__ == "__main__":
    main()
