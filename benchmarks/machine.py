"""What every benchmark prints first: the machine and the library versions.

Versions come from package metadata, so a NumPy-only benchmark does not pay for
importing TensorFlow.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform


def _version(*names: str) -> str:
    for name in names:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return "not installed"


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


_VECTOR_FLAGS = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "asimd", "sve")


def vector_extensions() -> list[str]:
    """The SIMD extensions oneDNN can use (from /proc/cpuinfo's flags), since machines
    of the same core count differ 2-3x with them."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith(("flags", "Features")):
                    flags = set(line.split(":", 1)[1].split())
                    return [f for f in _VECTOR_FLAGS if f in flags]
    except OSError:
        pass
    return []


def allocator_in_use() -> str:
    """tcmalloc / jemalloc / system: what this process's malloc is (see
    anet_tf/allocator.py; `use_fast_allocator` re-executes a benchmark with it)."""
    from anet_tf.allocator import in_use

    return in_use()


def use_fast_allocator() -> None:
    """Run this benchmark the way the `anet-tf` command runs (anet_tf/launch.py):
    oneDNN kernels on unless TF_ENABLE_ONEDNN_OPTS is set, and re-executed with
    tcmalloc (or jemalloc) preloaded when installed, unless ANET_TF_MALLOC=system.
    Call before anything imports TensorFlow."""
    import sys

    from anet_tf.launch import prepare_process

    prepare_process(sys.argv[1:], command=[sys.executable, *sys.argv])


def machine_info(gpus: bool = False) -> dict:
    """Cores, CPU, memory, load and versions; ``gpus=True`` also lists the GPUs
    TensorFlow sees (imports TensorFlow)."""
    info = {
        "cpu": cpu_model(),
        "vector_extensions": " ".join(vector_extensions()),
        "cores": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)),
        "memory_total_gb": round(
            os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1
        ),
        "load_average_1m": round(os.getloadavg()[0], 2),
        "python": platform.python_version(),
        "numpy": _version("numpy"),
        "tensorflow": _version("tensorflow-cpu", "tensorflow"),
        "keras": _version("keras"),
        "allocator": allocator_in_use(),
        "onednn_opts": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "unset"),
    }
    if gpus:
        import tensorflow as tf

        names = []
        for gpu in tf.config.list_physical_devices("GPU"):
            try:
                names.append(tf.config.experimental.get_device_details(gpu).get("device_name", gpu.name))
            except Exception:  # noqa: BLE001 - informative only
                names.append(gpu.name)
        info["gpus"] = names
    return info
