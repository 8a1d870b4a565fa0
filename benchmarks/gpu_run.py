"""The GPU benchmark in one call: the project's JAX train step beside FastReID's.

On a machine with a GPU, JAX and PyTorch but no Keras (and no network), one command
installs what is missing from wheels brought along, then times at 256x256, last
stride 1, ResNet-50-IBN-a:

- the project's JAX step (``train_throughput_jax``: ``anet_tf.training.jax_step``)
  for the baseline, ANet stage 1 and ANet stage 2, in bfloat16 and float32, at
  batch 64 (the paper's 512 over 8 GPUs) and one larger batch: images/s median
  (min-max), the first call (compilation included) and the compile time alone,
  the device allocator's peak (``memory_stats()['peak_bytes_in_use']``) and XLA's
  buffer sizes of the compiled step, and model FLOPs utilisation;
- FastReID's BoT R50-IBN-a (its own code, from a FastReID work tree brought along:
  ``configs/Market1501/bagtricks_R50-ibn.yml`` at 256x256, no pretrained weights)
  through its own ``AMPTrainer.run_step`` (automatic mixed precision, and
  ``cudnn.benchmark`` as FastReID's ``CUDNN_BENCHMARK: True`` sets it), same batch,
  same input size, same GPU, in the same call: the anchor of the ``ratio to
  FastReID`` column.

Each part runs in a fresh process (so each batch size has its own peak memory and
JAX and PyTorch never share the GPU), in priority order (the anchor and batch 64
first), each under its own time cap and all under one budget (``--budget-s``); a
part that would not fit is recorded as skipped. After every part the JSON
(``gpu_run.json``), a Markdown table (``gpu_run.md``) and the children's output
(``gpu_run.log``) are rewritten in the output folder, so a run cut short still
leaves what it measured. ``--only`` reruns some parts.

Which precision float32 ran in: every JAX part compares a float32 matmul and a
float32 convolution at JAX's default precision with a float64 / CPU reference; a
relative error near 1e-7 is float32, near 3e-4 the matrix units' TF32 (NVIDIA GPUs),
and the float32 rows' MFU is taken against the peak of what it found.

MFU = images/s x training FLOPs per image / the chip's dense peak. The JAX rows'
FLOPs are ``train_throughput_jax.flops_per_image`` (Conv2D and Dense, 3 x forward;
stage 2's frozen part once); FastReID's are counted by PyTorch's
``FlopCounterMode`` over one forward and backward. Peaks: ``DENSE_PEAK_TFLOPS``
(vendor datasheet, dense, i.e. half the with-sparsity figures), or
``--peak-tflops``; the first JAX part also times a large bfloat16 matmul, the
rate this chip reaches in practice.

    python benchmarks/gpu_prepare.py --fastreid PATH     # wheels + FastReID tree
    python3 benchmarks/gpu_run.py --out "$OUT"           # on the GPU machine
    python benchmarks/gpu_run.py --dry-run --out /tmp/gpu_dry   # tiny, on a CPU

``--dry-run`` runs the same parts at tiny shapes (32 px, batches 8 and 16,
ResNet-18-IBN-a of base width 8 for JAX, FastReID's ResNet-18 IBN-a, 2 timed steps)
on whatever devices there are (on a CPU FastReID's ``SimpleTrainer``, since its
AMP trainer needs CUDA).
"""

from __future__ import annotations

import argparse
import collections
import collections.abc
import glob
import importlib.metadata
import importlib.util
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

# Dense (no sparsity) peak TFLOP/s by device name: NVIDIA H200 Tensor Core GPU
# datasheet (H200 SXM: BF16/FP16 1,979 and TF32 989 TFLOPS "with sparsity", FP32
# 67; H200 NVL: 1,671, 835 and 60); dense is half the with-sparsity figure.
DENSE_PEAK_TFLOPS = {
    "NVIDIA H200": {"bfloat16": 989.5, "float16": 989.5, "tf32": 494.5, "float32": 67.0},
    "NVIDIA H200 NVL": {"bfloat16": 835.5, "float16": 835.5, "tf32": 417.5, "float32": 60.0},
}
PEAK_SOURCE = (
    "NVIDIA H200 Tensor Core GPU datasheet, dense = half the with-sparsity figure "
    "(BF16/FP16 1,979 -> 989.5, TF32 989 -> 494.5, FP32 67 TFLOP/s for the SXM H200)"
)

