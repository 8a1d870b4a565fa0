"""TensorFlow's native start-up lines are kept from users; real errors never are."""

import os
import re
import subprocess
import sys

import pytest

from anet_tf.native_output import stderr_filtered


def test_filter_drops_noise_and_keeps_the_rest(capfd):
    noise = re.compile(r"^I0000 ")
    with stderr_filtered(noise):
        os.write(2, b"I0000 chatter from C++\nW0000 a real warning\n")
    assert capfd.readouterr().err == "W0000 a real warning\n"


def test_filter_writes_everything_back_when_the_block_raises(capfd):
    with pytest.raises(RuntimeError):
        with stderr_filtered(re.compile(r"^I0000 ")):
            os.write(2, b"I0000 context of the failure\n")
            raise RuntimeError("boom")
    assert "I0000 context of the failure" in capfd.readouterr().err


def test_commands_do_not_print_tensorflow_start_up_lines():
    """With oneDNN on, TensorFlow prints two absl lines at import that
    TF_CPP_MIN_LOG_LEVEL cannot silence; the command output must not carry them."""
    env = dict(os.environ, TF_ENABLE_ONEDNN_OPTS="1", ANET_TF_MALLOC="system")
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)
    out = subprocess.run(
        [sys.executable, "-m", "anet_tf", "summary", "--set", "model.base_width=8"],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert out.returncode == 0, out.stderr
    assert "oneDNN custom operations" not in out.stderr
    assert "absl::InitializeLog" not in out.stderr
    assert "params" in out.stdout
