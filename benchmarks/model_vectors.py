"""Gallery vectors shaped like a trained model's embeddings, for search benchmarks.

``benchmarks/search_scale.py --vectors model`` streams vectors drawn from a
generator fitted here to real embeddings of a trained run, instead of isotropic
random clusters (``--vectors isotropic``, the worst case for IVF's clustering).

Three steps, one command each:

``embed``
    Runs the run's exported SavedModel (its ``serving_default`` signature, as
    ``anet-tf embed`` does) on every image of the run's dataset manifest (train,
    query and gallery) and on ``--augment`` augmented crops of each test image
    (query and gallery: a random resized crop of 64-100 % of the area, aspect
    3/4-4/3, a horizontal flip half the time, brightness and contrast within
    +-20 %), and writes the embeddings, vehicle ids, cameras, splits and predicted
    attributes to an ``.npz``.
``fit``
    Fits the generator (:class:`VectorModel`) to those embeddings and writes its
    parameters to a small ``.npz`` (``benchmarks/model_vectors.npz``, the default
    of ``search_scale.py --vector-model``).
``check``
    Compares an index's recall@10 on the real embeddings with its recall on as
    many generated vectors (same vehicles and images per vehicle, same index
    settings), the check that the generator is faithful for search.

The generator (per vehicle, then per image), in the model's D dimensions:

- a vehicle's colour and type are drawn from their joint frequency over the
  run's vehicles (so they are correlated as in the data);
- its centre is ``mu + a[colour] + b[type] + e``: ``a``, ``b`` the least-squares
  colour and type effects on the vehicles' mean embeddings, and ``e`` drawn from
  the covariance of what they leave (the between-vehicle covariance, full rank;
  its spectrum gives the effective dimension);
- an image is its vehicle's centre plus a deviation drawn from the
  within-vehicle covariance: its top ``rank`` eigenvectors with their
  eigenvalues, and the rest of its trace spread isotropically;
- then L2-normalised, as the model's embeddings are.

For a benchmark of another dimension (``--dim 512``, the paper's) the D-dim
vectors are placed in it by a fixed random orthonormal map (:meth:`VectorModel.lift`):
inner products, and so every exact search, are unchanged; the vectors span a D-dim
subspace, as a model with D effective dimensions would.

    python benchmarks/model_vectors.py embed --model runs/synthetic-calib/export/anet/1 \
        --manifest datasets/synthetic_520/manifest.csv --augment 16 -o real.npz
    python benchmarks/model_vectors.py fit real.npz -o benchmarks/model_vectors.npz
    python benchmarks/model_vectors.py check real.npz benchmarks/model_vectors.npz --json-out check.json
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from machine import machine_info  # noqa: E402

DEFAULT_MODEL_FILE = os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "model_vectors.npz"
)
WITHIN_RANK = 32


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


# --------------------------------------------------------------------------- embed


def augmented(data: bytes, rng: np.random.Generator) -> bytes:
    """A random resized crop (64-100 % of the area), flip and brightness/contrast
    jitter of the encoded image ``data``, encoded again as JPEG."""
    from PIL import Image
    from PIL import ImageEnhance

    img = Image.open(io.BytesIO(data)).convert("RGB")
    w, h = img.size
    area = rng.uniform(0.64, 1.0) * w * h
    aspect = np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3)))
    cw = int(round(min(w, np.sqrt(area * aspect))))
    ch = int(round(min(h, np.sqrt(area / aspect))))
    x0, y0 = rng.integers(0, w - cw + 1), rng.integers(0, h - ch + 1)
    img = img.crop((x0, y0, x0 + cw, y0 + ch)).resize((w, h), Image.BILINEAR)
    if rng.random() < 0.5:
        img = img.transpose(Image.FLIP_LEFT_RIGHT)
    img = ImageEnhance.Brightness(img).enhance(rng.uniform(0.8, 1.2))
    img = ImageEnhance.Contrast(img).enhance(rng.uniform(0.8, 1.2))
    out = io.BytesIO()
    img.save(out, "JPEG", quality=90)
    return out.getvalue()


def embed(args) -> None:
    from anet_tf.search.serving import ServingModel

    model = ServingModel(args.model)
    root = os.path.dirname(os.path.abspath(args.manifest))
    with open(args.manifest, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    rng = np.random.default_rng(args.seed)
    jobs = []  # (row index, augmented?)
    for i, row in enumerate(rows):
        jobs.append((i, False))
        if row["split"] in ("query", "gallery"):
            jobs.extend((i, True) for _ in range(args.augment))
    names = model.attribute_names
    out = {"embedding": [], **{f"{a}_label": [] for a in names}}
    t0 = time.perf_counter()
    for start in range(0, len(jobs), args.batch_size):
        batch = jobs[start : start + args.batch_size]
        data = []
        for i, aug in batch:
            with open(os.path.join(root, rows[i]["path"]), "rb") as fh:
                raw = fh.read()
            data.append(augmented(raw, rng) if aug else raw)
        pred = model.predict_bytes(data)
        out["embedding"].append(pred["embedding"].astype(np.float32))
        for a in names:
            out[f"{a}_label"].append(pred[f"{a}_label"])
        if start // args.batch_size % 20 == 0:
            print(
                f"  {start + len(batch)}/{len(jobs)} images, {time.perf_counter() - t0:.0f} s",
                flush=True,
            )
    idx = np.asarray([i for i, _ in jobs])
    np.savez(
        args.out,
        embedding=np.concatenate(out["embedding"]),
        pid=np.asarray([int(rows[i]["vehicle_id"]) for i in idx], np.int64),
        camid=np.asarray([int(rows[i]["camera_id"]) for i in idx], np.int64),
        split=np.asarray([rows[i]["split"] for i in idx]),
        augmented=np.asarray([aug for _, aug in jobs]),
        attribute_names=np.asarray(names),
        **{
            f"{a}_classes": np.asarray(c)
            for a, c in zip(names, model.attribute_classes, strict=True)
        },
        **{k: np.concatenate(v) for k, v in out.items() if k != "embedding"},
        model=json.dumps({"path": model.path, "fingerprint": model.fingerprint}),
    )
    print(
        f"{len(jobs)} embeddings ({len(rows)} images, {len(jobs) - len(rows)} augmented) in {time.perf_counter() - t0:.0f} s -> {args.out}"
    )


# ----------------------------------------------------------------------- the model


def _eig_desc(cov: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    w, v = np.linalg.eigh(cov)
    order = np.argsort(w)[::-1]
    return np.maximum(w[order], 0.0), v[:, order]


def effective_dim(eigenvalues: np.ndarray) -> float:
    """The participation ratio (sum l)^2 / sum l^2 of a covariance's spectrum: the
    number of equally strong directions that would hold the same variance."""
    return float(eigenvalues.sum() ** 2 / (eigenvalues**2).sum())


class VectorModel:
    """The fitted generator (see the module docstring); :meth:`fit` makes one from
    embeddings, :meth:`save` / :meth:`load` keep it in an ``.npz``.

    Args:
        params: ``mu`` [D], ``colour_effect`` [C, D], ``type_effect`` [T, D],
            ``between_vec`` [D, D] and ``between_val`` [D] (eigenvectors and
            eigenvalues of the between-vehicle residual covariance),
            ``within_vec`` [D, r], ``within_val`` [r], ``within_rest`` (the
            isotropic variance of the rest), ``joint`` [C, T] (the vehicles'
            colour-type frequencies), ``colours``, ``types`` (class names),
            ``per_vehicle`` (median images per vehicle of the fit).
    """

    def __init__(self, params: dict):
        self.p = {k: np.asarray(v) for k, v in params.items()}
        self.dim = int(self.p["mu"].shape[0])
        self.colours = [str(c) for c in self.p["colours"]]
        self.types = [str(t) for t in self.p["types"]]

    @classmethod
    def fit(
        cls, x, pid, colour, kind, colours, types, rank: int = WITHIN_RANK
    ) -> VectorModel:
        """Fit to embeddings ``x`` [N, D] of vehicles ``pid`` whose predicted colour
        and type (class indices) are ``colour``, ``kind`` (a vehicle takes its most
        frequent ones)."""
        x = _unit(np.asarray(x, np.float64))
        vehicles, inv = np.unique(pid, return_inverse=True)
        v = len(vehicles)
        counts = np.bincount(inv, minlength=v)
        centres = np.zeros((v, x.shape[1]))
        np.add.at(centres, inv, x)
        centres /= counts[:, None]
        vc = np.zeros((v, len(colours)), int)
        vt = np.zeros((v, len(types)), int)
        np.add.at(vc, (inv, colour), 1)
        np.add.at(vt, (inv, kind), 1)
        vc, vt = vc.argmax(1), vt.argmax(1)
        design = np.concatenate(
            [np.ones((v, 1)), np.eye(len(colours))[vc], np.eye(len(types))[vt]], 1
        )
        coef, *_ = np.linalg.lstsq(design, centres, rcond=None)
        resid = centres - design @ coef
        b_val, b_vec = _eig_desc(resid.T @ resid / max(1, v - 1))
        dev = x - centres[inv]
        w_val, w_vec = _eig_desc(dev.T @ dev / max(1, len(x) - v))
        rank = min(rank, x.shape[1])
        rest = float(w_val[rank:].sum() / max(1, x.shape[1] - rank))
        joint = np.zeros((len(colours), len(types)))
        np.add.at(joint, (vc, vt), 1)
        return cls(
            {
                "mu": coef[0],
                "colour_effect": coef[1 : 1 + len(colours)],
                "type_effect": coef[1 + len(colours) :],
                "between_vec": b_vec,
                "between_val": b_val,
                "within_vec": w_vec[:, :rank],
                "within_val": w_val[:rank],
                "within_rest": rest,
                "within_all": w_val,
                "joint": joint / joint.sum(),
                "colours": np.asarray(colours),
                "types": np.asarray(types),
                "per_vehicle": int(np.median(counts)),
            }
        )

    def save(self, path: str) -> None:
        np.savez(
            path,
            **{
                k: (v.astype(np.float32) if v.dtype == np.float64 else v)
                for k, v in self.p.items()
            },
        )

    @classmethod
    def load(cls, path: str) -> VectorModel:
        with np.load(path, allow_pickle=False) as data:
            return cls({k: data[k] for k in data.files})

    def summary(self) -> dict:
        b, w = self.p["between_val"], self.p["within_all"]
        return {
            "dim": self.dim,
            "between_trace": round(float(b.sum()), 4),
            "within_trace": round(float(w.sum()), 4),
            "between_effective_dim": round(effective_dim(b), 1),
            "within_effective_dim": round(effective_dim(w), 1),
            "attribute_share_of_between": round(
                float(
                    1
                    - b.sum()
                    / (
                        b.sum()
                        + np.var(self.p["colour_effect"], 0).sum()
                        + np.var(self.p["type_effect"], 0).sum()
                    )
                ),
                3,
            ),
        }

    # --- drawing
    def vehicles(self, count: int, rng: np.random.Generator):
        """``count`` vehicles: centres [count, D] (unnormalised), colour and type
        class indices."""
        joint = self.p["joint"].astype(np.float64).ravel()
        cell = rng.choice(len(joint), size=count, p=joint / joint.sum())
        colour, kind = np.divmod(cell, len(self.types))
        z = rng.standard_normal((count, self.dim))
        e = (z * np.sqrt(self.p["between_val"])) @ self.p["between_vec"].T
        centres = (
            self.p["mu"]
            + self.p["colour_effect"][colour]
            + self.p["type_effect"][kind]
            + e
        )
        return centres.astype(np.float32), colour, kind

    def images(self, centres: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """One image of each of ``centres`` (repeat a centre for more), L2-normalised."""
        n = len(centres)
        r = len(self.p["within_val"])
        low = (
            rng.standard_normal((n, r), dtype=np.float32)
            * np.sqrt(self.p["within_val"]).astype(np.float32)
        ) @ self.p["within_vec"].T.astype(np.float32)
        rest = rng.standard_normal((n, self.dim), dtype=np.float32) * np.float32(
            np.sqrt(self.p["within_rest"])
        )
        # the isotropic part, less its share inside the low-rank directions
        rest -= (rest @ self.p["within_vec"].astype(np.float32)) @ self.p[
            "within_vec"
        ].T.astype(np.float32)
        return _unit(centres + low + rest).astype(np.float32)

    def lift(self, x: np.ndarray, dim: int, seed: int = 0) -> np.ndarray:
        """``x`` [N, D] placed in ``dim`` >= D dimensions by a fixed random
        orthonormal map (inner products unchanged)."""
        if dim == self.dim:
            return x
        if dim < self.dim:
            raise ValueError(
                f"--dim {dim} is below the fitted model's dimension {self.dim}"
            )
        if getattr(self, "_lift", None) is None or self._lift.shape[1] != dim:
            q, _ = np.linalg.qr(
                np.random.default_rng([seed, 77]).standard_normal((dim, self.dim))
            )
            self._lift = np.ascontiguousarray(q.T.astype(np.float32))
        return np.ascontiguousarray(x @ self._lift)


def model_chunk(
    model: VectorModel, c: int, size: int, dim: int, seed: int, per_id: int
):
    """Chunk ``c`` of a generated gallery, as ``search_scale.make_chunk`` makes an
    isotropic one: ``size // per_id`` vehicles of ``per_id`` images each; vectors
    (float32 [size, dim]) and colour and type class indices."""
    centres, colour, kind = model.vehicles(
        max(1, size // per_id), np.random.default_rng([seed, c, 0])
    )
    ids = np.arange(size) % len(centres)
    x = model.images(centres[ids], np.random.default_rng([seed, c, 1]))
    return model.lift(x, dim, seed), colour[ids], kind[ids]


def model_queries(
    model: VectorModel,
    n: int,
    chunk: int,
    dim: int,
    count: int,
    seed: int,
    per_id: int,
    colour: int,
    kind: int,
):
    """``count`` new images of random vehicles of class ``colour`` and ``kind``
    of the gallery (of random chunks), as ``search_scale.make_queries``."""
    rng = np.random.default_rng([seed, 10**9])
    out = []
    for c in rng.integers(0, max(1, n // chunk), count):
        centres, col, typ = model.vehicles(
            max(1, chunk // per_id), np.random.default_rng([seed, int(c), 0])
        )
        pick = np.flatnonzero((col == colour) & (typ == kind))
        out.append(centres[rng.choice(pick)])
    x = model.images(np.asarray(out, np.float32), rng)
    return model.lift(x, dim, seed)


def load_real(path: str) -> dict:
    """The ``embed`` output, with class indices for the predicted attributes."""
    with np.load(path, allow_pickle=False) as data:
        d = {k: data[k] for k in data.files}
    for a in ("color", "type"):
        classes = [str(c) for c in d[f"{a}_classes"]]
        d[f"{a}_code"] = np.asarray([classes.index(str(v)) for v in d[f"{a}_label"]])
    return d


def fit(args) -> None:
    real = load_real(args.real)
    keep = (
        np.ones(len(real["pid"]), bool)
        if args.split == "all"
        else real["split"] != "train"
    )
    model = VectorModel.fit(
        real["embedding"][keep],
        real["pid"][keep],
        real["color_code"][keep],
        real["type_code"][keep],
        [str(c) for c in real["color_classes"]],
        [str(c) for c in real["type_classes"]],
    )
    model.save(args.out)
    print(
        json.dumps(
            {
                "real": args.real,
                "vectors": int(keep.sum()),
                "split": args.split,
                **model.summary(),
            }
        )
    )


def recall_at_10(found: np.ndarray, exact: np.ndarray) -> float:
    return float(
        np.mean(
            [len(set(f) & set(e)) / len(e) for f, e in zip(found, exact, strict=True)]
        )
    )


def index_recalls(x: np.ndarray, q: np.ndarray, settings: list, seed: int) -> dict:
    """recall@10 of each (kind, given settings, nprobe, k_factor) of ``settings``
    on the gallery ``x`` for the queries ``q``, indexes built as ``index build``
    builds them."""
    import faiss

    from anet_tf.search.gallery import index_params
    from anet_tf.search.index import _new_faiss_index
    from anet_tf.search.index import _refine_params

    faiss.omp_set_num_threads(1)
    flat = faiss.IndexFlatIP(x.shape[1])
    flat.add(x)
    exact = flat.search(q, 10)[1]
    out, built = {}, {}
    for kind, given, nprobe, k_factor in settings:
        key = (kind, json.dumps(given, sort_keys=True))
        if key not in built:
            params = index_params(kind, len(x), x.shape[1], **given)
            index = _new_faiss_index(kind, params, x, seed)
            index.add(x)
            built[key] = (index, params)
        index, params = built[key]
        if kind == "ivfpqr":
            sp = _refine_params(faiss, dict(params, k_factor=k_factor), None, nprobe)
        else:
            sp = faiss.SearchParametersIVF(nprobe=nprobe)
        found = index.search(q, 10, params=sp)[1]
        name = f"{params['factory']} nprobe={nprobe}" + (
            f" k_factor={k_factor}" if kind == "ivfpqr" else ""
        )
        out[name] = round(recall_at_10(found, exact), 4)
    return out


def check(args) -> None:
    """Real embeddings against as many generated ones: every other test image
    (query and gallery) of each vehicle is a query, the other images the gallery
    (``--gallery crops``: with the augmented crops of the images that are not
    queries); the generated gallery has as many vehicles with as many images
    each, and as many queries, new images of the vehicles the real queries
    show."""
    real = load_real(args.real)
    model = VectorModel.load(args.model)
    aug = real["augmented"]
    source = np.maximum.accumulate(
        np.where(aug, -1, np.arange(len(aug)))
    )  # crop -> image
    test = (real["split"] != "train") & ~aug
    # every other test image of each vehicle is a query; its crops leave the gallery
    order = np.zeros(len(aug), int)
    for pid in np.unique(real["pid"][test]):
        rows = np.flatnonzero(test & (real["pid"] == pid))
        order[rows] = np.arange(len(rows))
    is_query = test & (order % 2 == 0)
    in_gallery = ~is_query[source] & (~aug | (args.gallery == "crops"))
    x_real = _unit(real["embedding"][in_gallery].astype(np.float32))
    q_real = _unit(real["embedding"][is_query].astype(np.float32))
    gallery_pids = real["pid"][in_gallery]
    vehicles, counts = np.unique(gallery_pids, return_counts=True)
    query_pids, query_counts = np.unique(real["pid"][is_query], return_counts=True)
    rng = np.random.default_rng(args.seed)
    centres, _, _ = model.vehicles(len(vehicles), rng)
    x_gen = model.images(np.repeat(centres, counts, 0), rng)
    where = np.searchsorted(vehicles, query_pids)
    q_gen = model.images(np.repeat(centres[where], query_counts, 0), rng)
    settings = []
    for nlist in args.nlist:
        settings += [("ivf", {"nlist": nlist}, p, 1) for p in args.nprobe]
        settings += [("ivfpq", {"nlist": nlist}, p, 1) for p in args.nprobe]
        for refine in ("sq8", "flat"):
            settings += [
                ("ivfpqr", {"nlist": nlist, "refine": refine}, p, k)
                for p in args.nprobe
                for k in (1, 10)
            ]
    t = time.perf_counter()
    result = {
        "command": " ".join(sys.argv),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": machine_info(),
        "gallery": len(x_real),
        "gallery_kind": args.gallery,
        "queries": len(q_real),
        "vehicles": len(vehicles),
        "real": index_recalls(x_real, q_real, settings, args.seed),
        "generated": index_recalls(x_gen, q_gen, settings, args.seed),
        "model": model.summary(),
    }
    result["wall_s"] = round(time.perf_counter() - t, 1)
    print(f"{'index':55s} {'real':>7s} {'generated':>9s}")
    for name, value in result["real"].items():
        print(f"{name:55s} {value:7.3f} {result['generated'][name]:9.3f}")
    if args.json_out:
        with open(args.json_out, "w", encoding="utf-8") as fh:
            json.dump(result, fh, indent=2)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    e = sub.add_parser(
        "embed", help="embed a run's dataset images and augmented test crops"
    )
    e.add_argument("--model", required=True, help="the run's SavedModel version folder")
    e.add_argument("--manifest", required=True, help="the dataset's manifest.csv")
    e.add_argument(
        "--augment", type=int, default=16, help="augmented crops per test image"
    )
    e.add_argument("--batch-size", type=int, default=64)
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("-o", "--out", required=True)
    f = sub.add_parser("fit", help="fit the generator to embeddings of `embed`")
    f.add_argument("real", help="the .npz of `embed`")
    f.add_argument(
        "--split",
        choices=("all", "test"),
        default="all",
        help="vehicles to fit to: all, or the test (query and gallery) ones",
    )
    f.add_argument("-o", "--out", default=DEFAULT_MODEL_FILE)
    c = sub.add_parser(
        "check", help="recall of indexes on real and on generated vectors"
    )
    c.add_argument("real", help="the .npz of `embed`")
    c.add_argument(
        "model", nargs="?", default=DEFAULT_MODEL_FILE, help="the generator of `fit`"
    )
    c.add_argument(
        "--nlist", type=lambda v: [int(x) for x in v.split(",")], default=[64, 256]
    )
    c.add_argument(
        "--nprobe", type=lambda v: [int(x) for x in v.split(",")], default=[1, 4, 16]
    )
    c.add_argument(
        "--gallery",
        choices=("images", "crops"),
        default="crops",
        help="the real gallery: images, or images and their augmented crops",
    )
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--json-out", default=None)
    args = p.parse_args(argv)
    print(json.dumps(machine_info()), flush=True)
    {"embed": embed, "fit": fit, "check": check}[args.command](args)


if __name__ == "__main__":
    main()
