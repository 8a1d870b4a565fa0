"""The GPU benchmark's own logic (benchmarks/gpu_run.py, batch512.py, gpu_prepare.py):
peaks and MFU, which precision a float32 product ran in, the memory line, the
report's assembly from the parts, the batch-512 replica arithmetic, the offline
wheel install and the FastReID export; and (slow) the whole run at tiny shapes on
the CPU through the same script, with FastReID's own code.

Nothing here imports TensorFlow, JAX or PyTorch except the slow dry run (in
subprocesses)."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from helpers import JAX_FAST_COMPILE

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import batch512  # noqa: E402
import gpu_prepare  # noqa: E402
import gpu_run  # noqa: E402

GB = 1e9


# ------------------------------------------------------------- peaks and MFU


def test_peaks_follow_the_precision_the_products_ran_in():
    assert gpu_run.peak_tflops("NVIDIA H200", "bfloat16", None) == (989.5, "bfloat16")
    # float32 rows: the peak of what the check found (TF32 on the matrix units, or not)
    assert gpu_run.peak_tflops("NVIDIA H200", "float32", "tf32") == (494.5, "tf32")
    assert gpu_run.peak_tflops("NVIDIA H200", "float32", "float32") == (67.0, "float32")
    # FastReID's AMP runs float16
    assert gpu_run.peak_tflops("NVIDIA H200", "amp", None) == (989.5, "float16")
    assert gpu_run.peak_tflops("NVIDIA H200 NVL", "bfloat16", None) == (835.5, "bfloat16")
    assert gpu_run.peak_tflops("cpu", "bfloat16", None) == (None, None)
    assert gpu_run.peak_tflops("cpu", "float32", "float32", override=2.0) == (2.0, "float32 (--peak-tflops)")


def test_mfu_arithmetic():
    achieved, mfu = gpu_run.mfu(1000.0, 24e9, 989.5)
    assert achieved == pytest.approx(24.0)
    assert mfu == pytest.approx(24.0 / 989.5)
    assert gpu_run.mfu(1000.0, 24e9, None) == (pytest.approx(24.0), None)
    assert gpu_run.mfu(1000.0, None, 989.5) == (None, None)


@pytest.mark.parametrize(
    "error, mode",
    [(1.2e-7, "float32"), (9e-6, "float32"), (3e-4, "tf32"), (1.4e-3, "tf32"), (3e-3, "bfloat16-like")],
)
def test_float32_mode_from_the_relative_error(error, mode):
    assert gpu_run.float32_mode(error) == mode


# ------------------------------------------------------------- memory line


def test_memory_line_recovers_slope_and_intercept():
    line = gpu_run.memory_line([(64, 2e9 + 64 * 0.1e9), (256, 2e9 + 256 * 0.1e9)])
    assert line["bytes_per_image"] == pytest.approx(0.1e9)
    assert line["fixed_bytes"] == pytest.approx(2e9)
    # least squares through three points
    three = gpu_run.memory_line([(8, 10.0), (16, 18.0), (24, 28.0)])
    assert three["bytes_per_image"] == pytest.approx(1.125)
    assert gpu_run.memory_line([(64, 5e9)]) is None
    assert gpu_run.memory_line([(64, 5e9), (64, 5e9)]) is None


def test_xla_step_bytes_counts_donated_buffers_once():
    xla = {"argument_bytes": 10, "output_bytes": 9, "alias_bytes": 8, "temp_bytes": 100}
    assert gpu_run.xla_step_bytes(xla) == 111
    assert gpu_run.xla_step_bytes(None) is None
    assert gpu_run.xla_step_bytes({"argument_bytes": 1}) is None


# ------------------------------------------------------------- assembly


def _jax_row(model, stage, precision, ips, peak_bytes, flops=30e9):
    return {
        "model": model, "stage": stage, "precision": precision, "images_per_s_median": ips,
        "images_per_s_min": ips * 0.9, "images_per_s_max": ips * 1.1, "first_step_s": 40.0, "compile_s": 35.0,
        "train_flops_per_image": flops, "loss_total": 1.0,
        "xla_memory": {"argument_bytes": 1e9, "output_bytes": 1e9, "alias_bytes": 1e9, "temp_bytes": peak_bytes / 2},
        "device_memory": {"peak_bytes_in_use": peak_bytes},
    }  # fmt: skip


def _part(kind, model, precision, batch, rows, status="ok", f32="tf32", device="NVIDIA H200"):
    return {
        "name": f"{model}-{precision}-{batch}", "kind": kind, "model": model, "precision": precision,
        "batch": batch, "status": status,
        "result": {"device": {"device_kind": device}, "float32": {"mode": f32}, "rows": rows},
    }  # fmt: skip


def _parts():
    return [
        _part("fastreid", "fastreid_bot_r50_ibn", "amp", 64, [
            {**_jax_row("fastreid_bot_r50_ibn", 1, "amp", 1000.0, 20e9, flops=24e9), "compile_s": None}
        ]),
        _part("jax", "baseline", "bfloat16", 64, [_jax_row("baseline", 1, "bfloat16", 1200.0, 10e9)]),
        _part("jax", "anet", "bfloat16", 64, [
            _jax_row("anet", 1, "bfloat16", 400.0, 2e9 + 64 * 0.1e9, flops=90e9),
            _jax_row("anet", 2, "bfloat16", 900.0, 2e9 + 64 * 0.1e9, flops=60e9),
        ]),
        _part("jax", "baseline", "float32", 64, [_jax_row("baseline", 1, "float32", 600.0, 20e9)]),
        # cut short after stage 1: its row still counts
        _part("jax", "anet", "bfloat16", 256, [_jax_row("anet", 1, "bfloat16", 420.0, 2e9 + 256 * 0.1e9, flops=90e9)],
              status="timeout"),
        {"name": "anet-float32-256", "kind": "jax", "model": "anet", "precision": "float32", "batch": 256,
         "status": "skipped", "error": "20 s of the 400 s budget left"},
    ]  # fmt: skip


def test_assemble_puts_ratios_mfu_and_memory_beside_each_row():
    report = gpu_run.assemble(_parts())
    rows = {(r["model"], r["stage"], r["precision"], r["batch"]): r for r in report["rows"]}
    assert len(rows) == 6  # the skipped part adds none
    base = rows[("baseline", 1, "bfloat16", 64)]
    assert base["ratio_to_baseline"] == 1.0
    assert base["ratio_to_fastreid"] == pytest.approx(1.2)
    assert base["mfu"] == pytest.approx(1200 * 30e9 / 1e12 / 989.5)
    s1 = rows[("anet", 1, "bfloat16", 64)]
    assert s1["ratio_to_baseline"] == pytest.approx(400 / 1200)
    assert s1["ratio_to_fastreid"] == pytest.approx(0.4)
    assert s1["peak_gb"] == pytest.approx(8.4)
    # float32 measured as TF32: MFU against the TF32 peak
    f32 = rows[("baseline", 1, "float32", 64)]
    assert f32["peak_tflops"] == 494.5 and f32["peak_unit"] == "tf32"
    anchor = rows[("fastreid_bot_r50_ibn", 1, "amp", 64)]
    assert anchor["ratio_to_fastreid"] == 1.0 and anchor["ratio_to_baseline"] is None
    assert anchor["peak_unit"] == "float16"
    # no anchor and no baseline at 256: no ratio rather than a wrong one
    late = rows[("anet", 1, "bfloat16", 256)]
    assert late["ratio_to_fastreid"] is None and late["ratio_to_baseline"] is None
    assert late["part_status"] == "timeout"
    line = report["memory_per_image"]["anet-bfloat16"]["device_peak"]
    assert line["bytes_per_image"] == pytest.approx(0.1e9)
    assert line["fixed_bytes"] == pytest.approx(2e9)
    assert report["memory_per_image"]["baseline-bfloat16"]["device_peak"] is None  # one batch only


def test_table_and_markdown_have_one_line_per_row_and_every_part():
    parts = _parts()
    report = dict(
        nvidia_smi="NVIDIA H200, 580.159.04, 143771 MiB", host="h", versions={}, parts=parts,
        **gpu_run.assemble(parts),
    )
    text = gpu_run.markdown(report)
    assert text.count("| anet | 1 | bfloat16 |") == 2
    assert "| fastreid_bot_r50_ibn | 1 | amp | 64 | 1000.0 (900.0-1100.0) | - | 1.00 |" in text
    assert "- anet-float32-256: skipped: 20 s of the 400 s budget left" in text
    assert "anet-bfloat16: device peak 0.1000 GB/image + 2.00 GB" in text


def test_plan_puts_the_anchor_and_batch_64_first():
    parts = gpu_run.plan([64, 256])
    names = [p["name"] for p in parts]
    assert len(names) == len(set(names)) == 12
    assert names[:5] == [
        "fastreid_bot_r50_ibn-amp-64", "baseline-bfloat16-64", "anet-bfloat16-64", "baseline-float32-64", "anet-float32-64",
    ]  # fmt: skip
    assert names[-2:] == ["baseline-float32-256", "anet-float32-256"]
    assert [p["name"] for p in parts if p.get("matmul_probe")] == ["baseline-bfloat16-64"]
    assert {"anet_w512-bfloat16-64", "anet_w512-bfloat16-256"} <= set(names)


def test_bad_arguments_are_refused_with_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit, match="unknown parts"):
        gpu_run.main(["--out", str(tmp_path), "--only", "anet-float16-64", "--fastreid", str(tmp_path)])
    with pytest.raises(SystemExit, match=r"--fastreid .*no fastreid/ package"):
        gpu_run.main(["--out", str(tmp_path), "--fastreid", str(tmp_path)])
    with pytest.raises(SystemExit):
        gpu_run.main(["--out", str(tmp_path), "--large-batch", "66"])
    assert "--large-batch must be a multiple of 4 above 64" in capsys.readouterr().err


# ------------------------------------------------------------- wheels


def _wheel(folder: Path, name: str, version: str, tag: str = "py3-none-any") -> Path:
    path = folder / f"{name}-{version}-{tag}.whl"
    info = f"{name}-{version}.dist-info"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(f"{name}/__init__.py", "VALUE = 42\n")
        zf.writestr(f"{info}/METADATA", f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
        zf.writestr(f"{info}/WHEEL", f"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: {tag}\n")
        zf.writestr(f"{info}/RECORD", "")
    return path


def test_install_wheels_installs_what_this_python_can_use_and_lists_the_rest(tmp_path):
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    _wheel(wheels, "gpu_demo_pkg", "0.1")
    _wheel(wheels, "other_python_pkg", "1.0", "cp39-cp39-win_amd64")
    site = tmp_path / "site"
    result = gpu_run.install_wheels(str(wheels), str(site))
    assert result == {"installed": ["gpu_demo_pkg-0.1-py3-none-any.whl"], "skipped": ["other_python_pkg-1.0-cp39-cp39-win_amd64.whl"]}
    assert (site / "gpu_demo_pkg" / "__init__.py").read_text() == "VALUE = 42\n"


def test_install_wheels_names_the_folder_when_pip_fails(tmp_path):
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    (wheels / "broken_pkg-0.1-py3-none-any.whl").write_bytes(b"not a zip")
    with pytest.raises(SystemExit, match=f"installing the wheels of {wheels} failed"):
        gpu_run.install_wheels(str(wheels), str(tmp_path / "site"))


# ------------------------------------------------------------- FastReID export


def _fastreid_repo(path: Path) -> str:
    (path / "fastreid").mkdir(parents=True)
    (path / "fastreid" / "__init__.py").write_text("__version__ = 'test'\n")
    (path / "configs" / "Market1501").mkdir(parents=True)
    (path / "configs" / "Market1501" / "bagtricks_R50-ibn.yml").write_text("MODEL: {}\n")
    (path / "LICENSE").write_text("license\n")
    (path / "tools").mkdir()
    (path / "tools" / "train_net.py").write_text("# not exported\n")
    git = ["git", "-C", str(path), "-c", "user.email=t@t", "-c", "user.name=t"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "x"], check=True)
    return subprocess.run([*git, "rev-parse", "HEAD"], check=True, capture_output=True, text=True).stdout.strip()


def test_export_fastreid_takes_the_package_configs_and_license_at_head(tmp_path):
    commit = _fastreid_repo(tmp_path / "src")
    dest = tmp_path / "out" / ".fastreid"
    dest.parent.mkdir()
    assert gpu_prepare.export_fastreid(str(tmp_path / "src"), str(dest)) == commit
    assert sorted(os.listdir(dest)) == ["COMMIT", "LICENSE", "configs", "fastreid"]
    assert (dest / "COMMIT").read_text().strip() == commit
    assert (dest / "fastreid" / "__init__.py").exists()
    # a bare clone works the same
    bare = tmp_path / "bare.git"
    subprocess.run(["git", "clone", "-q", "--bare", str(tmp_path / "src"), str(bare)], check=True)
    assert gpu_prepare.export_fastreid(str(bare), str(dest)) == commit


def test_export_fastreid_refuses_a_folder_that_is_not_fastreid(tmp_path):
    (tmp_path / "src").mkdir()
    dest = tmp_path / ".fastreid"
    with pytest.raises(SystemExit, match=f"--fastreid {tmp_path / 'src'}: neither a git checkout"):
        gpu_prepare.export_fastreid(str(tmp_path / "src"), str(dest))
    with pytest.raises(SystemExit, match="no such folder"):
        gpu_prepare.export_fastreid(str(tmp_path / "missing"), str(dest))
    assert not dest.exists()


# ------------------------------------------------------------- batch 512


def _line(per_image_gb, fixed_gb):
    return {"bytes_per_image": per_image_gb * GB, "fixed_bytes": fixed_gb * GB}


def test_batch512_fit_on_a_gpu_that_holds_it_all():
    r = batch512.fit(_line(0.1, 2.0), 80 * GB, usable=0.9)
    # (72 - 2) / 0.1 = 700 images -> 700 (a multiple of 4)
    assert r["max_batch"] == 700
    assert r["replicas"] == 1
    assert r["gb_for_batch_on_one"] == pytest.approx(2.0 + 51.2)
    assert r["fits_on_paper_gpus"] and r["accumulation_steps"] == 1


def test_batch512_fit_needs_replicas_and_accumulation_on_a_small_gpu():
    r = batch512.fit(_line(0.2, 3.0), 10 * GB, usable=0.9)
    # (9 - 3) / 0.2 = 30 -> 28 images per replica; 512 / n <= 28 with n | 128 -> 32
    assert r["max_batch"] == 28
    assert r["replicas"] == 32
    # 64 per GPU on 8: 4 micro-batches of 16 (whole identities)
    assert not r["fits_on_paper_gpus"] and r["accumulation_steps"] == 4
    assert "4 accumulation micro-batches" in batch512.needs(r)


def test_batch512_fit_when_nothing_fits():
    r = batch512.fit(_line(0.2, 50.0), 40 * GB, usable=0.9)
    assert r["max_batch"] == 0 and r["replicas"] is None and r["accumulation_steps"] is None
    assert "rematerialisation" in batch512.needs(r)
    with pytest.raises(ValueError, match="bytes per image must be positive"):
        batch512.fit(_line(0.0, 1.0), 40 * GB)


def test_batch512_reads_the_gpu_report_lines(tmp_path):
    parts = _parts()
    report = dict(nvidia_smi="NVIDIA H200", **gpu_run.assemble(parts))
    path = tmp_path / "gpu_run.json"
    path.write_text(json.dumps(report))
    lines = batch512.lines_from_gpu_json(str(path))
    assert set(lines) == {(2048, "bfloat16")}
    assert lines[(2048, "bfloat16")]["bytes_per_image"] == pytest.approx(0.1e9)
    result = batch512.report(lines, 0.9)
    h200 = next(r for r in result["rows"] if r["gpu"] == "H200 141 GB")
    assert h200["max_batch"] == int((141 * 0.9 - 2) / 0.1) // 4 * 4


def test_batch512_names_the_file_it_cannot_use(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    with pytest.raises(SystemExit, match=f"--gpu-json {bad}"):
        batch512.lines_from_gpu_json(str(bad))
    other = tmp_path / "other.json"
    other.write_text("{}")
    with pytest.raises(SystemExit, match="no memory_per_image field"):
        batch512.lines_from_gpu_json(str(other))
    empty = tmp_path / "empty.json"
    empty.write_text(json.dumps({"memory_per_image": {"anet-bfloat16": {"device_peak": None}}}))
    with pytest.raises(SystemExit, match="no ANet stage-1 line"):
        batch512.lines_from_gpu_json(str(empty))


def test_batch512_line_from_the_command_line(capsys):
    assert batch512.main(["--source", "line", "--per-image-gb", "0.1", "--fixed-gb", "2"]) == 0
    out = capsys.readouterr().out
    assert "| 2048 | bfloat16 | 0.1000 | 2.00 | 53.2 | H200 141 GB | 1248 | 1 | fits" in out
    with pytest.raises(SystemExit):
        batch512.main(["--source", "line", "--per-image-gb", "-1", "--fixed-gb", "2"])
    assert "--per-image-gb must be positive" in capsys.readouterr().err


# ------------------------------------------------------------- the dry run


FASTREID_DIR = ROOT / ".fastreid"


def _dry_run_missing() -> str | None:
    if importlib.util.find_spec("torch") is None:
        return "PyTorch is not installed (pip install torch==2.13.0)"
    if importlib.util.find_spec("jax") is None:
        return "JAX is not installed"
    if not (FASTREID_DIR / "fastreid").is_dir():
        return f"no FastReID work tree at {FASTREID_DIR} (python benchmarks/gpu_prepare.py --fastreid PATH)"
    return None


@pytest.mark.slow
@pytest.mark.skipif(_dry_run_missing() is not None, reason=str(_dry_run_missing()))
def test_dry_run_of_the_gpu_benchmark_end_to_end(tmp_path):
    """The GPU run at tiny shapes on the CPU: every part in its own process, FastReID's
    own trainer, the JSON, the table and the log in the output folder."""
    out = tmp_path / "out"
    env = dict(os.environ, XLA_FLAGS=JAX_FAST_COMPILE, JAX_PLATFORMS="cpu")
    cmd = [sys.executable, str(ROOT / "benchmarks" / "gpu_run.py"), "--dry-run", "--out", str(out), "--peak-tflops", "1"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=4000)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert sorted(os.listdir(out)) == sorted(gpu_run.OUT_FILES)
    report = json.loads((out / "gpu_run.json").read_text())
    assert report["dry_run"] is True
    assert [p["status"] for p in report["parts"]] == ["ok"] * 12
    rows = {(r["model"], r["stage"], r["precision"], r["batch"]) for r in report["rows"]}
    for batch in (8, 16):
        assert ("fastreid_bot_r50_ibn", 1, "float32", batch) in rows  # SimpleTrainer on a CPU
        for model, stage in (("baseline", 1), ("anet", 1), ("anet", 2), ("anet_w512", 1)):
            assert (model, stage, "bfloat16", batch) in rows
        assert ("anet", 2, "float32", batch) in rows
    for r in report["rows"]:
        assert r["images_per_s_median"] > 0 and math.isfinite(r["images_per_s_median"]), r["part"]
        assert r["ratio_to_fastreid"] > 0, r["part"]
        assert r["mfu"] > 0 and r["train_flops_per_image"] > 0, r["part"]
    for part in report["parts"]:
        if part["kind"] == "jax":
            assert part["result"]["tensorflow_imported"] is False
            assert part["result"]["float32"]["mode"] == "float32"  # a CPU: no TF32
    fastreid = next(p for p in report["parts"] if p["kind"] == "fastreid")
    assert fastreid["result"]["config"]["trainer"] == "SimpleTrainer"
    assert fastreid["result"]["config"]["commit"]
    # the CPU keeps no allocator statistics: the memory line comes from XLA's buffers
    line = report["memory_per_image"]["anet-bfloat16"]
    assert line["device_peak"] is None and line["xla_compiled"]["bytes_per_image"] > 0
    assert report["matmul_probe"]["tflops_median"] > 0
    table = (out / "gpu_run.md").read_text()
    assert table.count("| anet | 2 |") == 4


def test_prepare_refuses_folders_that_git_would_not_ignore(tmp_path):
    with pytest.raises(SystemExit, match=r"benchmarks is not git-ignored"):
        gpu_prepare.main(["--fastreid", str(tmp_path), "--wheels", str(ROOT / "benchmarks")])


def test_batch512_refuses_batches_without_two_identities(capsys):
    with pytest.raises(SystemExit):
        batch512.main(["--source", "xla-cpu", "--batches", "4,8"])
    assert "--batches: two or more sizes, multiples of 4 of at least 8; got 4,8" in capsys.readouterr().err
