"""The README's marked blocks, as the tests that run them read them, and the ``generate`` command they call."""

from __future__ import annotations

import re
from pathlib import Path

from diffusiongs.cli.main import entrypoint

ROOT = Path(__file__).resolve().parents[1]


def readme_block(marker: str) -> str:
    """The code between ``<!-- marker -->`` and ``<!-- /marker -->`` in README.md, without its fence."""
    readme = (ROOT / "README.md").read_text()
    found = re.search(f"<!-- {marker} -->\n```(?:python|bash)\n(.*?)```\n<!-- /{marker} -->", readme, re.S)
    assert found, f"README.md has no {marker} block"
    return found.group(1)


def readme_generate_args(marker: str) -> list[str]:
    """The arguments of the ``diffusiongs generate ... --out DIR`` command in a README block, without ``--out``;
    paths into examples/ made absolute."""
    found = re.search(r"diffusiongs generate (.*?) --out \S+", readme_block(marker))
    assert found, f"README.md's {marker} block has no `diffusiongs generate ... --out DIR`"
    return [str(ROOT / a) if a.startswith("examples/") else a for a in found.group(1).split()]


def generate(*args: object) -> int:
    """``diffusiongs generate ARGS`` in this process; its exit code."""
    return entrypoint(["generate", *map(str, args)])
