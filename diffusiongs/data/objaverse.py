"""Fetching Objaverse meshes through the ``objaverse`` package (needs network access and ``diffusiongs[objaverse]``)."""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from pathlib import Path

from diffusiongs.errors import InputError

log = logging.getLogger(__name__)

_UID = re.compile(r"^[0-9a-f]{32}$")
"""Objaverse 1.0 uids are 32 lowercase hex digits."""


def parse_uids(entries: Sequence[str]) -> list[str]:
    """Uids given directly or as text files of one uid per line (blank lines and ``#`` comments ignored)."""
    uids: list[str] = []
    for entry in entries:
        path = Path(entry)
        if path.is_file():
            lines = [line.split("#")[0].strip() for line in path.read_text().splitlines()]
            found = [(line, f"{path}") for line in lines if line]
        else:
            found = [(u.strip(), "--objaverse") for u in entry.split(",") if u.strip()]
        for uid, source in found:
            if not _UID.match(uid):
                raise InputError(f"{source}: {uid!r} is not an Objaverse uid (32 hex digits)")
            uids.append(uid)
    return list(dict.fromkeys(uids))


def fetch_objaverse(uids: Sequence[str], processes: int = 1) -> dict[str, Path]:
    """Download (or find in the package's cache) the meshes of ``uids``; uid -> local .glb path.

    Raises:
        InputError: the package is not installed, or the download failed (e.g. no network).
    """
    try:
        import objaverse
    except ImportError as err:
        raise InputError("--objaverse: the 'objaverse' package is not installed "
                         "(pip install 'diffusiongs[objaverse]'; downloading also needs network access)") from err
    try:
        paths = objaverse.load_objects(uids=list(uids), download_processes=max(1, processes))
    except Exception as err:  # network stacks raise many types; all mean "could not download"
        raise InputError(f"--objaverse: downloading {len(uids)} objects failed ({type(err).__name__}: {err}); "
                         "is there network access to huggingface.co?") from err
    missing = [u for u in uids if u not in paths]
    if missing:
        log.warning("objaverse: %d of %d uids were not found, e.g. %s", len(missing), len(uids), missing[0])
    return {uid: Path(path) for uid, path in paths.items()}
