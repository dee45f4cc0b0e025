"""``diffusiongs data``: make and inspect datasets (docs/data.md).

    diffusiongs data synth --out DIR --objects N [--scenes M] --views 32 --res R [--seed S] [--workers W]
    diffusiongs data bundle SOURCES... --out BUNDLE [--max-faces 6000] [--max-texture-size 128]
    diffusiongs data render MESHES... --out DIR [--bundle BUNDLE] [--shard i/n] [--objaverse UIDS...]
    diffusiongs data convert --kind mvimgnet --path SRC --out DIR [--res 256] [--workers W] [--shard i/n]
    diffusiongs data manifest DIR
    diffusiongs data preview DIR --out sheet.png
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import tyro
from PIL import Image

from diffusiongs.data.bundle import BundleConfig, run_bundle
from diffusiongs.data.convert import ConvertConfig, run_convert
from diffusiongs.data.preview import contact_sheet
from diffusiongs.data.render_meshes import MeshRenderConfig, run_render
from diffusiongs.data.store import NativeReader, build_manifest
from diffusiongs.data.synth import SynthConfig, run_synth
from diffusiongs.data.types import Domain


@dataclass(frozen=True)
class ManifestCommand:
    """Re-index a dataset folder: list every finished item in manifest.json with its split (run it after all
    shards of ``data render`` have finished)."""

    root: tyro.conf.Positional[Path]
    """The dataset folder."""
    val_fraction: float = 0.02
    """Share of items in the val split (by a hash of the item id)."""
    test_fraction: float = 0.02
    """Share of items in the test split."""


@dataclass(frozen=True)
class PreviewCommand:
    """Save a contact sheet of a dataset (rows = items, columns = views)."""

    root: tyro.conf.Positional[Path]
    """The dataset folder."""
    out: Path
    """Image file to write (.png or .jpg)."""
    split: str = "train"
    """Split to show."""
    domain: Domain = "object"
    """Objects or scenes."""
    items: int = 6
    """Rows."""
    views: int = 8
    """Columns (evenly spaced over the item's views)."""
    tile: int = 96
    """Tile size in pixels."""


Command = (Annotated[SynthConfig, tyro.conf.subcommand("synth")]
           | Annotated[BundleConfig, tyro.conf.subcommand("bundle")]
           | Annotated[MeshRenderConfig, tyro.conf.subcommand("render")]
           | Annotated[ConvertConfig, tyro.conf.subcommand("convert")]
           | Annotated[ManifestCommand, tyro.conf.subcommand("manifest")]
           | Annotated[PreviewCommand, tyro.conf.subcommand("preview")])


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    command = tyro.cli(Command, args=argv, prog="diffusiongs data")
    jobs = {SynthConfig: run_synth, MeshRenderConfig: run_render, ConvertConfig: run_convert}
    if type(command) in jobs:
        report = jobs[type(command)](command)
        print(f"{report.done} made, {report.skipped} already done, {report.failed} failed; "
              f"{report.views} views in {report.seconds:.1f} s ({report.views_per_second:.1f} views/s)")
        return 1 if report.failed and not report.done else 0
    if isinstance(command, BundleConfig):
        index = run_bundle(command)
        meshes = index["meshes"]
        held_out = sum(m["split"] == "test" for m in meshes)
        size = sum(m["bytes"] for m in meshes) / 2**20
        print(f"{len(meshes)} meshes ({held_out} held out) from {len(index['sources'])} sources in "
              f"{command.out}: {size:.1f} MiB")
        return 0 if meshes else 1
    if isinstance(command, ManifestCommand):
        manifest = build_manifest(command.root, command.val_fraction, command.test_fraction)
        print(", ".join(f"{name}: {len(ids)}" for name, ids in manifest.splits.items()))
        return 0
    reader = NativeReader(command.root, command.split, command.domain)
    Image.fromarray(contact_sheet(reader, command.items, command.views, command.tile)).save(command.out)
    print(f"wrote {command.out}")
    return 0
