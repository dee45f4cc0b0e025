"""Reading ``torch.save`` files (official checkpoints, camera templates) without running code from them.

Files are read with ``torch.load(weights_only=True)``: torch's restricted unpickler builds tensors and plain
containers and calls nothing outside its allow-list. Real Lightning checkpoints also pickle metadata next to the
weights (OmegaConf configs in ``hyper_parameters``, Lightning attribute dicts, numpy scalars and paths in callback
states). The globals named by :func:`stand_in_for` are mapped onto inert stand-ins that keep what was pickled and run
nothing of their own, so such files still load; the real classes and functions are never imported or called. Any
other global (``builtins.exec``, ``os.system``, an unknown class) makes the file refused before anything is
unpickled.
"""

from __future__ import annotations

import pickle
import re
import zipfile
from pathlib import Path
from typing import Any

import torch

from diffusiongs.errors import InputError

INERT_MODULE_PREFIXES = (
    "omegaconf.", "pytorch_lightning.", "lightning.", "lightning_fabric.", "diffusionGS.", "numpy.", "typing.",
)
"""Modules whose pickled classes are checkpoint metadata (configs, trainer state, numpy values of callback states)
and whose functions are only ever rebuild helpers: all become :class:`InertObject`."""

INERT_NAMES = frozenset({
    "argparse.Namespace", "pathlib.Path", "pathlib.PosixPath", "pathlib.WindowsPath", "pathlib.PurePosixPath",
    "pathlib.PureWindowsPath", "torch.torch_version.TorchVersion",
    # Builtin types appear as values inside OmegaConf metadata (e.g. ``object_type=dict``).
    "builtins.dict", "builtins.list", "builtins.tuple", "builtins.int", "builtins.float", "builtins.str",
    "builtins.bool", "builtins.bytes", "builtins.object", "builtins.type", "builtins.frozenset",
})
"""Single metadata globals outside those modules that become :class:`InertObject`."""

MAPPING_NAMES = frozenset({
    "collections.defaultdict",
    "lightning_fabric.utilities.data.AttributeDict", "lightning.fabric.utilities.data.AttributeDict",
    "pytorch_lightning.utilities.parsing.AttributeDict", "lightning.pytorch.utilities.parsing.AttributeDict",
})
"""dict subclasses: their items are pickled as dict items, which torch's unpickler only sets on plain dicts, so they
load as plain dicts (:class:`InertMapping`)."""


class InertObject:
    """Stand-in for an allow-listed metadata class or function: stores its arguments and state, runs nothing."""

    def __new__(cls, *args: Any, **kwargs: Any) -> InertObject:
        obj = super().__new__(cls)
        obj.args = args
        obj.state = None
        return obj

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        """Calling the stand-in (a pickled REDUCE) only records the arguments, in ``__new__``."""

    def __setstate__(self, state: Any) -> None:
        self.state = state


class InertMapping:
    """Stand-in for a dict subclass: creating or calling it gives an empty plain dict for the pickled items."""

    def __new__(cls, *args: Any, **kwargs: Any) -> dict:
        return {}


def stand_in_for(name: str) -> type | None:
    """The stand-in that replaces global ``name`` ("module.qualname"), or None if the name is not allowed."""
    if name in MAPPING_NAMES:
        return InertMapping
    if name in INERT_NAMES or name.startswith(INERT_MODULE_PREFIXES):
        return InertObject
    return None


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _stand_ins(path: Path) -> list[tuple[type, str]]:
    """Stand-ins for every global of a zip checkpoint that torch does not allow by default; refuses the file if one
    of them is not on the allow-list (read statically from the pickle, nothing is executed)."""
    try:
        names = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
    except Exception as err:  # corrupt archives and unsupported pickle opcodes raise several exception types
        raise InputError(f"{path}: not a readable torch checkpoint ({_first_line(err)})") from None
    refused = sorted(name for name in names if stand_in_for(name) is None)
    if refused:
        shown = ", ".join(refused[:3]) + (f" and {len(refused) - 3} more" if len(refused) > 3 else "")
        raise InputError(f"{path}: refused to load: it references {shown}, which is neither a tensor nor known "
                         "checkpoint metadata (unpickling it could run code)")
    return [(stand_in_for(name), name) for name in names]


def read_torch_file(path: str | Path) -> Any:
    """Load a ``torch.save`` file with tensors on the CPU; it never runs code from the file.

    Zip archives (``torch.save``'s format since 1.6, Lightning checkpoints) are memory-mapped, so optimizer states
    and other unused tensors are not read from disk.

    Raises:
        InputError: the file is missing, unreadable, or references a global outside the allow-list.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    is_zip = zipfile.is_zipfile(path)
    stand_ins = _stand_ins(path) if is_zip else []
    try:
        with torch.serialization.safe_globals(stand_ins):
            return torch.load(path, map_location="cpu", weights_only=True, mmap=is_zip)
    except pickle.UnpicklingError as err:
        found = re.search(r"GLOBAL (\S+)", str(err))
        if found:  # only reached for legacy (non-zip) files: zip archives were screened above
            raise InputError(f"{path}: refused to load: it references {found.group(1)}, which is neither a tensor "
                             "nor known checkpoint metadata (unpickling it could run code)") from None
        raise InputError(f"{path}: not a readable torch checkpoint (its pickle holds more than tensors, plain "
                         "containers and known metadata)") from None
    except Exception as err:  # torch raises RuntimeError/EOFError/ValueError/... for truncated or foreign files
        raise InputError(f"{path}: not a readable torch checkpoint ({_first_line(err)})") from None
