"""A tiny in-memory multi-view dataset for training tests: random Gaussian blobs rendered by our renderer.

Each item is a fixed random blob object (or a blob "scene" spread wider); its views are drawn at random from the
global torch RNG, so the trainer's per-sample seeding decides them.
"""

import torch
from torch.utils.data import Dataset

from diffusiongs.data.types import MultiViewExample
from diffusiongs.gaussians import Gaussians
from diffusiongs.geometry import random_sphere_cameras
from diffusiongs.render import RenderConfig, render


class BlobDataset(Dataset):
    def __init__(self, num_items: int = 4, num_views: int = 6, resolution: int = 16, blobs: int = 24,
                 scene_every: int = 0):
        self.num_items, self.num_views, self.resolution, self.blobs = num_items, num_views, resolution, blobs
        self.scene_every = scene_every

    def __len__(self) -> int:
        return self.num_items

    def _object(self, index: int) -> Gaussians:
        g = torch.Generator().manual_seed(1000 + index)
        n = self.blobs
        return Gaussians(means=(torch.rand(n, 3, generator=g) * 1.4 - 0.7),
                         quats=torch.nn.functional.normalize(torch.randn(n, 4, generator=g), dim=-1),
                         scales=torch.rand(n, 3, generator=g) * 0.2 + 0.1,
                         opacities=torch.rand(n, generator=g) * 0.5 + 0.5, colors=torch.rand(n, 3, generator=g))

    def __getitem__(self, index: int) -> MultiViewExample:
        cams = random_sphere_cameras(self.num_views, 3.0, 50.0, self.resolution, elevation_range_deg=(-20, 60))
        out = render(self._object(index)[None], cams.reshape(1, -1), torch.ones(3), RenderConfig(backend="torch"))
        is_scene = self.scene_every and index % self.scene_every == self.scene_every - 1
        return MultiViewExample(item_id=f"blob{index}", domain="scene" if is_scene else "object",
                                images=out.rgb[0], cameras=cams, masks=out.alpha[0])
