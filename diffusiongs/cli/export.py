"""``diffusiongs export-model SOURCE --out DIR``: a training checkpoint (or run) -> a compact inference folder."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
import tyro

from diffusiongs.errors import InputError
from diffusiongs.system import io as model_io
from diffusiongs.training.checkpoint import latest_checkpoint

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16, "int8": torch.int8}


@dataclass(frozen=True)
class ExportArgs:
    """Export one set of weights and the model config for inference (Pipeline.from_pretrained, generate)."""

    source: tyro.conf.Positional[Path]
    """A checkpoint folder, a training run folder (its latest checkpoint) or a model folder."""
    out: Path = Path("model")
    """The inference folder to write."""
    weights: Literal["ema", "raw"] = "ema"
    """The EMA weights (used when present) or the raw training weights."""
    dtype: Literal["float32", "float16", "bfloat16", "int8", "int4"] = "float16"
    """Storage precision; loading casts back to float32. int8 (matrices quantised per output row, a quarter of
    float32) is for moving weights where bytes are scarce, e.g. as the start of a run on a GPU machine. int4
    (matrices in 4 bits, one float16 scale per ``int4_group`` inputs, about an eighth) is for a network trained
    through that rounding (``train --int4-group``): it costs an untrained-for network about a dB."""
    int4_group: int = 32
    """With ``--dtype int4``: inputs per scale (the ``--int4-group`` the network was trained with)."""
    max_shard_mb: float | None = None
    """Split the weights into shards of at most this size (with an index file)."""


def resolve_source(source: Path) -> Path:
    if (source / model_io.CONFIG).is_file():
        return source
    latest = latest_checkpoint(source)
    if latest is None:
        raise InputError(f"{source}: neither a model/checkpoint folder nor a run folder with checkpoints")
    return latest


def main(argv: list[str]) -> int:
    args = tyro.cli(ExportArgs, args=argv, prog="diffusiongs export-model")
    if args.dtype == "int4" and (args.int4_group <= 0 or args.int4_group % 2):
        raise InputError(f"--int4-group {args.int4_group}: must be an even number > 0 (two levels a byte)")
    folder = resolve_source(args.source)
    weights = model_io.weights_file(folder, prefer_ema=args.weights == "ema")
    model = model_io.load_model(folder, prefer_ema=args.weights == "ema")
    int4 = args.dtype == "int4"
    model_io.export_model(args.out, model.cfg, model, None if int4 else DTYPES[args.dtype], args.max_shard_mb,
                          args.int4_group if int4 else None)
    params = sum(p.numel() for p in model.parameters())
    print(f"wrote {args.out} ({params / 1e6:.1f} M parameters as {args.dtype}, from {weights})")
    return 0
