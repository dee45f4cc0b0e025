"""The picture of docs/DEMO_MODEL.md: for each input image, the prepared input and the generated Gaussians seen from
azimuths 0, 90, 180 and 270 degrees (four frames of the turntable `generate` writes).

    python scripts/turntable_sheet.py examples/images/office-chair.jpg ... --out docs/images/demo_turntables.png
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch
import tyro

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

from diffusiongs.errors import exit_with  # noqa: E402
from diffusiongs.inference import GenerateConfig, Pipeline  # noqa: E402
from diffusiongs.inference.media import image_row, image_rows, write_image  # noqa: E402
from diffusiongs.inference.outputs import OutputConfig, render_turntable  # noqa: E402
from diffusiongs.inference.pipeline import DEFAULT_MODEL_DIR  # noqa: E402


@dataclass(frozen=True)
class SheetConfig:
    """One row per image: the prepared input, then renders of the result at four azimuths."""

    images: tyro.conf.Positional[tuple[Path, ...]]
    out: Path
    """The sheet (.png)."""
    checkpoint: Path = DEFAULT_MODEL_DIR
    generate: GenerateConfig = field(default_factory=GenerateConfig)


def main() -> int:
    cfg = tyro.cli(SheetConfig, prog="python scripts/turntable_sheet.py")
    pipeline = Pipeline.from_pretrained(cfg.checkpoint, device="cpu")
    rows = []
    for path in cfg.images:
        result = pipeline(path, cfg.generate)
        frames = render_turntable(pipeline, result, OutputConfig(turntable_seconds=4 / 24, turntable_fps=24))
        rows.append(image_row(torch.cat([result.condition.rgb[None], frames.clamp(0, 1)])))
        print(f"{path}: {result.gaussians.num_gaussians} Gaussians")
    print(f"wrote {write_image(image_rows(rows), cfg.out)}")
    return 0


if __name__ == "__main__":
    exit_with(main, "turntable_sheet")
