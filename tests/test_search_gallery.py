"""What both gallery backends share, on the faiss backend: a gallery built in parts
(`index add`) answers like one built at once, `index add` refuses duplicates and
another model's files with one line and nothing changed, the ivf and hnsw kinds,
and the capture time from a manifest's time column."""

from __future__ import annotations

import dataclasses
import hashlib
import os

import numpy as np
import pytest

from anet_tf.cli import main
from anet_tf.search.embeddings import Embeddings
from anet_tf.search.embeddings import load_embeddings
from anet_tf.search.embeddings import save_embeddings
from anet_tf.search.errors import SearchError
from anet_tf.search.gallery import parse_where
from anet_tf.search.index import build_index
from anet_tf.search.sources import list_images
from anet_tf.search.sources import parse_time
from anet_tf.search.targets import add_to_gallery
from anet_tf.search.targets import build_gallery
from anet_tf.search.targets import is_milvus_target
from anet_tf.search.targets import open_gallery


def part(emb: Embeddings, keep, prefix: str | None = None) -> Embeddings:
    """Rows ``keep`` of ``emb`` (paths renamed under ``prefix`` when given)."""
    keep = np.asarray(keep)
    sub = dataclasses.replace(emb.rows(keep), source=f"{emb.source}[{keep[0]}:{keep[-1] + 1}]")
    if prefix is not None:
        sub.paths = [f"/{prefix}{p}" for p in sub.paths]
    return sub


def tree_digest(folder) -> str:
    """A digest of every file under ``folder`` (names and bytes)."""
    h = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames.sort()
        for name in sorted(filenames):
            path = os.path.join(dirpath, name)
            h.update(os.path.relpath(path, folder).encode())
            with open(path, "rb") as fh:
                h.update(fh.read())
    return h.hexdigest()


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


@pytest.fixture
def gallery(random_embeddings):
    emb = random_embeddings(240, 16, seed=7)
    emb.times = np.arange(240, dtype=np.int64) * 60 + 1_800_000_000
    return emb


def test_targets_are_chosen_by_name():
    assert is_milvus_target("gallery.db") and is_milvus_target("http://h:19530")
    assert is_milvus_target("https://h:443") and not is_milvus_target("gallery.index")


def test_faiss_gallery_built_in_parts_answers_like_one_built_at_once(
    gallery, random_embeddings, tmp_path, capsys
):
    a, b = part(gallery, range(0, 150)), part(gallery, range(150, 240))
    save_embeddings(a, str(tmp_path / "a.npz"))
    save_embeddings(b, str(tmp_path / "b.npz"))
    whole = build_index([gallery])
    assert (
        main(["index", "build", str(tmp_path / "a.npz"), "-o", str(tmp_path / "idx")])
        == 0
    )
    assert main(["index", "add", str(tmp_path / "idx"), str(tmp_path / "b.npz")]) == 0
    assert "added 90 items" in capsys.readouterr().out
    parts = open_gallery(str(tmp_path / "idx"))
    assert len(parts) == 240 and parts.meta["count"] == 240
    queries = random_embeddings(6, 16, seed=8).embedding
    for where in ({}, parse_where("color=red|blue,type=suv")):
        s1, i1 = whole.search(queries, 10, where=where)
        s2, i2 = parts.search(queries, 10, where=where)
        np.testing.assert_array_equal(i1, i2)
        np.testing.assert_allclose(s1, s2, atol=1e-6)
    m1, m2 = whole.matches(s1, i1)[0][0], parts.matches(s2, i2)[0][0]
    assert m1 == m2 and m2.time == int(gallery.times[m2.id])
    assert m2.confidence["color"] == pytest.approx(
        float(gallery.probs["color"][m2.id].max())
    )


