"""Dataset readers by name, and :func:`load_dataset`, the one place that turns the
``data`` section of a config into a :class:`ReidDataset`.

Every reader takes ``(root, attributes, *, check_images=True, strict=True)`` plus
its own options (VeRi-Wild ``test_size``, VehicleID ``test_list``) and returns the
same records, whatever the on-disk layout.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from anet_tf.config import Config
from anet_tf.config import ConfigError
from anet_tf.data.records import ReidDataset
from anet_tf.data.vehicleid import read_vehicleid
from anet_tf.data.veri776 import read_veri776
from anet_tf.data.veriwild import read_veriwild
from anet_tf.io import quote


def _read_folder(
    root: str, attributes: list[str], check_images: bool = True, strict: bool = True
) -> ReidDataset:
    """The project's own format (``anet_tf.data.generic``), also written by the
    synthetic generator; imported here, not at the top, to keep imports light."""
    from anet_tf.data.generic import read_folder

    return read_folder(root, attributes, check_images, strict=strict)


READERS: dict[str, Callable[..., ReidDataset]] = {
    "synthetic": _read_folder,
    "folder": _read_folder,
    "veri776": read_veri776,
    "veriwild": read_veriwild,
    "vehicleid": read_vehicleid,
}


def check_data_root(cfg: Config) -> str:
    """Return ``data.root`` if it is an existing folder, else a ConfigError naming
    where the value came from (``--set`` or the user's config file)."""
    root = cfg.data.root
    if not os.path.isdir(root):
        raise ConfigError(
            f"{cfg.origin('data.root')}: data.root: dataset folder {quote(root)} does "
            f"not exist (data.name={cfg.data.name!r}); set it with --set data.root=PATH"
        )
    return root


VARIANT_NAMES = {"anet": "ANet", "van": "VAN"}  # the variants with attribute branches


def attribute_labels_problem(cfg: Config, root: str) -> str | None:
    """Why a folder dataset cannot give ``cfg`` its attributes, in one line, when its
    manifest has no attribute column at all (crops without labels) although
    ``data.attributes`` asks for some; None otherwise (a manifest that cannot be
    read, or lacks only some attributes, is for the reader to name).

    ANet and VAN need attribute labels: the line gives the switch to the ReID
    baseline. The baseline asks for attributes only where the user listed them.
    """
    from anet_tf.data.generic import COLUMNS
    from anet_tf.data.generic import MANIFEST
    from anet_tf.data.generic import attribute_columns
    from anet_tf.data.generic import manifest_header
    from anet_tf.data.records import DataError

    d = cfg.data
    if d.name not in ("folder", "synthetic") or not d.attributes:
        return None
    try:
        header = manifest_header(root)
    except DataError:
        return None
    if not header or any(c not in header for c in COLUMNS) or attribute_columns(header):
        return None
    manifest = os.path.join(root, MANIFEST)
    asked = ", ".join(d.attributes)
    variant = cfg.model.variant
    if variant == "baseline":
        return (
            f"{manifest}:1: no attribute column (header {','.join(header)}), but "
            f"data.attributes asks for {asked} ({cfg.origin('data.attributes')}); the "
            f"baseline needs none: leave data.attributes unset"
        )
    return (
        f"{manifest}:1: no attribute column (header {','.join(header)}), but "
        f"{VARIANT_NAMES[variant]} (model.variant={variant}) needs attribute labels "
        f"({asked}); for crops without labels train the ReID baseline: --set "
        f"model.variant=baseline"
    )


def get_reader(name: str) -> Callable[..., ReidDataset]:
    """The reader of a dataset name; ``KeyError`` listing the valid names."""
    try:
        return READERS[name]
    except KeyError:
        raise KeyError(
            f"unknown dataset {name!r}; valid: {', '.join(READERS)}"
        ) from None


def load_dataset(
    cfg: Config, check_images: bool = True, strict: bool = True
) -> ReidDataset:
    """Read the dataset that ``cfg.data`` names.

    Args:
        cfg: the run's config; reads data.name, data.root, data.attributes,
            data.veriwild_test_size and data.vehicleid_test_list.
        check_images: check that every listed image file exists.
        strict: raise at the first problem (training, evaluation); False collects
            every problem into ``ReidDataset.problems`` (``data check``).

    Raises:
        ConfigError: data.root is not an existing folder (naming the ``--set`` or
            the file that set it).
        DataError: a problem in the dataset files, naming the file and line; a
            folder without attribute columns for ANet or VAN
            (:func:`attribute_labels_problem`).
    """
    d = cfg.data
    reader = get_reader(d.name)
    try:
        root = check_data_root(cfg)
    except ConfigError as exc:
        if d.name == "synthetic":
            raise ConfigError(f"{exc}, or generate it with `anet-tf synth`") from None
        raise
    options: dict[str, str] = {}
    if d.name == "veriwild":
        options["test_size"] = d.veriwild_test_size
    elif d.name == "vehicleid":
        options["test_list"] = str(d.vehicleid_test_list)
    attributes = list(d.attributes)
    unlabelled = attribute_labels_problem(cfg, root)
    if unlabelled and strict:
        from anet_tf.data.records import DataError

        raise DataError(unlabelled)
    dataset = reader(
        root,
        [] if unlabelled else attributes,  # the rest of the folder is still checked
        check_images=check_images,
        strict=strict,
        **options,
    )
    if unlabelled:
        dataset.problems.insert(0, unlabelled)
    dataset.name = d.name  # "synthetic" is read by the generic-format reader
    return dataset