# Relative error of a float32 product at JAX's default precision: float32
# arithmetic lands near 1e-7, TF32 (10-bit mantissa) near 3e-4, bfloat16 passes
# near 3e-3.
FLOAT32_LIMIT, TF32_LIMIT = 1e-5, 1.5e-3

FASTREID = "fastreid_bot_r50_ibn"
PRECISIONS = ("bfloat16", "float32")
JAX_MODELS = ("baseline", "anet")
# model -> (config overrides, stages); anet_w512: the Joint Module narrowed to 512
JAX_VARIANTS = {"baseline": ([], (1,)), "anet": ([], (1, 2)), "anet_w512": (["model.joint_module.width=512"], (1,))}
K = 4  # images per identity (data.num_instances of the paper's configs)
PART_CAPS_S = {"fastreid": 75, "baseline": 90, "anet": 150, "anet_w512": 100}
MIN_PART_S = 30  # a part is not started with less left than this
OUT_FILES = ("gpu_run.json", "gpu_run.md", "gpu_run.log")  # what --out receives


def settings(dry_run: bool, large_batch: int) -> dict:
    """Shapes and step counts of the full run or of the tiny dry run."""
    if dry_run:
        return {
            "image_size": 32, "batches": [8, 16], "steps": 2, "warmup": 1,
            "fastreid_steps": 2, "fastreid_warmup": 1,
            "jax_backbone": "resnet18_ibn_a", "jax_base_width": 8,
            "fastreid_depth": "18x", "fastreid_feat_dim": 512, "matmul_probe_n": 256, "flop_count_batch": 8,
        }  # fmt: skip
    return {
        "image_size": 256, "batches": [64, large_batch], "steps": 20, "warmup": 3,
        "fastreid_steps": 20, "fastreid_warmup": 5,
        "jax_backbone": None, "jax_base_width": None,
        "fastreid_depth": "50x", "fastreid_feat_dim": 2048, "matmul_probe_n": 8192, "flop_count_batch": 8,
    }  # fmt: skip


def plan(batches: list[int]) -> list[dict]:
    """The parts in priority order: the anchor and bfloat16 at the first batch,
    float32 at it, the anchor and bfloat16 at the larger batch, ANet stage 1 with
    the Joint Module narrowed to 512 (``anet_w512``, bfloat16, both batches, for the
    memory line), and float32 at the larger batch last."""
    first, large = batches
    parts = [{"kind": "fastreid", "model": FASTREID, "precision": "amp", "batch": first}]
    parts += [{"kind": "jax", "model": m, "precision": p, "batch": first} for p in PRECISIONS for m in JAX_MODELS]
    parts.append({"kind": "fastreid", "model": FASTREID, "precision": "amp", "batch": large})
    parts += [{"kind": "jax", "model": m, "precision": "bfloat16", "batch": large} for m in JAX_MODELS]
    parts += [{"kind": "jax", "model": "anet_w512", "precision": "bfloat16", "batch": b} for b in batches]
    parts += [{"kind": "jax", "model": m, "precision": "float32", "batch": large} for m in JAX_MODELS]
    for part in parts:
        part["name"] = part_name(part)
    parts[1]["matmul_probe"] = True  # the first JAX part
    return parts


def part_name(part: dict) -> str:
    return f"{part['model']}-{part['precision']}-{part['batch']}"


# ---------------------------------------------------------------- pure logic


def peak_tflops(device: str | None, precision: str, float32_mode: str | None, override: float | None = None):
    """(peak TFLOP/s, which peak) for a row: ``override`` if given; else the
    datasheet peak of ``device`` for the precision the row's products ran in
    (float32 rows: ``float32_mode`` as measured, ``tf32`` or ``float32``; FastReID's
    AMP: float16). (None, None) for an unknown device."""
    unit = {"bfloat16": "bfloat16", "amp": "float16", "float16": "float16"}.get(precision)
    if precision == "float32":
        unit = "tf32" if float32_mode == "tf32" else "float32"
    if override is not None:
        return override, f"{unit} (--peak-tflops)"
    peaks = DENSE_PEAK_TFLOPS.get(device or "")
    if not peaks or unit not in peaks:
        return None, None
    return peaks[unit], unit


