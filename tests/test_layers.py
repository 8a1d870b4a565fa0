"""The package's import contracts (pyproject.toml ``[tool.importlinter]``: the layers,
no cycles between sibling modules, the choice lists as leaves) hold, and they are
able to fail: an upward import or a cycle added to a copy of the package breaks them."""

import os
import shutil
import subprocess
import sys

import pytest

pytest.importorskip("importlinter")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def lint_imports(root, *contracts):
    """``lint-imports`` on the package under ``root`` with the contracts of
    ``root/pyproject.toml`` (only the ``contracts`` ids given, if any)."""
    env = {**os.environ, "PYTHONPATH": str(root)}
    args = ["--no-cache", "--no-logo", *(f"--contract={c}" for c in contracts)]
    return subprocess.run(
        [sys.executable, "-c", "from importlinter.cli import lint_imports_command as c; c()"]
        + args,
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def package_copy(tmp_path):
    """A copy of the package and its contracts under ``tmp_path``."""
    shutil.copytree(
        os.path.join(REPO, "anet_tf"),
        tmp_path / "anet_tf",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    shutil.copy(os.path.join(REPO, "pyproject.toml"), tmp_path)
    return tmp_path


def test_the_package_keeps_its_import_contracts():
    done = lint_imports(REPO)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "BROKEN" not in done.stdout, done.stdout


def test_an_upward_import_breaks_the_layers(package_copy):
    with open(package_copy / "anet_tf" / "data" / "__init__.py", "a") as fh:
        fh.write("\nimport anet_tf.commands  # noqa: E402,F401 (the data layer reaching up)\n")
    done = lint_imports(package_copy, "layers")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Layers BROKEN" in done.stdout
    assert "anet_tf.data is not allowed to import anet_tf.commands" in done.stdout
    assert "- anet_tf.data -> anet_tf.commands (l." in done.stdout


def test_a_cycle_between_siblings_breaks_no_cycles(package_copy):
    data = package_copy / "anet_tf" / "data"
    (data / "cycle_a.py").write_text("from anet_tf.data import cycle_b  # noqa: F401\n")
    (data / "cycle_b.py").write_text("from anet_tf.data import cycle_a  # noqa: F401\n")
    done = lint_imports(package_copy, "acyclic")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "No cycles BROKEN" in done.stdout
    section = done.stdout.split("No cycles are allowed in anet_tf.data.")[1]
    assert ".cycle_a -> .cycle_b" in section or ".cycle_b -> .cycle_a" in section


def test_a_choice_list_importing_the_package_breaks_the_leaves(package_copy):
    model, export = package_copy / "anet_tf" / "model", package_copy / "anet_tf" / "export"
    for path in (model / "names.py", export / "formats.py"):
        if not path.exists():  # the choice lists, until they move there (issue 29)
            path.write_text('"""A list of choices."""\n')
    with open(model / "names.py", "a") as fh:
        fh.write("\nfrom anet_tf.model import layers  # noqa: E402,F401\n")
    done = lint_imports(package_copy, "leaves")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Choice lists are leaves BROKEN" in done.stdout
    assert "anet_tf.model.names is not allowed to import anet_tf.model.layers" in done.stdout
    assert "anet_tf.export.formats is not allowed" not in done.stdout
