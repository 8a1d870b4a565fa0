"""anet-tf embed: images from folders, manifests and dataset splits through a real
exported SavedModel, bad files reported by path, the documented .npz format.

The SavedModel is conftest.py's ``search_assets`` (built once per test session and
shared with test_search.py and test_visualize.py).
"""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest

from anet_tf.cli import main
from anet_tf.search.embed import embed_images
from anet_tf.search.embeddings import FORMAT
from anet_tf.search.embeddings import load_embeddings
from anet_tf.search.errors import SearchError
from anet_tf.search.serving import ServingModel
from anet_tf.search.serving import model_fingerprint
from anet_tf.search.serving import resolve_model_dir
from anet_tf.search.sources import list_images


@pytest.fixture(scope="module")
def assets(search_assets):
    return search_assets


@pytest.fixture(scope="module")
def model(assets):
    return ServingModel(assets.model)


def test_folder_to_documented_npz_with_bad_files_reported(assets, tmp_path, capsys, write_images):
    good = write_images(tmp_path / "imgs", 4)
    write_images(tmp_path / "imgs" / "sub", 1, seed=1)
    (tmp_path / "imgs" / "garbage.jpg").write_bytes(b"not an image at all")
    with open(good[0], "rb") as fh:
        (tmp_path / "imgs" / "cut.jpg").write_bytes(fh.read()[:200])
    (tmp_path / "imgs" / "empty.png").write_bytes(b"")
    (tmp_path / "imgs" / "notes.txt").write_text("ignored, not an image")
    with open(good[2], "rb") as fh:  # a JPEG: header and end marker intact, scan broken
        damaged = bytearray(fh.read())
    sos = damaged.find(b"\xff\xda")
    damaged[sos + 2 : sos + 4] = b"\x00\x01"
    (tmp_path / "imgs" / "damaged.jpg").write_bytes(bytes(damaged))
    out = tmp_path / "emb.npz"

    code = main(
        ["embed", str(tmp_path / "imgs"), "--model", assets.model, "-o", str(out)]
    )

    assert code == 0
    err = capsys.readouterr().err
    for name in ("garbage.jpg", "cut.jpg", "empty.png", "damaged.jpg"):
        assert f"skipped {tmp_path / 'imgs' / name}" in err
    assert "Graph execution error" not in err
    data = np.load(out, allow_pickle=False)
    assert str(data["format"]) == FORMAT
    paths = [p.decode() for p in data["path"]]
    assert paths == sorted(good) + [str(tmp_path / "imgs" / "sub" / "img_00.jpg")]
    assert data["embedding"].dtype == np.float32 and data["embedding"].shape == (5, 16)
    np.testing.assert_allclose(
        np.linalg.norm(data["embedding"], axis=1), 1.0, atol=1e-5
    )
    names = data["attribute_names"].tolist()
    assert names == ["color", "type"]
    for name in names:
        classes = data[f"{name}_classes"].tolist()
        probs = data[f"{name}_probs"]
        assert probs.shape == (5, len(classes))
        np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
        assert data[f"{name}_label"].tolist() == [classes[i] for i in probs.argmax(1)]
        assert data[f"{name}_known"].tolist() == [""] * 5
    assert data["pid"].tolist() == [-1] * 5
    failed = dict(
        zip(
            [p.decode() for p in data["failed_path"]],
            data["failed_reason"].tolist(),
            strict=True,
        )
    )
    # The served model's reason (its header reader, which runs first for the pixel
    # cap, cannot read the frame), not TensorFlow's "Graph execution error".
    assert failed == {
        str(tmp_path / "imgs" / "damaged.jpg"): "the decoder refused the data after a valid header (damaged inside the file)",
        str(tmp_path / "imgs" / "cut.jpg"): "truncated JPEG (no end-of-image marker)",
        str(tmp_path / "imgs" / "empty.png"): "the file is empty",
        str(
            tmp_path / "imgs" / "garbage.jpg"
        ): "not a JPEG, PNG, GIF, BMP or WebP file",
    }


def test_embeddings_are_the_serving_signature_outputs_whatever_the_batching(
    model, tmp_path, write_images
):
    paths = write_images(tmp_path, 5, seed=3)
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff broken")
    images = list_images(str(tmp_path))
    by_one = embed_images(model, images, batch_size=1, progress=False)
    by_four = embed_images(model, images, batch_size=4, progress=False)

    assert by_one.paths == by_four.paths == sorted(paths)
    assert [p for p, _ in by_four.failed] == [str(bad)]
    np.testing.assert_allclose(by_one.embedding, by_four.embedding, atol=1e-6)
    direct = model.predict_bytes([open(p, "rb").read() for p in sorted(paths)])
    np.testing.assert_allclose(by_four.embedding, direct["embedding"], atol=1e-6)
    np.testing.assert_array_equal(by_four.predicted["type"], direct["type_label"])