def mfu(images_per_s: float, flops_per_image: float | None, peak: float | None):
    """(achieved TFLOP/s, model FLOPs utilisation); None where unknown."""
    if not flops_per_image:
        return None, None
    achieved = images_per_s * flops_per_image / 1e12
    return achieved, (achieved / peak if peak else None)


def float32_mode(rel_error: float) -> str:
    """What a float32 product's relative error says it ran in."""
    if rel_error < FLOAT32_LIMIT:
        return "float32"
    if rel_error < TF32_LIMIT:
        return "tf32"
    return "bfloat16-like"


def memory_line(points: list[tuple[int, float]]) -> dict | None:
    """Least-squares line through (batch, bytes) points: bytes per image (the
    slope) and fixed bytes (the intercept); None with fewer than two batch sizes."""
    points = sorted(set(points))
    if len({b for b, _ in points}) < 2:
        return None
    n = len(points)
    mb = sum(b for b, _ in points) / n
    my = sum(y for _, y in points) / n
    slope = sum((b - mb) * (y - my) for b, y in points) / sum((b - mb) ** 2 for b, _ in points)
    return {"bytes_per_image": slope, "fixed_bytes": my - slope * mb, "batches": [b for b, _ in points]}


def xla_step_bytes(xla: dict | None) -> float | None:
    """What the compiled step holds at once by XLA's own accounting: arguments +
    outputs - aliased (donated) + temporaries."""
    if not xla or "temp_bytes" not in xla:
        return None
    return xla.get("argument_bytes", 0) + xla.get("output_bytes", 0) - xla.get("alias_bytes", 0) + xla["temp_bytes"]


def assemble(parts: list[dict], override_peak: float | None = None) -> dict:
    """Rows of every part that measured something, with the ratios, achieved
    TFLOP/s, MFU and peak memory beside each, and the memory lines per model,
    stage 1 and precision.

    ``parts``: the parts' records (``status``, and ``result`` from the child: its
    ``rows``, ``device``, ``float32``)."""
    rows, anchors = [], {}
    for part in parts:
        result = part.get("result") or {}
        device = (result.get("device") or {}).get("device_kind")
        f32 = (result.get("float32") or {}).get("mode")
        for r in result.get("rows", []):
            row = dict(r, part=part["name"], kind=part["kind"], batch=part["batch"], part_status=part["status"])
            peak, unit = peak_tflops(device, row["precision"], f32, override_peak)
            row["achieved_tflops"], row["mfu"] = mfu(row["images_per_s_median"], row.get("train_flops_per_image"), peak)
            row["peak_tflops"], row["peak_unit"] = peak, unit
            mem = row.get("device_memory") or {}
            row["peak_gb"] = mem["peak_bytes_in_use"] / 1e9 if "peak_bytes_in_use" in mem else None
            row["xla_step_gb"] = (xla_step_bytes(row.get("xla_memory")) or 0) / 1e9 or None
            rows.append(row)
            if part["kind"] == "fastreid":
                anchors[row["batch"]] = row["images_per_s_median"]
    base = {
        (r["precision"], r["batch"]): r["images_per_s_median"]
        for r in rows if r["model"] == "baseline"
    }  # fmt: skip
    for r in rows:
        b = base.get((r["precision"], r["batch"]))
        r["ratio_to_baseline"] = r["images_per_s_median"] / b if b and r["kind"] == "jax" else None
        a = anchors.get(r["batch"])
        r["ratio_to_fastreid"] = r["images_per_s_median"] / a if a else None
    lines = {}
    for r in rows:
        if r["stage"] != 1:
            continue
        key = f"{r['model']}-{r['precision']}"
        entry = lines.setdefault(key, {"device": [], "xla": []})
        if r["peak_gb"] is not None:
            entry["device"].append((r["batch"], r["device_memory"]["peak_bytes_in_use"]))
        step_bytes = xla_step_bytes(r.get("xla_memory"))
        if step_bytes is not None:
            entry["xla"].append((r["batch"], step_bytes))
    memory = {
        key: {"device_peak": memory_line(v["device"]), "xla_compiled": memory_line(v["xla"])}
        for key, v in lines.items()
    }
    return {"rows": rows, "memory_per_image": memory}


