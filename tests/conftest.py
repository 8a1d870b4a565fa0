"""Shared test settings (quiet TensorFlow, CPU only) and the fixtures more than one
test module uses: tiny runs, a tiny exported SavedModel for search, random
embeddings, images, and tiny copies of the datasets' release layouts. Plain helpers
that test modules import are in helpers.py."""

import io
import os
from types import SimpleNamespace

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from helpers import TINY_OVERRIDES  # noqa: E402
from PIL import Image  # noqa: E402

# The test files that take longest, longest first (summed --durations of one run of
# the suite on the 2-core CPU). The parallel runner hands out whole files
# (--dist loadfile) in collection order (--no-loadscope-reorder), so starting these
# first keeps one long file from running alone at the end; the others follow in
# their usual order.
LONGEST_FILES_FIRST = [
    "test_run_folder.py",
    "test_training.py",
    "test_training_processes.py",
    "test_ablation.py",
    "test_strong_training.py",
    "test_jax_step.py",
    "test_jax_fit.py",
    "test_losses.py",
    "test_cli.py",
    "test_augment_strong.py",
    "test_export_tflite.py",
    "test_distill.py",
    "test_calibrate.py",
]


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(LONGEST_FILES_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory):
    """A small synthetic dataset (10 identities, 32 px), written once per session."""
    from anet_tf.data.synthetic import generate

    root = tmp_path_factory.mktemp("tiny-synth")
    generate(str(root), ids=10, test_ids=4, cameras=3, images_per_id=5, image_size=32, seed=3)
    return str(root)


@pytest.fixture
def tiny_overrides(tiny_dataset):
    """``--set`` items of a tiny run on :func:`tiny_dataset`."""
    return [f"data.root={tiny_dataset}", *TINY_OVERRIDES]


@pytest.fixture
def make_tiny_cfg(tiny_overrides):
    """``make_tiny_cfg(*extra_overrides)`` -> a validated tiny config."""
    from anet_tf.config import load_config

    return lambda *extra: load_config("synthetic", [*tiny_overrides, *extra])


# ------------------------------------------------- a tiny network for the exports
# 48x32 input, so that height and width cannot be swapped unnoticed.
EXPORT_IMAGE_SIZE = (48, 32)


def _tiny_export_config(root, overrides=()):
    from anet_tf.config import load_config

    return load_config(
        None,
        [
            "data.name=synthetic",
            f"data.root={root}",
            f"data.image_size=[{EXPORT_IMAGE_SIZE[0]}, {EXPORT_IMAGE_SIZE[1]}]",
            "model.backbone=resnet18_ibn_a",
            "model.base_width=8",
            "model.s_f=16",
            "model.s_a=8",
            "model.s_j=16",
            *overrides,
        ],
    )


def _tiny_export_run(tmp, overrides=()):
    """(net, cfg, dataset): a tiny synthetic dataset and an untrained tiny ANet
    (ResNet-18-IBN-a at base width 8)."""
    import tensorflow as tf

    from anet_tf.data.readers import load_dataset
    from anet_tf.data.synthetic import generate
    from anet_tf.model import build_model_from_config

    root = os.path.join(tmp, "data")
    generate(root, ids=8, test_ids=4, cameras=2, images_per_id=4, image_size=32)
    cfg = _tiny_export_config(root, overrides)
    dataset = load_dataset(cfg)
    tf.keras.utils.set_random_seed(0)
    net = build_model_from_config(cfg, len(dataset.train_pids()), dataset.num_classes)
    return net, cfg, dataset


def _encode_image(array, fmt="PNG", mode=None, **options):
    image = Image.fromarray(np.asarray(array, np.uint8), mode)
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def _random_pixels(h, w, seed=0, channels=3):
    rng = np.random.default_rng(seed)
    shape = (h, w) if channels == 1 else (h, w, channels)
    return rng.integers(0, 256, shape, dtype=np.uint8)


@pytest.fixture(scope="session")
def export_image_size():
    """(height, width) of the tiny export network's input."""
    return EXPORT_IMAGE_SIZE


