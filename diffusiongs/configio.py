"""Frozen config dataclasses <-> plain JSON-able dicts (stored in checkpoints and run folders).

Loading is strict: an unknown key or a value of the wrong kind is an ``InputError`` that names the key, so a
config written by another version fails loudly instead of being half-applied.
"""

from __future__ import annotations

import dataclasses
import json
import os
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

from diffusiongs.errors import InputError

T = TypeVar("T")


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """A nested dict of plain values (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(cfg), default=_plain))


def _plain(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot store {type(value).__name__} in a config")


def _convert(tp: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise InputError(f"{where}: expected a mapping for {tp.__name__}, got {type(value).__name__}")
        return config_from_dict(tp, value, where)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in typing.get_args(tp):
            return None
        for option in typing.get_args(tp):
            if option is type(None):
                continue
            try:
                return _convert(option, value, where)
            except InputError:
                continue
        raise InputError(f"{where}: {value!r} fits none of {tp}")
    if origin is typing.Literal:
        if value not in typing.get_args(tp):
            raise InputError(f"{where}: {value!r} is not one of {typing.get_args(tp)}")
        return value
    if origin is tuple:
        args = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise InputError(f"{where}: expected a list, got {type(value).__name__}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(args[0], v, f"{where}[{i}]") for i, v in enumerate(value))
        if len(args) != len(value):
            raise InputError(f"{where}: expected {len(args)} values, got {len(value)}")
        return tuple(_convert(a, v, f"{where}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp in (int, float, str, bool):
        if not isinstance(value, tp) or (tp is int and isinstance(value, bool)):
            raise InputError(f"{where}: expected {tp.__name__}, got {value!r}")
        return value
    if tp is Path:
        return Path(value)
    return value


def config_from_dict(cls: type[T], data: dict[str, Any], where: str = "config") -> T:
    """Rebuild ``cls`` from :func:`config_to_dict`'s output; missing keys take the dataclass defaults."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - names)
    if unknown:
        raise InputError(f"{where}: unknown keys {unknown} for {cls.__name__}")
    return cls(**{k: _convert(hints[k], v, f"{where}.{k}") for k, v in data.items()})


def write_json_atomic(path: str | Path, payload: Any) -> Path:
    """Write ``payload`` as indented JSON through a temporary file and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)
    return path


def read_json(path: str | Path) -> Any:
    """Read a JSON file; a missing or malformed file is an ``InputError`` naming it."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(f"{path}: file not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise InputError(f"{path}: not valid JSON ({err})") from None