def _f(x, spec=".1f", none="-"):
    return none if x is None else format(x, spec)


def table(rows: list[dict]) -> str:
    """The Markdown table of the rows."""
    lines = [
        "| model | stage | precision | batch | images/s median (min-max) | ratio to baseline "
        "| ratio to FastReID | first call s (compile s) | peak GB | MFU |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        mfu_text = f"{r['mfu']:.1%} of {r['peak_tflops']:g} ({r['peak_unit']})" if r["mfu"] is not None else "-"
        first = f"{r['first_step_s']:.1f}" + (f" ({r['compile_s']:.1f})" if r.get("compile_s") is not None else "")
        lines.append(
            f"| {r['model']} | {r['stage']} | {r['precision']} | {r['batch']} "
            f"| {r['images_per_s_median']:.1f} ({r['images_per_s_min']:.1f}-{r['images_per_s_max']:.1f}) "
            f"| {_f(r['ratio_to_baseline'], '.2f')} | {_f(r['ratio_to_fastreid'], '.2f')} | {first} "
            f"| {_f(r['peak_gb'], '.2f')} | {mfu_text} |"
        )
    return "\n".join(lines)


def status_lines(parts: list[dict]) -> str:
    return "\n".join(
        f"- {p['name']}: {p['status']}" + (f" ({p['wall_s']:.0f} s)" if p.get("wall_s") is not None else "")
        + (f": {p['error']}" if p.get("error") else "")
        for p in parts
    )  # fmt: skip


# --------------------------------------------------------------- installing


def install_wheels(folder: str, site: str) -> dict:
    """``pip install --no-index --no-deps --target site`` of the wheels in
    ``folder`` that this interpreter can use (a wheel built for another Python is
    listed as skipped: the dry run on another Python uses what it has)."""
    from packaging.tags import sys_tags
    from packaging.utils import parse_wheel_filename

    supported = set(sys_tags())
    usable, skipped = [], []
    for path in sorted(glob.glob(os.path.join(folder, "*.whl"))):
        tags = parse_wheel_filename(os.path.basename(path))[3]
        (usable if tags & supported else skipped).append(path)
    if usable:
        cmd = [
            sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
            "--no-cache-dir", "--upgrade", "--target", site, *usable,
        ]  # fmt: skip
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"gpu_run.py: installing the wheels of {folder} failed:\n{proc.stderr[-3000:]}")
    return {"installed": [os.path.basename(p) for p in usable], "skipped": [os.path.basename(p) for p in skipped]}


def nvidia_smi() -> str | None:
    if not shutil.which("nvidia-smi"):
        return None
    query = ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"]
    proc = subprocess.run(query, capture_output=True, text=True)
    return proc.stdout.strip() or proc.stderr.strip()


def versions() -> dict:
    out = {"python": sys.version.split()[0]}
    for name in ("jax", "jaxlib", "keras", "torch", "numpy"):
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


# ------------------------------------------------------------------ children


def _write(path: str, data: dict) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as fh:
        json.dump(data, fh, indent=2, default=str)
    os.replace(tmp, path)


