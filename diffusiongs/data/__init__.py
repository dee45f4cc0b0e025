"""Datasets: this project's format, readers for public layouts, view selection, training datasets, and the
dataset makers (``diffusiongs data synth|render``). The format and layouts are described in docs/data.md.

Modules:
    types            MultiViewExample / TrainingBatch / collate_examples: the contract with the trainer
    reader           the MultiViewReader protocol every reader implements; sources: naming one in a config
    store            this project's format: writing items, the manifest, NativeReader
    gobjaverse, re10k, mvimgnet, dl3dv (+ colmap, scenes)   readers for public layouts
    images, normalize   decoding, compositing, crops and resizes; object and scene camera normalisation
    view_selection   condition / noisy / novel view choice (paper constraints, official orbit, random)
    dataset          MultiViewDataset (any reader -> training samples), MixedDataset (objects + scenes)
    gl, meshes, procedural, capture, jobs, synth, render_meshes, objaverse, convert, preview   dataset makers
    surface          ground-truth surface samples of objects (geometry metrics)
"""

from diffusiongs.data.dataset import MixedDataset, MultiViewDataset, SampleConfig, dataloader
from diffusiongs.data.dl3dv import ColmapSceneReader
from diffusiongs.data.gobjaverse import GObjaverseReader
from diffusiongs.data.mvimgnet import MVImgNetReader
from diffusiongs.data.re10k import Re10kChunkReader, Re10kJsonReader
from diffusiongs.data.reader import MultiViewReader
from diffusiongs.data.sources import SourceConfig, open_source
from diffusiongs.data.store import NativeReader, build_manifest
from diffusiongs.data.types import MultiViewExample, TrainingBatch, collate_examples
from diffusiongs.data.view_selection import ViewSelection, select_views

__all__ = [
    "ColmapSceneReader", "GObjaverseReader", "MVImgNetReader", "MixedDataset", "MultiViewDataset", "MultiViewExample",
    "MultiViewReader", "NativeReader", "Re10kChunkReader", "Re10kJsonReader", "SampleConfig", "SourceConfig",
    "TrainingBatch", "ViewSelection", "build_manifest", "collate_examples", "dataloader",
    "open_source", "select_views",
]
