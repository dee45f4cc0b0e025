"""``diffusiongs export-model SOURCE --out DIR``: a training checkpoint (or run) -> a compact inference folder."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
import tyro

from diffusiongs.configio import read_json
from diffusiongs.errors import InputError
from diffusiongs.quantize import INT4_GROUP_RULE, valid_int4_group
from diffusiongs.system import io as model_io
from diffusiongs.training.checkpoint import TRAINER_STATE, latest_checkpoint

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
    (matrices in 4 bits, one float16 scale per ``int4_group`` inputs, about a seventh) is for a network trained
    through that rounding (``train --int4-group``): it costs an untrained-for network about a dB."""
    int4_group: int | None = None
    """With ``--dtype int4``: inputs per scale. Default: the ``--int4-group`` a training checkpoint was trained
    through (its ``trainer_state.json`` records it), else 32."""
    max_shard_mb: float | None = None
    """Split the weights into shards of at most this size (with an index file)."""


def resolve_source(source: Path) -> Path:
    if (source / model_io.CONFIG).is_file():
        return source
    latest = latest_checkpoint(source)
    if latest is None:
        raise InputError(f"{source}: neither a model/checkpoint folder nor a run folder with checkpoints")
    return latest


def trained_int4_group(folder: Path) -> int | None:
    """The ``--int4-group`` a training checkpoint was trained through, or None (full precision, or not a
    checkpoint)."""
    state = folder / TRAINER_STATE
    if not state.is_file():
        return None
    return read_json(state).get("train_config", {}).get("int4_group")


def main(argv: list[str]) -> int:
    args = tyro.cli(ExportArgs, args=argv, prog="diffusiongs export-model")
    if args.int4_group is not None and not valid_int4_group(args.int4_group):
        raise InputError(f"--int4-group {args.int4_group}: {INT4_GROUP_RULE}")
    if args.int4_group is not None and args.dtype != "int4":
        raise InputError(f"--int4-group {args.int4_group}: applies to --dtype int4 only, not --dtype {args.dtype}")
    folder = resolve_source(args.source)
    trained = trained_int4_group(folder)
    if trained is not None and (args.dtype != "int4" or args.int4_group not in (None, trained)):
        print(f"note: {folder} was trained through 4-bit weights in groups of {trained}; "
              f"--dtype int4 --int4-group {trained} stores what it computed")
    weights = model_io.weights_file(folder, prefer_ema=args.weights == "ema")
    model = model_io.load_model(folder, prefer_ema=args.weights == "ema")
    int4_group = (args.int4_group or trained or 32) if args.dtype == "int4" else None
    model_io.export_model(args.out, model.cfg, model, None if int4_group else DTYPES[args.dtype], args.max_shard_mb,
                          int4_group)
    params = sum(p.numel() for p in model.parameters())
    print(f"wrote {args.out} ({params / 1e6:.1f} M parameters as {args.dtype}, from {weights})")
    return 0
