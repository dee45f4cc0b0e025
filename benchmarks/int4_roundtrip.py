"""What would 4-bit weights cost a model? Writes a copy of it whose matrices went through a symmetric 4-bit round
trip, to be scored with ``diffusiongs evaluate`` beside the original.

Why: the demo model's 40 MB holds its 38 M parameters only in int8 (docs/DEMO_MODEL.md), so a larger network needs
4-bit weights; this measures what the rounding alone costs before any storage format is built for it. Each output
row of every matrix is cut into groups of ``--group`` consecutive inputs, and each group is stored as
``round(w / s)`` in [-7, 7] with ``s = max|w_group| / 7`` (one scale per group, as 4-bit formats keep it); the copy is
written in float16, which holds the rounded values exactly enough (a 4-bit level times a float16 scale).

    python benchmarks/int4_roundtrip.py --checkpoint diffusiongs/assets/demo_model --out /tmp/models/demo_int4
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from diffusiongs.system import io as model_io  # noqa: E402

LEVELS = 7
"""Largest magnitude of a symmetric 4-bit level (-8 is left unused, so that the grid is symmetric)."""


def int4_roundtrip(weight: torch.Tensor, group: int) -> torch.Tensor:
    """``weight`` (output channels first) rounded to 4-bit levels with one scale per ``group`` inputs of a row."""
    rows = weight.float().flatten(1)
    pad = -rows.shape[1] % group
    groups = torch.nn.functional.pad(rows, (0, pad)).reshape(rows.shape[0], -1, group)
    scale = groups.abs().amax(dim=2, keepdim=True).clamp_min(1e-12) / LEVELS
    rounded = (torch.round(groups / scale).clamp(-LEVELS, LEVELS) * scale).reshape(rows.shape[0], -1)
    return rounded[:, :rows.shape[1]].reshape(weight.shape).to(weight.dtype)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, required=True, help="model folder (or checkpoint) to copy")
    parser.add_argument("--out", type=Path, required=True, help="model folder to write")
    parser.add_argument("--group", type=int, default=64, help="inputs per scale")
    args = parser.parse_args()
    model = model_io.load_model(args.checkpoint)
    state = {name: int4_roundtrip(t, args.group) if t.is_floating_point() and t.dim() >= 2 else t
             for name, t in model.state_dict().items()}
    model_io.export_model(args.out, model.cfg, state, torch.float16)
    rounded = sum(t.numel() for t in state.values() if t.is_floating_point() and t.dim() >= 2)
    print(f"wrote {args.out}: {rounded / 1e6:.1f} M weights through 4-bit levels in groups of {args.group}")


if __name__ == "__main__":
    main()