@pytest.fixture(scope="session")
def tiny_export_config():
    """``tiny_export_config(root, overrides=())`` -> the tiny export network's config
    on the synthetic dataset at ``root``."""
    return _tiny_export_config


@pytest.fixture(scope="session")
def tiny_export_run():
    """``tiny_export_run(tmp, overrides=())`` -> (net, cfg, dataset): a tiny
    synthetic dataset under ``tmp`` and an untrained tiny ANet."""
    return _tiny_export_run


@pytest.fixture(scope="session")
def encode_image():
    """``encode_image(array, fmt="PNG", mode=None, **PIL save options)`` -> the
    encoded file's bytes."""
    return _encode_image


@pytest.fixture(scope="session")
def random_pixels():
    """``random_pixels(h, w, seed=0, channels=3)`` -> uint8 pixels."""
    return _random_pixels


@pytest.fixture(scope="session")
def onnx_export(tmp_path_factory, export_image_size, tiny_export_run):
    """``anet-tf export --run RUN --formats saved_model,onnx,tensorrt
    --model-version 3`` on a run directory holding a tiny untrained network:
    (rc, out, cfg, dataset, pixels, run). For test_export_onnx.py and
    test_export_tensorrt.py (both skip without tf2onnx and onnxruntime)."""
    from anet_tf.cli import main
    from anet_tf.training.fit import save_run_config

    tmp = str(tmp_path_factory.mktemp("onnx"))
    net, cfg, dataset = tiny_export_run(tmp)
    run = os.path.join(tmp, "run")
    save_run_config(cfg, run)
    os.makedirs(os.path.join(run, "checkpoints", "best"))
    net.save_weights(os.path.join(run, "checkpoints", "best", "net.weights.h5"))
    out = os.path.join(tmp, "out")
    rc = main(
        [
            "export",
            "--run",
            run,
            "--out",
            out,
            "--formats",
            "saved_model,onnx,tensorrt",
            "--model-version",
            "3",
            "--quiet",
        ]
    )
    from anet_tf.export.tflite import load_pixels

    records = dataset.query + dataset.gallery
    pixels = load_pixels([r.path for r in records], export_image_size)
    return rc, out, cfg, dataset, pixels, run


# ------------------------------------------------------------------- search
SEARCH_OVERRIDES = [
    "data.image_size=[32,32]",
    "model.backbone=resnet18_ibn_a",
    "model.base_width=8",
    "model.s_f=16",
    "model.s_a=8",
    "model.s_j=16",
]


@pytest.fixture(scope="session")
def search_assets(tmp_path_factory):
    """A 32x32 synthetic dataset, a tiny ANet exported with ``export_saved_model``
    and a run directory holding its weights, built once per session:
    ``data``, ``run``, ``model`` (the SavedModel version folder), ``cfg``."""
    from anet_tf.config import Config
    from anet_tf.config import apply_overrides
    from anet_tf.data.readers import load_dataset
    from anet_tf.data.synthetic import generate
    from anet_tf.export.saved_model import export_saved_model
    from anet_tf.model import build_model_from_config
    from anet_tf.training.fit import save_run_config

    base = tmp_path_factory.mktemp("anet_search_assets")
    data = base / "synthetic"
    run = base / "run"
    model = base / "export" / "anet" / "1"
    cfg = apply_overrides(Config(), [f"data.root={data}", *SEARCH_OVERRIDES])
    generate(str(data), ids=6, test_ids=3, cameras=2, images_per_id=4, image_size=32)
    dataset = load_dataset(cfg)
    net = build_model_from_config(cfg, len(dataset.train_pids()), dataset.num_classes)
    save_run_config(cfg, str(run))
    os.makedirs(run / "checkpoints" / "best")
    net.save_weights(str(run / "checkpoints" / "best" / "net.weights.h5"))
    export_saved_model(net, cfg, dataset, str(base / "export"), warmup=False)
    return SimpleNamespace(data=str(data), run=str(run), model=str(model), cfg=cfg)


