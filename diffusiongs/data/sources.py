"""Naming a dataset in a config: which reader, on which path (used by ``data convert`` and by training configs)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from diffusiongs.data.reader import MultiViewReader
from diffusiongs.data.types import Domain
from diffusiongs.errors import InputError

SourceKind = Literal["native", "gobjaverse", "re10k-chunks", "re10k-json", "mvimgnet", "colmap-scenes"]


@dataclass(frozen=True)
class SourceConfig:
    """A dataset on disk and the reader for its layout (docs/data.md)."""

    kind: SourceKind = "native"
    """Layout: this project's format, G-Objaverse, RealEstate10K chunks or processed json, MVImgNet, COLMAP scenes
    (DL3DV)."""
    path: Path = Path("data")
    """native: dataset folder; gobjaverse: the image folder; re10k-chunks: a split folder of .torch files;
    re10k-json: full_list.txt; mvimgnet / colmap-scenes: the folder of object / scene folders."""
    split: str = "train"
    """native: the manifest split."""
    domain: Domain = "object"
    """native: objects or scenes."""
    groups: tuple[str, ...] = ("train",)
    """native: view groups to read (``train`` views, ``eval`` orbits)."""
    uids: Path | None = None
    """gobjaverse: json list of uids (the official ``{split}.json``); required."""
    image_size: int = 512
    """mvimgnet: side of the object crops."""


def open_source(config: SourceConfig) -> MultiViewReader:
    """The reader for ``config``."""
    from diffusiongs.data import dl3dv, gobjaverse, mvimgnet, re10k, store

    if config.kind == "native":
        return store.NativeReader(config.path, config.split, config.domain, config.groups)
    if config.kind == "gobjaverse":
        if config.uids is None:
            raise InputError("gobjaverse: give --uids (a json list of uids)")
        return gobjaverse.GObjaverseReader(config.path, config.uids)
    if config.kind == "re10k-chunks":
        return re10k.Re10kChunkReader(config.path)
    if config.kind == "re10k-json":
        return re10k.Re10kJsonReader(config.path)
    if config.kind == "mvimgnet":
        return mvimgnet.MVImgNetReader(config.path, image_size=config.image_size)
    return dl3dv.ColmapSceneReader(config.path)
