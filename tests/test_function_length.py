"""No function of the package is longer than 80 lines without a ``# long: <reason>``
comment above it (tools/check_function_length.py)."""

import importlib.util
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOL = os.path.join(REPO, "tools", "check_function_length.py")


def _tool():
    spec = importlib.util.spec_from_file_location("check_function_length", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _function(name, lines, above=""):
    body = "".join(f"    x = {i}\n" for i in range(lines - 1))
    return f"{above}def {name}():\n{body}\n"


def test_no_package_function_is_long_without_saying_why():
    done = subprocess.run(
        [sys.executable, TOOL, "anet_tf"], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, "\n" + done.stdout + done.stderr


def test_the_check_counts_from_def_to_the_last_line_and_reads_the_reason(tmp_path):
    tool = _tool()
    path = tmp_path / "mod.py"
    path.write_text(
        _function("fits", 80)
        + _function("too_long", 81)
        + _function("explained", 81, above="# long: one table, read top to bottom\n")
        + _function("decorated", 90, above="# long: a reason\n@staticmethod\n@staticmethod\n")
        + _function("no_reason", 81, above="# long:\n")
        + "class Box:\n"
        + "".join("    " + line + "\n" for line in _function("method", 81).splitlines())
    )
    found = tool.long_functions(str(path))
    assert [(f.name, f.length) for f in found] == [
        ("too_long", 81),
        ("no_reason", 81),
        ("Box.method", 81),
    ]
    assert str(found[0]) == f"{path}:82: too_long is 81 lines (over 80)"
    assert tool.main([str(tmp_path)]) == 1
    assert tool.main([str(tmp_path), "--max", "90"]) == 0