def test_manifest_split_keeps_known_ids_and_labels(assets, tmp_path, write_images):
    paths = write_images(tmp_path / "images", 3, seed=5)
    rel = [os.path.relpath(p, tmp_path) for p in paths]
    (tmp_path / "list.csv").write_text(
        "path,vehicle_id,camera_id,split,color\n"
        f"{rel[0]},7,1,gallery,red\n"
        f"{rel[1]},8,,query,\n"
        f"{rel[2]},9,2,gallery,\n"
    )
    out = tmp_path / "g.npz"

    assert (
        main(
            [
                "embed",
                str(tmp_path / "list.csv"),
                "--split",
                "gallery",
                "--model",
                assets.model,
                "-o",
                str(out),
            ]
        )
        == 0
    )

    emb = load_embeddings(str(out))
    assert emb.paths == [paths[0], paths[2]]
    assert emb.pids.tolist() == [7, 9] and emb.camids.tolist() == [1, 2]
    assert emb.known["color"].tolist() == ["red", ""]
    assert emb.known["type"].tolist() == ["", ""]


def test_manifest_time_column_reaches_the_embeddings_file(assets, tmp_path, write_images):
    paths = write_images(tmp_path / "images", 3, seed=6)
    rel = [os.path.relpath(p, tmp_path) for p in paths]
    (tmp_path / "list.csv").write_text(
        "path,camera_id,time\n"
        f"{rel[0]},1,2026-12-03T08:15:00Z\n"
        f"{rel[1]},1,\n"
        f"{rel[2]},2,1796285760\n"
    )
    out = tmp_path / "t.npz"
    assert main(["embed", str(tmp_path / "list.csv"), "--model", assets.model,
                 "-o", str(out), "--quiet"]) == 0
    emb = load_embeddings(str(out))
    assert emb.paths == paths
    assert emb.times.tolist() == [1796285700, -1, 1796285760]


def test_dataset_split_from_the_models_config(assets, tmp_path):
    out = tmp_path / "q.npz"
    code = main(
        [
            "embed",
            "dataset:query",
            "--model",
            assets.model,
            "-o",
            str(out),
            "--set",
            f"data.root={assets.data}",
        ]
    )
    assert code == 0
    emb = load_embeddings(str(out))
    assert emb.pids.tolist() == [4, 5, 6]
    assert emb.known["color"].tolist() == ["blue", "black", "gray"]
    assert emb.model["fingerprint"] == model_fingerprint(assets.model)


def test_text_list_and_missing_files(model, tmp_path, write_images):
    paths = write_images(tmp_path, 2, seed=7)
    (tmp_path / "list.txt").write_text(
        f"# queries\n{os.path.basename(paths[0])}\n\nmissing.jpg\n{paths[1]}\n"
    )
    emb = embed_images(model, list_images(str(tmp_path / "list.txt")), progress=False)
    assert emb.paths == paths
    assert emb.failed == [(str(tmp_path / "missing.jpg"), "No such file or directory")]


def test_fingerprint_follows_the_weights_not_the_version(assets, tmp_path):
    copy = tmp_path / "anet" / "3"
    shutil.copytree(assets.model, copy)
    assert resolve_model_dir(str(tmp_path / "anet")) == str(copy)
    assert model_fingerprint(str(copy)) == model_fingerprint(assets.model)
    meta = copy / "assets" / "metadata.json"
    meta.write_text(meta.read_text().replace('"version": 1', '"version": 3'))
    assert model_fingerprint(str(copy)) == model_fingerprint(assets.model)
    with open(copy / "variables" / "variables.index", "ab") as fh:
        fh.write(b"\0")
    assert model_fingerprint(str(copy)) != model_fingerprint(assets.model)


def test_bad_sources_say_what_is_wrong(assets, tmp_path, capsys):
    with pytest.raises(SearchError, match="no such file or folder"):
        list_images(str(tmp_path / "nowhere"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(SearchError, match="no image files"):
        list_images(str(tmp_path / "empty"))
    (tmp_path / "m.csv").write_text("file,vehicle_id\na.jpg,1\n")
    with pytest.raises(SearchError, match=r"m.csv:1: a manifest needs a 'path' column"):
        list_images(str(tmp_path / "m.csv"))
    (tmp_path / "m2.csv").write_text("path,vehicle_id\na.jpg,x\n")
    with pytest.raises(SearchError, match=r"m2.csv:2: vehicle_id must be an integer"):
        list_images(str(tmp_path / "m2.csv"))
    code = main(
        [
            "embed",
            str(tmp_path),
            "--model",
            str(tmp_path),
            "-o",
            str(tmp_path / "o.npz"),
        ]
    )
    assert code == 1
    assert "is not a SavedModel" in capsys.readouterr().err


def test_a_manifest_cell_csv_cannot_take_is_one_line_naming_line_and_column(
    assets, tmp_path, capsys
):
    long = tmp_path / "long.csv"
    long.write_text("path,vehicle_id\na.jpg,1\nb.jpg," + "1" * 131_073 + "\n")
    with pytest.raises(
        SearchError,
        match=r"long\.csv:3: the 'vehicle_id' cell \(column 2\) is 131,073 characters",
    ):
        list_images(str(long))
    nul = tmp_path / "nul.csv"
    nul.write_text("path,vehicle_id\na.jpg,1\n\nb\0.jpg,2\n")  # line 4: the blank counts
    out = tmp_path / "o.npz"
    code = main(["embed", str(nul), "--model", assets.model, "-o", str(out)])
    err = capsys.readouterr().err
    assert code == 1
    assert err == (
        f"anet-tf embed: error: {nul}:4: the 'path' cell (column 1) holds a NUL byte "
        "at character 2; a manifest is plain text (a file saved as UTF-16 has one "
        "after every letter: save it as UTF-8)\n"
    )
    assert not out.exists()
