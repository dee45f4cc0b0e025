"""Training-side datasets: view selection and resizing on top of any reader, and object/scene mixing.

Every sample is a :class:`MultiViewExample` whose views are ordered [condition | N noisy | M novel], at the
training resolution, with objects composited on white. Batches come from :func:`collate_examples` (use
``MultiViewDataset.collate`` as the DataLoader's ``collate_fn``).

Randomness is a function of (seed, epoch, index), so samples do not depend on the number of DataLoader workers;
call ``set_epoch`` each epoch (as with DistributedSampler) for fresh view choices.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import torch
from torch.utils.data import Dataset

from diffusiongs.data.images import center_crop_square, resize_example
from diffusiongs.data.normalize import condition_azimuth_frame, normalize_scene_cameras
from diffusiongs.data.reader import MultiViewReader
from diffusiongs.data.types import Domain, MultiViewExample, TrainingBatch, collate_examples
from diffusiongs.data.view_selection import holds_orbit_rig, select_views
from diffusiongs.errors import InputError
from diffusiongs.geometry.camera import Cameras
from diffusiongs.geometry.layout import ViewLayout

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SampleConfig:
    """What one training sample holds."""

    resolution: int = 256
    """Training image size (square): views are centre-cropped to squares and resampled."""
    num_noisy: int = 3
    """N, the views that receive noise (the official code uses 3)."""
    num_novel: int = 6
    """M, the novel views used only for supervision (official: 6 for objects, 3 for scenes)."""
    layout: ViewLayout = field(default_factory=ViewLayout)
    """Where the N noisy views sit relative to the condition view (the model's ``view_layout``)."""
    renormalize_scenes: bool = True
    """Scenes: re-centre and rescale the cameras of the chosen views (the official loader normalises the sampled
    frames, not the whole clip)."""
    relative_azimuth: bool = True
    """Objects: rotate the world about z so the condition camera sits at azimuth 0 (the official loader's relative
    azimuths), which is where inference puts the input view."""
    seed: int = 0
    """Seed of the view choices."""
    max_retries: int = 8
    """Broken items are logged and replaced by the next item, at most this many times in a row."""


class MultiViewDataset(Dataset):
    """A reader's items as training samples (see the module docstring)."""

    def __init__(self, reader: MultiViewReader, config: SampleConfig = SampleConfig()) -> None:
        if len(reader) == 0:
            raise InputError(f"{type(reader).__name__}: no items")
        self.reader = reader
        self.config = config
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.reader)

    @property
    def domain(self) -> Domain:
        return self.reader.domain

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __getitem__(self, index: int) -> MultiViewExample:
        return self.draw(index, key=index)

    def draw(self, index: int, key: int) -> MultiViewExample:
        """Item ``index`` with views drawn from (seed, epoch, ``key``): a caller drawing one item several times per
        epoch (MixedDataset) passes different keys to get different views."""
        for attempt in range(self.config.max_retries + 1):
            item = (index + attempt) % len(self)
            try:
                return self.sample(item, np.random.default_rng([self.config.seed, self.epoch, key, attempt]))
            except InputError as err:
                log.warning("skipping %s: %s", self.reader.item_id(item), err)
        raise InputError(f"{type(self.reader).__name__}: {self.config.max_retries + 1} broken items in a row "
                         f"from index {index}")

    def sample(self, index: int, rng: np.random.Generator) -> MultiViewExample:
        """Item ``index`` with views chosen by ``rng``, cropped, resized and (scenes) renormalised."""
        cfg = self.config
        selection = select_views(self.reader.cameras(index), cfg.num_noisy, cfg.num_novel, cfg.layout, rng)
        if not selection.satisfied:
            log.debug("%s: no view set meets the %s layout; using the fallback", self.reader.item_id(index),
                      cfg.layout.mode)
        example = self.reader.load(index, selection.indices)
        if example.domain == "scene" and cfg.renormalize_scenes:
            example = _renormalized(example)
        if example.domain == "object" and cfg.relative_azimuth:
            cameras = example.cameras
            example = replace(example, cameras=Cameras(condition_azimuth_frame(cameras.c2w), cameras.K,
                                                       cameras.width, cameras.height))
        return resize_example(center_crop_square(example), cfg.resolution)

    def collate(self, examples: list[MultiViewExample]) -> TrainingBatch:
        return collate_examples(examples, self.config.num_noisy)


CHECKED_ITEMS = 64
"""Items whose cameras :func:`check_view_counts` reads, spread evenly over the dataset: reading every item's
cameras.json would take minutes for a large dataset, and items made by one job share their view count."""


def _warn_without_orbit_rigs(cameras: list[Cameras], cfg: SampleConfig, name: str) -> None:
    """The orbit layout trains on exact rigs only where an item's views hold them (e.g. rings of evenly spaced
    azimuths); elsewhere a sample falls back to the nearest views, so say when most items are like that."""
    if cfg.layout.mode != "orbit" or not cameras:
        return
    exact = sum(holds_orbit_rig(c, cfg.num_noisy, cfg.layout) for c in cameras)
    if exact * 2 <= len(cameras):
        log.warning("%s: only %d of %d checked items hold an exact orbit rig (N = %d views at 360k/(N+1) degrees of "
                    "azimuth, same distance); their samples use the nearest views instead. Render them with "
                    "`--view-sampling rings` and --ring-views a multiple of N + 1 for exact rigs",
                    name, exact, len(cameras), cfg.num_noisy)


