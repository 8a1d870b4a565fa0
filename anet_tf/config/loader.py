"""Loading: YAML files with ``_base_`` inheritance, ``--set`` overrides, and the
coercion of every value to the type its dataclass field declares.

``origins`` maps each dotted key to the file (or ``--set``) that gave it, so an
error names where a wrong value came from.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import types
import typing
from typing import Any
from typing import Literal

import yaml

from anet_tf.config.errors import ConfigError
from anet_tf.config.errors import origin_of
from anet_tf.config.schema import Config
from anet_tf.config.validate import validate
from anet_tf.io import load_yaml
from anet_tf.io import quote
from anet_tf.io import yaml_problem

# The shipped configs are package data, so a name works from any install.
CONFIG_DIR = os.path.join(os.path.dirname(os.path.dirname(__file__)), "configs")
DEFAULT_CONFIG = "synthetic.yaml"


def resolve_config_path(path: str | None) -> str:
    """Find a config file: an existing path, or the name of a shipped config.

    ``None`` gives the default (``synthetic``). Shipped configs live in
    ``anet_tf/configs/``; a name may be given with or without ``.yaml``, or as
    ``configs/NAME.yaml``.
    """
    if path is None:
        path = DEFAULT_CONFIG
    if os.path.exists(path):
        return path
    candidates = [os.path.join(CONFIG_DIR, path), os.path.join(CONFIG_DIR, path + ".yaml")]
    parts = os.path.normpath(path).split(os.sep)
    if len(parts) == 2 and parts[0] == "configs":
        # `configs/NAME.yaml`, the shipped configs' path relative to a clone's root
        candidates.append(os.path.join(CONFIG_DIR, parts[1]))
    for candidate in candidates:
        if os.path.exists(candidate):
            return candidate
    raise ConfigError(
        f"config file not found: {quote(path)} (looked in the working directory and in "
        f"{CONFIG_DIR})"
    )


def load_config(
    path: str | None = None, overrides: list[str] | None = None
) -> Config:
    """Load a YAML config (with ``_base_`` inheritance) and apply ``--set`` overrides.

    Args:
        path: YAML file, or a name of a shipped config; None = the default config.
        overrides: ``["train.stage1.epochs=3", ...]``; values are parsed as YAML.

    Raises:
        ConfigError: unknown key, wrong type or impossible value, naming key and file.
    """
    path = resolve_config_path(path)
    raw, origins = _load_yaml_tree(path, chain=())
    for item in overrides or []:
        key, value = _parse_override(item)
        _set_dotted(raw, key, value, origins, "--set")
    cfg = _build(Config, raw, "", origins, path)
    cfg.source = path
    validate(cfg, origins, path)
    return cfg


def config_from_dict(
    raw: dict[str, Any], source: str = "<dict>"
) -> Config:
    """Build and validate a :class:`Config` from a nested dict (e.g. a run's YAML)."""
    origins: dict[str, str] = {}
    _record_origins(raw, "", source, origins)
    cfg = _build(Config, copy.deepcopy(raw), "", origins, source)
    cfg.source = source
    validate(cfg, origins, source)
    return cfg


def apply_overrides(cfg: Config, overrides: list[str]) -> Config:
    """A new validated config: ``cfg`` with ``--set key=value`` overrides applied."""
    raw = cfg.to_dict()
    origins: dict[str, str] = dict(cfg.origins)  # where each key came from, if known
    if not origins:
        _record_origins(raw, "", cfg.source, origins)
    for item in overrides:
        key, value = _parse_override(item)
        _set_dotted(raw, key, value, origins, "--set")
    new = _build(Config, raw, "", origins, cfg.source)
    new.source = cfg.source
    new.followed = copy.deepcopy(cfg.followed)
    validate(new, origins, cfg.source)
    return new



def _load_yaml_tree(path: str, chain: tuple[str, ...]) -> tuple[dict, dict[str, str]]:
    apath = os.path.abspath(path)
    if apath in chain:
        raise ConfigError(
            f"{path}: _base_ cycle: {' -> '.join(chain + (apath,))}"
        )
    try:
        with open(path, encoding="utf-8") as fh:
            data = load_yaml(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except IsADirectoryError:
        raise ConfigError(f"{path} is a folder, not a config file") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text at byte {exc.start}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {yaml_problem(exc)}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"{path}: the top level must be a mapping of sections, got "
            f"{type(data).__name__}"
        )
    bases = data.pop("_base_", [])
    if isinstance(bases, str):
        bases = [bases]
    if not isinstance(bases, list) or not all(isinstance(b, str) for b in bases):
        raise ConfigError(f"{path}: _base_ must be a file name or a list of them")
    merged: dict = {}
    origins: dict[str, str] = {}
    for base in bases:
        base_path = _base_path(path, base)
        base_raw, base_origins = _load_yaml_tree(base_path, chain + (apath,))
        _deep_merge(merged, base_raw)
        origins.update(base_origins)
    _record_origins(data, "", path, origins)
    _deep_merge(merged, data)
    return merged, origins


def _base_path(path: str, base: str) -> str:
    """The file a ``_base_`` entry of ``path`` names: a file beside ``path``, else
    a shipped config by name (``_base_: veri776``, from a clone or a wheel).

    Raises:
        ConfigError: neither, listing the shipped names.
    """
    beside = os.path.join(os.path.dirname(path), base)
    if os.path.isfile(beside):
        return beside
    for name in (base, base + ".yaml"):
        shipped = os.path.join(CONFIG_DIR, os.path.basename(name))
        if os.path.basename(name) == name and os.path.isfile(shipped):
            return shipped
    names = sorted(
        n[: -len(".yaml")] for n in os.listdir(CONFIG_DIR) if n.endswith(".yaml")
    )
    raise ConfigError(
        f"{path}: _base_: {quote(base)} is neither a file beside it nor a shipped "
        f"config ({', '.join(names)})"
    )


def _record_origins(node: Any, prefix: str, source: str, origins: dict) -> None:
    if isinstance(node, dict):
        for key, value in node.items():
            dotted = f"{prefix}{key}"
            origins[dotted] = source
            _record_origins(value, dotted + ".", source, origins)


def _deep_merge(dst: dict, src: dict) -> None:
    for key, value in src.items():
        if isinstance(value, dict) and isinstance(dst.get(key), dict):
            _deep_merge(dst[key], value)
        else:
            dst[key] = copy.deepcopy(value)


def _parse_override(item: str) -> tuple[str, Any]:
    if "=" not in item:
        raise ConfigError(f"--set {quote(item)}: expected key=value, e.g. train.lr=0.001")
    key, text = item.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"--set {quote(item)}: empty key")
    try:
        value = load_yaml(text) if text.strip() else None
    except yaml.YAMLError as exc:
        raise ConfigError(
            f"--set {quote(item)}: value is not valid YAML: {yaml_problem(exc)}"
        ) from None
    return key, value


