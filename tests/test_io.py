"""The file helpers every layer writes through: atomic replacement and bounded YAML."""

import os

import pytest

from anet_tf.io import YAMLTooLargeError
from anet_tf.io import atomic_file
from anet_tf.io import atomic_write_bytes
from anet_tf.io import load_yaml
from anet_tf.io import quote


@pytest.mark.parametrize("error", [OSError(28, "No space left on device"), KeyboardInterrupt()])
def test_a_write_that_fails_leaves_the_old_file_and_no_temporary(tmp_path, error):
    path = tmp_path / "out.bin"
    atomic_write_bytes(str(path), b"old")
    with pytest.raises(type(error)):
        with atomic_file(str(path), "wb") as fh:
            fh.write(b"half of the new")
            raise error
    assert path.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["out.bin"]
    atomic_write_bytes(str(path), b"new")
    assert path.read_bytes() == b"new" and os.listdir(tmp_path) == ["out.bin"]


def test_aliases_are_bounded_but_ordinary_ones_work():
    assert load_yaml("a: &x [1, 2]\nb: *x\n") == {"a": [1, 2], "b": [1, 2]}
    bomb = "a0: &a0 [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]\n" + "".join(
        f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]\n" for i in range(1, 6)
    )
    with pytest.raises(YAMLTooLargeError, match="more than 100,000 values"):
        load_yaml(bomb)
    with pytest.raises(YAMLTooLargeError):
        load_yaml("a: &a [*a]\n")  # a list inside itself


def test_quote_cuts_long_values():
    assert quote("abc") == "'abc'"
    cut = quote("x" * 10_000)
    assert len(cut) < 160 and cut.endswith("(10002 characters)")
