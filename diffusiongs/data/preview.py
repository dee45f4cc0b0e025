"""Contact sheets: a grid of views (rows = items, columns = views) to eyeball a dataset."""

from __future__ import annotations

import numpy as np
import torch
from jaxtyping import UInt8

from diffusiongs.data.images import resample_square
from diffusiongs.data.reader import MultiViewReader


def contact_sheet(reader: MultiViewReader, items: int, views: int, tile: int, gap: int = 2
                  ) -> UInt8[np.ndarray, "h w 3"]:
    """The first ``items`` items of ``reader``, ``views`` evenly spaced views each, as ``tile``-pixel squares on a
    light grey grid."""
    rows = []
    for index in range(min(items, len(reader))):
        count = reader.cameras(index).batch_shape[0]
        chosen = np.linspace(0, count - 1, min(views, count)).round().astype(int).tolist()
        images = reader.load(index, chosen).images
        side = min(images.shape[-2:])
        top, left = (images.shape[-2] - side) // 2, (images.shape[-1] - side) // 2
        square = images[..., top:top + side, left:left + side]
        tiles = resample_square(square, tile)
        row = torch.full((3, tile, views * (tile + gap) - gap), 0.85)
        for k, image in enumerate(tiles):
            row[:, :, k * (tile + gap):k * (tile + gap) + tile] = image
        rows.append(row)
    if not rows:
        raise ValueError("contact_sheet: the reader has no items")
    sheet = torch.full((3, len(rows) * (tile + gap) - gap, rows[0].shape[-1]), 0.85)
    for k, row in enumerate(rows):
        sheet[:, k * (tile + gap):k * (tile + gap) + tile] = row
    return (sheet.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