def _write_images(folder, count: int, seed: int = 0, size=(40, 36)) -> list[str]:
    rng = np.random.default_rng(seed)
    os.makedirs(folder, exist_ok=True)
    paths = []
    for i in range(count):
        blocks = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
        image = Image.fromarray(blocks).resize(size, Image.NEAREST)
        ext = "png" if i % 2 else "jpg"
        path = os.path.join(folder, f"img_{i:02d}.{ext}")
        image.save(path)
        paths.append(path)
    return paths


@pytest.fixture(scope="session")
def write_images():
    """``write_images(folder, count, seed=0, size=(40, 36))`` -> the paths of
    ``count`` distinct random-block images (PNG and JPEG) written to ``folder``."""
    return _write_images


SEARCH_COLORS = ["red", "blue", "white"]
SEARCH_TYPES = ["sedan", "suv"]


def _fake_model(dim: int, fingerprint: str = "f00d") -> dict:
    return {
        "path": f"/models/m-{fingerprint}",
        "fingerprint": fingerprint,
        "embedding_dim": dim,
        "attributes": [
            {"name": "color", "classes": SEARCH_COLORS},
            {"name": "type", "classes": SEARCH_TYPES},
        ],
    }


def _random_embeddings(n: int, dim: int, seed: int = 0, fingerprint: str = "f00d"):
    from anet_tf.search.embeddings import Embeddings

    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, dim)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    probs = {
        "color": rng.dirichlet(np.ones(3), n).astype(np.float32),
        "type": rng.dirichlet(np.ones(2), n).astype(np.float32),
    }
    classes = {"color": SEARCH_COLORS, "type": SEARCH_TYPES}
    predicted = {a: np.asarray(classes[a], str)[p.argmax(1)] for a, p in probs.items()}
    known_color = np.asarray(SEARCH_COLORS + [""], str)[rng.integers(0, 4, n)]
    return Embeddings(
        paths=[f"/gallery/{i:05d}.jpg" for i in range(n)],
        embedding=x,
        attribute_names=["color", "type"],
        attribute_classes=[SEARCH_COLORS, SEARCH_TYPES],
        probs=probs,
        predicted=predicted,
        known={"color": known_color, "type": np.full(n, "", str)},
        pids=rng.integers(0, 50, n).astype(np.int64),
        camids=rng.integers(0, 5, n).astype(np.int64),
        model=_fake_model(dim, fingerprint),
        source=f"random-{seed}",
    )


@pytest.fixture(scope="session")
def fake_model():
    """``fake_model(dim, fingerprint="f00d")`` -> the model record of an embeddings
    file (attributes color: red, blue, white; type: sedan, suv)."""
    return _fake_model


@pytest.fixture(scope="session")
def random_embeddings():
    """``random_embeddings(n, dim, seed=0, fingerprint="f00d")`` -> Embeddings of
    random unit vectors with random predicted and known attributes, of
    ``fake_model(dim, fingerprint)``."""
    return _random_embeddings


# ---------------------------------------------- tiny copies of release layouts


def _veri_jpeg() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (120, 30, 200)).save(buf, "JPEG")
    return buf.getvalue()


def _veri_label_xml(root_tag: str, items) -> bytes:
    lines = [
        '<?xml version="1.0" encoding="gb2312" ?>',
        "<!-- 车辆 (gb2312 bytes in a comment) -->",
        f'<{root_tag} Version="1.0">',
        f'    <Items number="{len(items)}">',
    ]
    for name, vid, cam, color, typ in items:
        lines.append(
            f'        <Item imageName="{name}" vehicleID="{vid}" cameraID="{cam}" '
            f'colorID="{color}" typeID="{typ}" />'
        )
    lines += ["    </Items>", f"</{root_tag}>", ""]
    return "\r\n".join(lines).encode("gb2312")