def check_view_counts(dataset: MultiViewDataset, name: str, max_items: int = CHECKED_ITEMS) -> None:
    """Refuse, before training starts, a dataset whose items cannot give a sample's 1 + N + M views.

    Reads the cameras of up to ``max_items`` items spread evenly over the dataset. A few short or unreadable items
    among usable ones are only logged (training skips them); when at most half of the checked items are usable, a
    run would soon meet :attr:`SampleConfig.max_retries` + 1 of them in a row and stop, so it is refused here.

    Raises:
        InputError: naming ``name`` and the numbers, e.g. ``data/objects: items have 8 training views, a sample
            needs 1 + 3 noisy + 6 novel = 10; ...``.
    """
    cfg = dataset.config
    needed = 1 + cfg.num_noisy + cfg.num_novel
    need_text = f"a sample needs 1 + {cfg.num_noisy} noisy + {cfg.num_novel} novel = {needed}"
    remedy = "lower --num-novel (or --num-noisy) or re-render the items with more --views"
    count = min(max_items, len(dataset))
    indices = sorted({round(k * (len(dataset) - 1) / max(count - 1, 1)) for k in range(count)})
    cameras: list[Cameras] = []
    errors: list[str] = []
    for index in indices:
        try:
            cameras.append(dataset.reader.cameras(index))
        except InputError as err:
            errors.append(str(err))
    views = [c.batch_shape[0] for c in cameras]
    usable = sum(v >= needed for v in views)
    if usable * 2 > len(indices):
        if usable < len(indices):
            log.warning("%s: %d of %d checked items are unreadable or have fewer than %d training views; training "
                        "skips them", name, len(indices) - usable, len(indices), needed)
        _warn_without_orbit_rigs([c for c in cameras if c.batch_shape[0] >= needed], cfg, name)
        return
    if views and max(views) < needed:
        most = f"{views[0]}" if min(views) == max(views) else f"at most {max(views)}"
        raise InputError(f"{name}: items have {most} training views, {need_text}; {remedy}")
    if not views:
        raise InputError(f"{name}: none of the {len(indices)} checked items can be read (first: {errors[0]})")
    raise InputError(f"{name}: only {usable} of {len(indices)} checked items are usable ({len(errors)} unreadable, "
                     f"{len(views) - usable} with fewer than {needed} training views; {need_text}); {remedy}")


def _renormalized(example: MultiViewExample) -> MultiViewExample:
    c2w, scale = normalize_scene_cameras(example.cameras.c2w)
    cameras = Cameras(c2w, example.cameras.K, example.cameras.width, example.cameras.height)
    depths = None if example.depths is None else example.depths * scale
    return replace(example, cameras=cameras, depths=depths)


class MixedDataset(Dataset):
    """Samples drawn from several datasets at fixed rates (the paper's mixed object + scene training).

    Each dataset keeps its own camera normalisation. Sample ``index`` picks dataset ``d`` with probability
    ``weights[d] / sum(weights)`` and then a uniformly random item of it, from (seed, epoch, index).
    All datasets must produce the same number of views and resolution, so that any mix collates into one batch.
    """

    def __init__(self, datasets: Sequence[MultiViewDataset], weights: Sequence[float], length: int | None = None,
                 seed: int = 0) -> None:
        if len(datasets) != len(weights) or not datasets or min(weights) < 0 or sum(weights) <= 0:
            raise ValueError("MixedDataset: one non-negative weight per dataset, not all zero")
        shapes = {(d.config.resolution, d.config.num_noisy, d.config.num_novel) for d in datasets}
        if len(shapes) != 1:
            raise ValueError(f"MixedDataset: datasets disagree on (resolution, N, M): {sorted(shapes)}")
        self.datasets = list(datasets)
        self.probabilities = np.asarray(weights, dtype=np.float64) / sum(weights)
        self.length = sum(len(d) for d in datasets) if length is None else length
        self.seed = seed
        self.epoch = 0

    def __len__(self) -> int:
        return self.length

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        for dataset in self.datasets:
            dataset.set_epoch(epoch)

    def __getitem__(self, index: int) -> MultiViewExample:
        rng = np.random.default_rng([self.seed, self.epoch, index])
        dataset = self.datasets[int(rng.choice(len(self.datasets), p=self.probabilities))]
        return dataset.draw(int(rng.integers(len(dataset))), key=index)

    def collate(self, examples: list[MultiViewExample]) -> TrainingBatch:
        return self.datasets[0].collate(examples)


def dataloader(dataset: MultiViewDataset | MixedDataset, batch_size: int, workers: int, shuffle: bool = True,
               **kwargs) -> torch.utils.data.DataLoader:
    """A DataLoader with the dataset's collate function.

    Workers are not persistent: each epoch's workers get a fresh copy of the dataset, so ``set_epoch`` reaches
    them (a persistent worker would keep the epoch it started with).
    """
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, num_workers=workers,
                                       collate_fn=dataset.collate, pin_memory=torch.cuda.is_available(), **kwargs)