def _set_dotted(raw: dict, key: str, value: Any, origins: dict, source: str) -> None:
    parts = key.split(".")
    node = raw
    for i, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:  # a section the override creates (or a typo) is its own
            child = node[part] = {}
            origins.setdefault(".".join(parts[: i + 1]), source)
        if not isinstance(child, dict):
            raise ConfigError(
                f"{source}: {'.'.join(parts[: i + 1])} is not a section, cannot set "
                f"{key}"
            )
        node = child
    node[parts[-1]] = value
    origins[key] = source
    _record_origins(value, key + ".", source, origins)



def _build(cls: type, raw: Any, prefix: str, origins: dict, path: str) -> Any:
    where = origin_of(prefix.rstrip("."), origins, path)
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(
            f"{where}: {prefix.rstrip('.') or 'config'} must be a mapping, got "
            f"{quote(raw)}"
        )
    hints = typing.get_type_hints(cls)
    fields = {
        f.name: f
        for f in dataclasses.fields(cls)
        if not f.metadata.get("internal")
    }
    kwargs = {}
    for key, value in raw.items():
        dotted = f"{prefix}{key}"
        if key not in fields:
            raise ConfigError(
                f"{origin_of(dotted, origins, path)}: unknown key '{dotted}'; valid keys "
                f"in '{prefix.rstrip('.') or 'top level'}': {', '.join(sorted(fields))}"
            )
        kwargs[key] = _coerce(hints[key], value, dotted, origins, path)
    return cls(**kwargs)


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin in (list, tuple):
        return f"{origin.__name__} of {_type_name(typing.get_args(tp)[0])}"
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))


def _coerce(tp: Any, value: Any, key: str, origins: dict, path: str) -> Any:
    where = origin_of(key, origins, path)

    def fail() -> ConfigError:
        return ConfigError(
            f"{where}: {key} must be {_type_name(tp)}, got {quote(value)} "
            f"({type(value).__name__})"
        )

    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, key + ".", origins, path)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(arg, value, key, origins, path)
            except ConfigError:
                continue
        raise fail()
    if origin is Literal:
        if value in typing.get_args(tp) and not isinstance(value, bool):
            return value
        raise ConfigError(
            f"{where}: {key} must be one of {', '.join(map(repr, typing.get_args(tp)))}"
            f", got {quote(value)}"
        )
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise fail()
        args = typing.get_args(tp)
        if origin is tuple and len(args) >= 1 and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise ConfigError(
                    f"{where}: {key} must have {len(args)} items, got {quote(value)}"
                )
            return tuple(
                _coerce(a, v, f"{key}[{i}]", origins, path)
                for i, (a, v) in enumerate(zip(args, value))
            )
        item = args[0]
        return origin(
            _coerce(item, v, f"{key}[{i}]", origins, path) for i, v in enumerate(value)
        )
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise fail()
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise fail()
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:  # YAML 1.1 reads 6e-4 (no dot) as a string
                return float(value)
            except ValueError:
                pass
        raise fail()
    if tp is str:
        if isinstance(value, str):
            return value
        raise fail()
    raise ConfigError(f"{where}: {key}: unsupported config type {tp!r}")