class Veri776Release:
    """A tiny copy of the VeRi-776 release layout, quirks included: ``make(root)``
    writes it; the class attributes are what it holds."""

    COLORS = ["yellow", "orange", "green", "gray", "red", "blue", "white", "golden",
              "brown", "black"]  # fmt: skip
    TYPES = ["sedan", "suv", "van", "hatchback", "mpv", "pickup", "bus", "truck", "estate"]

    # (image name, vehicleID, cameraID, colorID, typeID); 0003 carries the typeID="0"
    # erratum of older copies.
    TRAIN = [
        ("0001_c001_00016450_0.jpg", "0001", "c001", "1", "4"),
        ("0001_c002_00016460_0.jpg", "0001", "c002", "1", "4"),
        ("0003_c001_00020000_0.jpg", "0003", "c001", "10", "0"),
        ("0003_c005_00020010_1.jpg", "0003", "c005", "10", "0"),
    ]
    TEST = [
        ("0002_c002_00030600_0.jpg", "0002", "c002", "7", "1"),
        ("0002_c003_00030610_0.jpg", "0002", "c003", "7", "1"),
        ("0004_c010_00040000_0.jpg", "0004", "c010", "5", "9"),
        ("0004_c020_00040010_0.jpg", "0004", "c020", "5", "9"),
    ]
    QUERY = ["0002_c002_00030600_0.jpg", "0004_c020_00040010_0.jpg"]

    @classmethod
    def make(cls, root) -> str:
        root = str(root)
        jpeg = _veri_jpeg()
        for folder, names in (
            ("image_train", [t[0] for t in cls.TRAIN]),
            ("image_test", [t[0] for t in cls.TEST]),
            ("image_query", cls.QUERY),
        ):
            os.makedirs(os.path.join(root, folder))
            for name in names:
                with open(os.path.join(root, folder, name), "wb") as fh:
                    fh.write(jpeg)
        files = {
            "name_train.txt": "\n".join(t[0] for t in cls.TRAIN) + "\n\n",
            "name_test.txt": "\r\n".join(t[0] for t in cls.TEST) + "\r\n",
            "name_query.txt": "\n".join(cls.QUERY),
            "list_color.txt": "".join(f"{i} {c}\n" for i, c in enumerate(cls.COLORS, 1)),
            "list_type.txt": "".join(f"{i} {t}\n" for i, t in enumerate(cls.TYPES, 1)),
        }
        for name, text in files.items():
            with open(os.path.join(root, name), "w") as fh:
                fh.write(text)
        with open(os.path.join(root, "train_label.xml"), "wb") as fh:
            fh.write(_veri_label_xml("TrainingImages", cls.TRAIN))
        with open(os.path.join(root, "test_label.xml"), "wb") as fh:
            fh.write(_veri_label_xml("TestImages", cls.TEST))
        return root


class VehicleIdRelease:
    """A tiny copy of the VehicleID release layout, quirks included (partial
    attributes, gb18030 model names): ``make(root)`` writes it."""

    COLORS = ["black", "blue", "gray", "red", "sliver", "white", "yellow"]
    MODELS = [f"大众 款{i}" for i in range(250)]  # Chinese names with a space
    TRAIN = [("0000001", 1), ("0000002", 1), ("0000003", 2), ("0000004", 2), ("0000005", 3)]
    TEST_800 = [("0000010", 10), ("0000011", 10), ("0000012", 11), ("0000013", 12)]
    TEST_1600 = TEST_800 + [("0000014", 13), ("0000015", 13)]
    # Per vehicle, partial: colour labels are a subset of model labels.
    MODEL_ATTR = {1: 5, 2: 17, 10: 249, 11: 3}
    COLOR_ATTR = {1: 0, 10: 3}

    @classmethod
    def make(cls, root) -> str:
        root = str(root)
        buf = io.BytesIO()
        Image.new("RGB", (8, 8), (90, 90, 90)).save(buf, "JPEG")
        os.makedirs(os.path.join(root, "image"))
        for image, _ in cls.TRAIN + cls.TEST_1600:
            with open(os.path.join(root, "image", image + ".jpg"), "wb") as fh:
                fh.write(buf.getvalue())
        for folder in ("train_test_split", "attribute"):
            os.makedirs(os.path.join(root, folder))
        texts = {
            "train_test_split/train_list.txt": cls.TRAIN,
            "train_test_split/test_list_800.txt": cls.TEST_800,
            "train_test_split/test_list_1600.txt": cls.TEST_1600,
            "train_test_split/test_list_13164.txt": cls.TEST_1600[:2],
            "attribute/model_attr.txt": list(cls.MODEL_ATTR.items()),
            "attribute/color_attr.txt": list(cls.COLOR_ATTR.items()),
        }
        for name, pairs in texts.items():
            with open(os.path.join(root, name), "w") as fh:
                fh.write("".join(f"{a} {b}\n" for a, b in pairs))
        with open(os.path.join(root, "attribute", "color_names.txt"), "w") as fh:
            fh.write("".join(f"{c} {i}\n" for i, c in enumerate(cls.COLORS)))  # <name> <id>
        with open(os.path.join(root, "attribute", "model_names.txt"), "wb") as fh:
            text = "".join(f"{i} {m}\r\n" for i, m in enumerate(cls.MODELS))  # <id> <name>
            fh.write(text.encode("gb18030"))
        return root