def test_faiss_add_refuses_duplicates_and_other_models_changing_nothing(
    gallery, random_embeddings, tmp_path, capsys
):
    save_embeddings(part(gallery, range(0, 100)), str(tmp_path / "a.npz"))
    # 10 new images and 1 already in the gallery
    save_embeddings(part(gallery, range(99, 110)), str(tmp_path / "dup.npz"))
    twice = part(gallery, [120, 121, 120])
    save_embeddings(twice, str(tmp_path / "twice.npz"))
    save_embeddings(
        random_embeddings(5, 16, fingerprint="beef"), str(tmp_path / "fp.npz")
    )
    save_embeddings(random_embeddings(5, 8), str(tmp_path / "dim.npz"))
    idx = tmp_path / "idx"
    assert main(["index", "build", str(tmp_path / "a.npz"), "-o", str(idx)]) == 0
    capsys.readouterr()
    before = tree_digest(idx)
    for name, says in (
        ("dup.npz", "1 of the 11 images are already in"),
        ("twice.npz", "/gallery/00120.jpg is given 2 times"),
        ("fp.npz", "has fingerprint beef"),
        ("dim.npz", "holds 16-d embeddings"),
    ):
        assert main(["index", "add", str(idx), str(tmp_path / name)]) == 1
        assert says in one_error_line(capsys)
        assert tree_digest(idx) == before
    assert (
        main(["index", "add", str(tmp_path / "nowhere"), str(tmp_path / "a.npz")]) == 1
    )
    assert "is not an anet-tf index" in one_error_line(capsys)
    assert not (tmp_path / "nowhere").exists()
    assert (
        main(
            ["index", "build", str(tmp_path / "a.npz"), "-o", str(idx), "--shards", "2"]
        )
        == 1
    )
    assert "shards are those of a Milvus collection" in one_error_line(capsys)
    assert main(["index", "remove", str(idx), "--camera", "1"]) == 1
    assert "works on a Milvus target" in one_error_line(capsys)
    assert (
        main(
            [
                "search",
                "--index",
                str(idx),
                "--collection",
                "x",
                "--query-embeddings",
                str(tmp_path / "a.npz"),
            ]
        )
        == 1
    )
    assert "a faiss index folder" in one_error_line(capsys)
    assert tree_digest(idx) == before


@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
def test_approximate_kinds_find_the_vectors_themselves_and_filter(
    kind, random_embeddings, tmp_path
):
    gallery = random_embeddings(800, 16, seed=9)
    built = build_gallery([gallery], str(tmp_path / kind), kind=kind, nlist=8, nprobe=8)
    loaded = open_gallery(str(tmp_path / kind))
    assert loaded.kind == kind and loaded.meta["params"] == built.meta["params"]
    _, ids = loaded.search(gallery.embedding[:100], 1)
    assert (ids[:, 0] == np.arange(100)).mean() > 0.9
    _, ids = loaded.search(gallery.embedding[:20], 5, where={"color": ["red"]})
    assert (ids >= 0).all()
    assert all(gallery.predicted["color"][i] == "red" for i in ids.ravel())
    added, rows = add_to_gallery(
        str(tmp_path / kind), [part(gallery, range(10), "new")]
    )
    assert len(added) == 810 and len(rows) == 10


def test_time_column_of_a_manifest(tmp_path):
    (tmp_path / "m.csv").write_text(
        "path,camera_id,time,color\n"
        "a.jpg,1,2026-12-03T08:15:00Z,red\n"
        "b.jpg,2,,blue\n"
        "c.jpg,2,1796285760,\n"
    )
    images = list_images(str(tmp_path / "m.csv"))
    assert images.times.tolist() == [1796285700, -1, 1796285760]
    assert set(images.known) == {"color"}
    assert parse_time("2026-12-03 09:15:00+01:00") == 1796285700
    (tmp_path / "bad.csv").write_text(
        "path,time\na.jpg,2026-12-03T08:15:00Z\nb.jpg,noon\n"
    )
    with pytest.raises(SearchError, match=r"bad.csv:3: time: 'noon' is not a time"):
        list_images(str(tmp_path / "bad.csv"))


def test_embeddings_file_keeps_times_and_reads_files_without_them(gallery, tmp_path):
    save_embeddings(gallery, str(tmp_path / "t.npz"))
    np.testing.assert_array_equal(
        load_embeddings(str(tmp_path / "t.npz")).times, gallery.times
    )
    with np.load(tmp_path / "t.npz") as data:
        arrays = {k: data[k] for k in data.files if k != "time"}
    np.savez(tmp_path / "old.npz", **arrays)
    assert (load_embeddings(str(tmp_path / "old.npz")).times == -1).all()


def test_add_to_an_index_written_without_times_and_probabilities(gallery, tmp_path):
    """An index folder whose items.npz lacks the time and <a>_probs arrays (as
    written before they were recorded) takes new items; its old items have no
    confidence and unknown time."""
    idx = str(tmp_path / "idx")
    build_gallery([part(gallery, range(0, 50))], idx)
    items_path = os.path.join(idx, "items.npz")
    with np.load(items_path) as data:
        kept = {
            k: data[k] for k in data.files if k != "time" and not k.endswith("_probs")
        }
    np.savez(items_path, **kept)
    added, _ = add_to_gallery(idx, [part(gallery, range(50, 60))])
    old, new = added.match(3, 1, 1.0), added.match(55, 1, 1.0)
    assert old.time == -1 and old.confidence == {}
    assert new.time == int(gallery.times[55]) and set(new.confidence) == {
        "color",
        "type",
    }
    assert open_gallery(idx).match(55, 1, 1.0) == new
