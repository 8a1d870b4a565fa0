"""The names of a run folder's files are known in one place: ``training/run.py``
(the run folder) and ``training/checkpoint.py`` (a checkpoint folder). Every other
module takes them from there, so renaming or adding one is a one-line change."""

import os
import re

import anet_tf

OWNERS = {
    os.path.join("training", "run.py"),
    os.path.join("training", "checkpoint.py"),
}
# A SavedModel carries its own assets/config.yaml: another format with the same name.
OTHER_FORMATS = {os.path.join("export", "saved_model.py"): {"config.yaml"}}
NAMES = [
    "config.yaml",
    "changes.yaml",
    "log.csv",
    "metrics.json",
    "last.json",
    "state.json",
    "net.weights.h5",
    "optimizer.npz",
    "network.json",
    # folders
    "checkpoints",
    "tensorboard",
]
LITERAL = re.compile("[\"'](" + "|".join(re.escape(n) for n in NAMES) + ")[\"']")
# "export" is also a command's name: as a folder it is a path part.
FOLDER_IN_PATH = re.compile(r"os\.path\.join\([^)]*[\"']export[\"']")


def test_run_folder_file_names_appear_only_in_their_owners():
    root = os.path.dirname(anet_tf.__file__)
    found = []
    for dirpath, _, files in os.walk(root):
        for name in files:
            if not name.endswith(".py"):
                continue
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, root)
            if rel in OWNERS:
                continue
            with open(path, encoding="utf-8") as fh:
                for number, line in enumerate(fh, start=1):
                    for match in LITERAL.finditer(line):
                        if match.group(1) not in OTHER_FORMATS.get(rel, set()):
                            found.append(f"{rel}:{number}: {match.group(0)}")
                    found += [f"{rel}:{number}: {m.group(0)}" for m in FOLDER_IN_PATH.finditer(line)]
    assert not found, "run-folder names outside training/run.py and checkpoint.py:\n" + "\n".join(found)