class VeriWildRelease:
    """A tiny copy of the VeRi-Wild release layout, quirks included: ``make(root)``
    writes it; ``append(root, name, text)`` adds to a file of its split folder."""

    HEADER = "id/image;Camera ID;Time;Model;Type;Color"
    # key, camera, model, type, color. Quirks: a type with a leading space, model names
    # with spaces, one empty model field (unknown).
    ROWS = [
        ("00001/000001", 3, "Audi A6L", "sedan", "black"),
        ("00001/000002", 7, "Audi A6L", "sedan", "black"),
        ("00001/000003", 7, "Audi A6L", "sedan", "black"),  # in no list
        ("00002/000004", 12, "Buick Excelle GT", " small-sized truck", "dark gray"),
        ("00002/000005", 3, "Buick Excelle GT", "small-sized truck", "dark gray"),
        ("00010/000100", 1, "Volkswagen Lavida", "SUV", "white"),
        ("00010/000101", 2, "Volkswagen Lavida", "SUV", "white"),
        ("00010/000102", 174, "", "SUV", "white"),
        ("00011/000110", 5, "Audi A6L", "sedan", "red"),
        ("00011/000111", 6, "Audi A6L", "sedan", "red"),
        ("00012/000120", 8, "Buick Excelle GT", "minivan", "blue"),
        ("00012/000121", 9, "Buick Excelle GT", "minivan", "blue"),
    ]
    LISTS = {
        "train_list.txt": [
            "00001/000001",
            "00001/000002.jpg",
            "00002/000004",
            "00002/000005",
        ],
        "test_3000_query.txt": ["00010/000100", "00011/000110"],
        "test_3000.txt": ["00010/000101", "00010/000102", "00011/000111"],
        "test_5000_query.txt": ["00010/000100", "00011/000110", "00012/000120"],
        "test_5000.txt": ["00010/000101", "00010/000102", "00011/000111", "00012/000121"],
    }
    SPLIT = "train_test_split"

    @classmethod
    def make(cls, root) -> str:
        root = str(root)
        buf = io.BytesIO()
        Image.new("RGB", (8, 8), (10, 200, 30)).save(buf, "JPEG")
        for key, *_ in cls.ROWS:
            path = os.path.join(root, "images", key + ".jpg")
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "wb") as fh:
                fh.write(buf.getvalue())
        os.makedirs(os.path.join(root, cls.SPLIT))
        lines = [cls.HEADER] + [
            f"{key};{cam};2018-03-0{i % 9 + 1} 17:54:23;{model};{typ};{color}"
            for i, (key, cam, model, typ, color) in enumerate(cls.ROWS)
        ]
        with open(os.path.join(root, cls.SPLIT, "vehicle_info.txt"), "w") as fh:
            fh.write("\n".join(lines) + "\n")
        for name, keys in cls.LISTS.items():
            with open(os.path.join(root, cls.SPLIT, name), "w") as fh:
                fh.write("\n".join(keys) + "\n")
        return root

    @classmethod
    def append(cls, root, name, text) -> None:
        with open(os.path.join(root, cls.SPLIT, name), "a") as fh:
            fh.write(text)


@pytest.fixture(scope="session")
def veri776_release():
    return Veri776Release


@pytest.fixture(scope="session")
def vehicleid_release():
    return VehicleIdRelease


@pytest.fixture(scope="session")
def veriwild_release():
    return VeriWildRelease