def float32_check() -> dict:
    """Relative error of a float32 matmul (against float64 NumPy) and a float32
    convolution (against the same convolution on the CPU at HIGHEST precision) run
    on the default device at JAX's default precision."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    rng = np.random.default_rng(0)
    a = rng.standard_normal((512, 512)).astype(np.float32)
    b = rng.standard_normal((512, 512)).astype(np.float32)
    ref = a.astype(np.float64) @ b.astype(np.float64)
    out = np.asarray(jax.jit(jnp.matmul)(a, b), np.float64)
    dot = float(np.linalg.norm(out - ref) / np.linalg.norm(ref))

    x = rng.standard_normal((4, 16, 16, 64)).astype(np.float32)
    w = rng.standard_normal((3, 3, 64, 64)).astype(np.float32)

    def conv(x, w, precision=None):
        return jax.lax.conv_general_dilated(
            x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"), precision=precision
        )

    cpu = jax.devices("cpu")[0]
    ref_c = np.asarray(
        jax.jit(lambda x, w: conv(x, w, jax.lax.Precision.HIGHEST))(jax.device_put(x, cpu), jax.device_put(w, cpu)),
        np.float64,
    )
    out_c = np.asarray(jax.jit(conv)(x, w), np.float64)
    conv_err = float(np.linalg.norm(out_c - ref_c) / np.linalg.norm(ref_c))
    return {
        "jax_default_matmul_precision": jax.config.jax_default_matmul_precision,
        "dot_rel_error": dot,
        "conv_rel_error": conv_err,
        "mode": float32_mode(max(dot, conv_err)),
    }


def matmul_probe(n: int) -> dict:
    """TFLOP/s of an n x n x n bfloat16 matmul on random data (median of 10 after
    3 warm-ups), the rate this chip reaches in practice."""
    import jax
    import jax.numpy as jnp

    ka, kb = jax.random.split(jax.random.key(0))
    a = jax.random.normal(ka, (n, n), jnp.bfloat16)
    b = jax.random.normal(kb, (n, n), jnp.bfloat16)
    f = jax.jit(jnp.matmul)
    for _ in range(3):
        f(a, b).block_until_ready()
    times = []
    for _ in range(10):
        t0 = time.perf_counter()
        f(a, b).block_until_ready()
        times.append(time.perf_counter() - t0)
    return {"n": n, "tflops_median": 2 * n**3 / statistics.median(times) / 1e12}


def jax_child(spec: dict, out: str) -> None:
    os.environ.setdefault("KERAS_BACKEND", "jax")
    import train_throughput_jax as tj

    s = spec["settings"]
    overrides, stages = JAX_VARIANTS[spec["model"]]
    ns = argparse.Namespace(
        paper=True, config=None, batch=spec["batch"], backbone=s["jax_backbone"],
        base_width=s["jax_base_width"], image_size=[s["image_size"]], set=overrides,
    )  # fmt: skip
    cfg, baseline = tj.load_configs(ns)
    model_cfg = baseline if spec["model"] == "baseline" else cfg
    result = {"device": tj.device_info(), "float32": float32_check(), "rows": []}
    if spec.get("matmul_probe"):
        result["matmul_probe"] = matmul_probe(s["matmul_probe_n"])
    result["config"] = {
        "source": model_cfg.source, "backbone": model_cfg.model.backbone, "base_width": model_cfg.model.base_width,
        "image_size": list(model_cfg.data.image_size), "last_stride": model_cfg.model.last_stride,
        "optimizer": model_cfg.train.optimizer, "joint_module_width": model_cfg.model.joint_module.width,
        "xla_python_client_mem_fraction": os.environ.get("XLA_PYTHON_CLIENT_MEM_FRACTION"),
        "xla_flags": os.environ.get("XLA_FLAGS"),
    }  # fmt: skip
    _write(out, result)

    def on_row(row):
        row["model"] = spec["model"]  # anet_w512 is variant anet
        result["rows"].append(row)
        _write(out, result)

    tj.measure(model_cfg, spec["precision"], stages, s["steps"], s["warmup"], on_row=on_row)
    result["tensorflow_imported"] = "tensorflow" in sys.modules
    _write(out, result)


def _python310_aliases() -> None:
    """FastReID imports ``collections.Mapping`` and friends, which Python 3.10
    moved to ``collections.abc`` only; restore the aliases before importing it."""
    for name in ("Mapping", "MutableMapping", "Sequence", "Iterable"):
        if not hasattr(collections, name):
            setattr(collections, name, getattr(collections.abc, name))


def _load_module(name: str, path: str):
    """Import one module of a package from its file, without the package's
    ``__init__`` (FastReID's ``fastreid.engine`` imports its evaluation hooks,
    which need scikit-learn and faiss; its train loop needs neither)."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def fastreid_child(spec: dict, out: str) -> None:
    s, root = spec["settings"], spec["fastreid"]
    sys.path.insert(0, root)
    _python310_aliases()
    import torch
    from fastreid.config import get_cfg
    from fastreid.modeling.meta_arch import build_model
    from fastreid.solver import build_optimizer
    from fastreid.utils.events import EventStorage

    train_loop = _load_module("fastreid.engine.train_loop", os.path.join(root, "fastreid", "engine", "train_loop.py"))
    cuda = torch.cuda.is_available()
    batch, px = spec["batch"], s["image_size"]
    num_ids = max(batch // K, 2) * 4  # as train_throughput_jax.build
    cfg = get_cfg()
    cfg.merge_from_file(os.path.join(root, "configs", "Market1501", "bagtricks_R50-ibn.yml"))
    cfg.merge_from_list([
        "MODEL.BACKBONE.PRETRAIN", False, "MODEL.BACKBONE.DEPTH", s["fastreid_depth"],
        "MODEL.BACKBONE.FEAT_DIM", s["fastreid_feat_dim"],
        "INPUT.SIZE_TRAIN", [px, px], "SOLVER.IMS_PER_BATCH", batch, "DATALOADER.NUM_INSTANCE", K,
        "MODEL.HEADS.NUM_CLASSES", num_ids, "MODEL.DEVICE", "cuda" if cuda else "cpu",
    ])  # fmt: skip
    torch.backends.cudnn.benchmark = cfg.CUDNN_BENCHMARK  # as fastreid's default_setup
    amp = bool(cfg.SOLVER.AMP.ENABLED) and cuda  # AMPTrainer asserts CUDA
    device = torch.device(cfg.MODEL.DEVICE)
    model = build_model(cfg)
    optimizer, param_wrapper = build_optimizer(cfg, model)
    gen = torch.Generator().manual_seed(0)
    images = (torch.rand(batch, 3, px, px, generator=gen) * 255).to(device)
    pids = torch.arange(batch // K).repeat_interleave(K).to(device)

    def loader():
        while True:  # preprocess_image normalises in place: a fresh copy per step
            yield {"images": images.clone(), "targets": pids}

    trainer_cls = train_loop.AMPTrainer if amp else train_loop.SimpleTrainer
    trainer = trainer_cls(model, loader(), optimizer, param_wrapper)
    result = {
        "device": {
            "device_kind": torch.cuda.get_device_name(0) if cuda else "cpu",
            "torch": torch.__version__, "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version() if cuda else None,
        },
        "config": {
            "file": "configs/Market1501/bagtricks_R50-ibn.yml", "depth": cfg.MODEL.BACKBONE.DEPTH,
            "with_ibn": cfg.MODEL.BACKBONE.WITH_IBN, "last_stride": cfg.MODEL.BACKBONE.LAST_STRIDE,
            "size_train": list(cfg.INPUT.SIZE_TRAIN), "optimizer": cfg.SOLVER.OPT, "amp": amp,
            "trainer": trainer_cls.__name__, "cudnn_benchmark": torch.backends.cudnn.benchmark,
            "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
            "cuda_matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
            "num_classes": num_ids, "commit": _commit(root),
        },
        "rows": [],
    }  # fmt: skip
    _write(out, result)

    def sync():
        if cuda:
            torch.cuda.synchronize()

    times = []
    with EventStorage(0):
        for i in range(s["fastreid_warmup"] + s["fastreid_steps"]):
            trainer.iter = i
            t0 = time.perf_counter()
            trainer.run_step()
            sync()
            times.append(time.perf_counter() - t0)
    timed = times[s["fastreid_warmup"] :]
    rates = [batch / t for t in timed]
    memory = {
        "peak_bytes_in_use": torch.cuda.max_memory_allocated(), "peak_bytes_reserved": torch.cuda.max_memory_reserved(),
    } if cuda else None  # fmt: skip
    row = {
        "model": FASTREID, "stage": 1, "precision": "amp" if amp else "float32",
        "images_per_s_median": statistics.median(rates), "images_per_s_min": min(rates),
        "images_per_s_max": max(rates), "step_s_median": statistics.median(timed),
        "first_step_s": times[0], "compile_s": None, "device_memory": memory,
    }  # fmt: skip
    result["rows"].append(row)
    _write(out, result)
    with EventStorage(0):  # the model logs its accuracy to the event storage
        row["train_flops_per_image"] = _count_flops(model, images, pids, s["flop_count_batch"])
    _write(out, result)


def _count_flops(model, images, pids, n: int) -> float | None:
    """Training FLOPs per image of FastReID's model (one forward and backward of
    ``n`` images under ``torch.utils.flop_counter.FlopCounterMode``)."""
    import torch

    try:
        from torch.utils.flop_counter import FlopCounterMode
    except ImportError:
        return None
    n = min(n, images.shape[0])
    counter = FlopCounterMode(display=False)
    with counter:
        losses = model({"images": images[:n].clone(), "targets": pids[:n]})
        sum(losses.values()).backward()
    model.zero_grad(set_to_none=True)
    if images.is_cuda:
        torch.cuda.synchronize()
    return counter.get_total_flops() / n


def _commit(root: str) -> str | None:
    path = os.path.join(root, "COMMIT")
    if os.path.exists(path):
        with open(path) as fh:
            return fh.read().strip()
    return None


# -------------------------------------------------------------- orchestrator


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=False, help="output folder (gpu_run.json, gpu_run.md, gpu_run.log)")
    parser.add_argument("--dry-run", action="store_true", help="tiny shapes (a CPU check of the whole run)")
    parser.add_argument("--wheels", default=os.path.join(ROOT, ".gpu_wheels"), help="folder of wheels to install first")
    parser.add_argument("--fastreid", default=os.path.join(ROOT, ".fastreid"), help="FastReID work tree (fastreid/, configs/)")
    parser.add_argument("--site", default=None, help="where the wheels are installed (default: a new folder in /tmp)")
    parser.add_argument("--large-batch", type=int, default=256, help="the larger batch besides 64")
    parser.add_argument("--budget-s", type=float, default=None, help="seconds for all parts (default 400; dry run 3600)")
    parser.add_argument("--only", default=None, help="comma-separated part names to run (e.g. anet-float32-256)")
    parser.add_argument("--peak-tflops", type=float, default=None, help="peak for the MFU of every row (default: datasheet by device)")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--child-out", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if not args.child and not args.out:
        parser.error("--out is required")
    if args.large_batch % K or args.large_batch <= 64:
        parser.error(f"--large-batch must be a multiple of {K} above 64")
    return args


def run_part(part: dict, env: dict, timeout: float, log) -> dict:
    """Run one part in a fresh process under ``timeout``; its record with the
    child's result (whatever it had written, also after a timeout or failure)."""
    fd, child_out = tempfile.mkstemp(prefix=f"gpu_run_{part['name']}_", suffix=".json")
    os.close(fd)
    os.unlink(child_out)
    cmd = [sys.executable, os.path.abspath(__file__), "--child", json.dumps(part), "--child-out", child_out]
    log.write(f"\n===== {part['name']} (cap {timeout:.0f} s)\n")
    log.flush()
    t0 = time.perf_counter()
    record = {k: part[k] for k in ("name", "kind", "model", "precision", "batch")}
    try:
        proc = subprocess.run(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, timeout=timeout, cwd=ROOT)
        record["status"] = "ok" if proc.returncode == 0 else "failed"
        if proc.returncode != 0:
            record["error"] = f"exit status {proc.returncode} (gpu_run.log)"
    except subprocess.TimeoutExpired:
        record["status"] = "timeout"
        record["error"] = f"stopped at its {timeout:.0f} s cap"
    record["wall_s"] = time.perf_counter() - t0
    if os.path.exists(child_out):
        with open(child_out) as fh:
            record["result"] = json.load(fh)
        os.unlink(child_out)
    return record


def write_outputs(out: str, header: dict, parts: list[dict], override_peak) -> dict:
    report = dict(header, parts=parts, **assemble(parts, override_peak))
    _write(os.path.join(out, "gpu_run.json"), report)
    with open(os.path.join(out, "gpu_run.md"), "w") as fh:
        fh.write(markdown(report))
    return report


def markdown(report: dict) -> str:
    lines = [
        f"machine: {report['nvidia_smi'] or report['host']}; versions {json.dumps(report['versions'])}",
        f"float32 products ran in: {report.get('float32') or 'not measured'}",
        f"peaks: {PEAK_SOURCE}",
        f"measured bfloat16 matmul: {report.get('matmul_probe') or 'not measured'}",
        "",
        table(report["rows"]),
        "",
        "memory per image (stage 1; device peak, and XLA's compiled buffers):",
    ]
    for key, v in report["memory_per_image"].items():
        d, x = v["device_peak"], v["xla_compiled"]
        dtext = f"{d['bytes_per_image'] / 1e9:.4f} GB/image + {d['fixed_bytes'] / 1e9:.2f} GB" if d else "-"
        xtext = f"{x['bytes_per_image'] / 1e9:.4f} GB/image + {x['fixed_bytes'] / 1e9:.2f} GB" if x else "-"
        lines.append(f"- {key}: device peak {dtext}; XLA {xtext}")
    lines += ["", "parts:", status_lines(report["parts"]), ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.child:
        spec = json.loads(args.child)
        (jax_child if spec["kind"] == "jax" else fastreid_child)(spec, args.child_out)
        return 0
    t_start = time.perf_counter()
    budget = args.budget_s if args.budget_s is not None else (3600 if args.dry_run else 400)
    os.makedirs(args.out, exist_ok=True)
    s = settings(args.dry_run, args.large_batch)
    parts = plan(s["batches"])
    if args.only:
        wanted = set(args.only.split(","))
        unknown = wanted - {p["name"] for p in parts}
        if unknown:
            raise SystemExit(f"gpu_run.py: --only: unknown parts {sorted(unknown)}; parts: {[p['name'] for p in parts]}")
        parts = [p for p in parts if p["name"] in wanted]
        if not any(p.get("matmul_probe") for p in parts) and any(p["kind"] == "jax" for p in parts):
            next(p for p in parts if p["kind"] == "jax")["matmul_probe"] = True
    if not os.path.isdir(os.path.join(args.fastreid, "fastreid")):
        raise SystemExit(f"gpu_run.py: --fastreid {args.fastreid}: no fastreid/ package there (benchmarks/gpu_prepare.py)")
    site = args.site or tempfile.mkdtemp(prefix="anet_gpu_site_")
    wheels = install_wheels(args.wheels, site) if os.path.isdir(args.wheels) else {"installed": [], "skipped": [], "missing": args.wheels}
    sys.path.insert(0, site)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([site, ROOT, *filter(None, [env.get("PYTHONPATH")])])
    env.setdefault("KERAS_BACKEND", "jax")
    env.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.9")
    env.setdefault("PYTHONUNBUFFERED", "1")
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    header = {
        "dry_run": args.dry_run, "settings": s, "budget_s": budget, "nvidia_smi": nvidia_smi(),
        "host": os.uname().nodename, "versions": versions(), "wheels": wheels, "peak_source": PEAK_SOURCE,
        "date_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
    }  # fmt: skip
    print(f"gpu_run: {json.dumps({k: header[k] for k in ('nvidia_smi', 'versions', 'dry_run')})}", flush=True)
    records = []
    with open(os.path.join(args.out, "gpu_run.log"), "a") as log:
        for part in parts:
            spec = dict(part, settings=s, fastreid=os.path.abspath(args.fastreid))
            left = budget - (time.perf_counter() - t_start)
            cap = PART_CAPS_S[part["model"] if part["kind"] == "jax" else "fastreid"] * (6 if args.dry_run else 1)
            if left < MIN_PART_S:
                record = {k: part[k] for k in ("name", "kind", "model", "precision", "batch")}
                record.update(status="skipped", error=f"{left:.0f} s of the {budget:.0f} s budget left")
            else:
                record = run_part(spec, env, min(cap, left), log)
            records.append(record)
            result = record.get("result") or {}
            for key in ("float32", "matmul_probe"):
                if key in result and key not in header:
                    header[key] = result[key]
            report = write_outputs(args.out, header, records, args.peak_tflops)
            print(f"gpu_run: {record['name']}: {record['status']}" + (f" in {record['wall_s']:.0f} s" if "wall_s" in record else ""), flush=True)
    header["total_s"] = time.perf_counter() - t_start
    report = write_outputs(args.out, header, records, args.peak_tflops)
    print()
    print(markdown(report))
    rows = report["rows"]
    bad = [r["part"] for r in rows if not math.isfinite(r.get("loss_total", 0.0))]
    if bad:
        print(f"non-finite loss in {bad}", file=sys.stderr)
    return 0 if rows and not bad and all(p["status"] == "ok" for p in records) else 1


if __name__ == "__main__":
    sys.exit(main())
