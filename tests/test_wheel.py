"""The package as a user installs it: the wheel, in a fresh virtual environment
that cannot see the source tree, runs `anet-tf` from an empty folder.

The environment reuses the TensorFlow, Keras and other wheels already installed
for the tests (through a path entry, so the project's own editable install in that
site-packages is not activated); nothing is downloaded.
"""

import importlib.util
import os
import shutil
import site
import subprocess
import sys

import pytest

# Building and installing takes 15-20 s before anything runs: `.ci/run` runs this
# module explicitly (`python -m pytest -m slow tests/test_wheel.py`).
pytestmark = pytest.mark.slow

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# What setup.cfg needs to build the wheel (the package and its metadata files).
SOURCES = ["anet_tf", "setup.cfg", "pyproject.toml", "README.md", "LICENSE"]


def _run(cmd, cwd, env, timeout=600):
    done = subprocess.run(
        cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == 0, (
        f"{' '.join(map(str, cmd))}\n{done.stdout}\n{done.stderr}"
    )
    return done.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(venv's bin folder, environment) with the freshly built wheel installed."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    src.mkdir()
    for name in SOURCES:
        path = os.path.join(REPO, name)
        if os.path.isdir(path):
            shutil.copytree(
                path, src / name, ignore=shutil.ignore_patterns("__pycache__")
            )
        elif os.path.exists(path):
            shutil.copy(path, src / name)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    wheels = tmp / "wheels"
    # The installed setuptools builds it when there is one (nothing downloaded);
    # otherwise pip fetches the build requirements of pyproject.toml.
    isolation = [] if importlib.util.find_spec("setuptools") else ["--use-pep517"]
    _run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            *(["--no-build-isolation"] if not isolation else isolation),
            "-q",
            "-w",
            str(wheels),
            str(src),
        ],
        cwd=tmp,
        env=env,
    )
    (wheel,) = list(wheels.glob("anet_tf-*.whl"))
    venv = tmp / "venv"
    # No pip inside (no ensurepip needed): this pip installs into it (--python).
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=tmp, env=env)
    python = venv / "bin" / "python"
    purelib = _run(
        [
            str(python),
            "-c",
            "import sysconfig; print(sysconfig.get_paths()['purelib'])",
        ],
        cwd=tmp,
        env=env,
    ).strip()
    # The dependencies, as plain path entries: a .pth line adds a folder to sys.path
    # without running the .pth files inside it (the editable install is one).
    with open(os.path.join(purelib, "test_dependencies.pth"), "w") as fh:
        fh.write("\n".join(site.getsitepackages()) + "\n")
    _run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(python),
            "install",
            "--no-deps",
            "--no-index",
            "-q",
            str(wheel),
        ],
        cwd=tmp,
        env=env,
    )
    return venv / "bin", env, purelib


def test_the_wheel_holds_the_package_and_its_configs(installed, tmp_path):
    bin_dir, env, purelib = installed
    out = _run(
        [
            str(bin_dir / "python"),
            "-c",
            "import anet_tf, anet_tf.config as c, os; "
            "print(anet_tf.__file__); print(sorted(os.listdir(c.CONFIG_DIR)))",
        ],
        cwd=tmp_path,
        env=env,
    )
    module, configs = out.splitlines()
    assert module.startswith(purelib), module  # the wheel, not the source tree
    assert "'synthetic.yaml'" in configs and "'veri776_strong.yaml'" in configs
    # TF Serving's config and guide travel in the package (export writes them)
    out = _run(
        [
            str(bin_dir / "python"),
            "-c",
            "import anet_tf.export as e, os; print(sorted(os.listdir(e.SERVING_DIR)))",
        ],
        cwd=tmp_path,
        env=env,
    )
    assert out.strip() == "['README.md', 'batching_parameters.txt', 'models.config']"


def test_the_installed_command_runs_from_an_empty_folder(installed, tmp_path):
    """`anet-tf summary`, `config show` and a tiny `fit` (dataset generated, both
    stages, evaluated, exported) in an empty folder, with the installed script."""
    bin_dir, env, _ = installed
    anet_tf = str(bin_dir / "anet-tf")
    summary = _run([anet_tf, "summary"], cwd=tmp_path, env=env)
    assert "total" in summary.lower()
    shown = _run([anet_tf, "config", "show", "veri776"], cwd=tmp_path, env=env)
    assert "name: veri776" in shown
    # a user's config on a shipped one by name, resolved from the installed package
    mine = tmp_path / "mine.yaml"
    mine.write_text("_base_: veri776\ndata:\n  root: /data/VeRi\n", encoding="utf-8")
    shown = _run([anet_tf, "config", "show", str(mine)], cwd=tmp_path, env=env)
    assert "name: veri776" in shown and "root: /data/VeRi" in shown
    mine.unlink()
    tiny = [
        "data.root=datasets/tiny",
        "data.synth={ids: 10, test_ids: 4, cameras: 3, images_per_id: 5, image_size: 32}",
        "data.image_size=[32, 32]",
        "data.batch_size=8",
        "data.test_batch_size=16",
        "model.base_width=8",
        "model.s_f=16",
        "model.s_a=8",
        "model.s_j=16",
        "train.stage1.epochs=1",
        "train.stage1.steps_per_epoch=2",
        "train.stage2.epochs=1",
        "train.stage2.steps_per_epoch=1",
        "train.lr_milestones=[2]",
        "train.optimizer=sgd",
    ]
    args = [anet_tf, "fit", "--out", "runs/tiny"]
    for item in tiny:
        args += ["--set", item]
    _run(args, cwd=tmp_path, env=env)
    assert sorted(os.listdir(tmp_path)) == ["datasets", "runs"]
    run = tmp_path / "runs" / "tiny"
    assert (run / "metrics.json").exists()
    assert (run / "export" / "anet" / "1" / "saved_model.pb").exists()
    assert (run / "export" / "SERVING.md").exists() and (run / "export" / "models.config").exists()
