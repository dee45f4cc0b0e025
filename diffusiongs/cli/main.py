"""``diffusiongs`` command line: one thin dispatcher over the subcommand modules of this package.

Each subcommand module exposes ``main(argv: list[str]) -> int`` that parses its own typed config with tyro.
Modules are imported lazily so that ``diffusiongs --help`` stays fast and a subcommand's optional dependencies
are only needed when it runs.
"""

from __future__ import annotations

import importlib
import sys

from diffusiongs import __version__
from diffusiongs.errors import InputError, TrainingDiverged

SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "generate": ("diffusiongs.cli.generate", "images -> 3D Gaussians (.ply), turntable videos and views"),
    "demo": ("diffusiongs.cli.demo", "web demo in the browser (gradio): image -> Gaussians, video, mesh"),
    "train": ("diffusiongs.cli.train", "train a model (single process or under torchrun)"),
    "data": ("diffusiongs.cli.data", "make datasets: `data synth` (procedural), `data render` (meshes)"),
    "evaluate": ("diffusiongs.cli.evaluate", "score a checkpoint on a dataset (PSNR/SSIM/LPIPS, geometry)"),
    "export-model": ("diffusiongs.cli.export", "export a checkpoint's (EMA) weights for inference"),
    "convert-official": ("diffusiongs.cli.convert_official", "convert an official Open-DiffusionGS checkpoint"),
}


def _usage() -> str:
    width = max(map(len, SUBCOMMANDS))
    lines = ["usage: diffusiongs COMMAND [ARGS...]   (diffusiongs COMMAND --help for its options)",
             "       diffusiongs --version", "", "commands:"]
    lines += [f"  {name.ljust(width)}  {summary}" for name, (_, summary) in SUBCOMMANDS.items()]
    return "\n".join(lines)


def entrypoint(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    if argv[0] == "--version":
        print(f"diffusiongs {__version__}")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in SUBCOMMANDS:
        print(f"diffusiongs: unknown command '{name}'\n\n{_usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(SUBCOMMANDS[name][0])
    try:
        return module.main(rest)
    except InputError as err:
        print(f"diffusiongs {name}: error: {err}", file=sys.stderr)
        return 2
    except TrainingDiverged as err:
        print(f"diffusiongs {name}: error: {err}", file=sys.stderr)
        return err.exit_code


if __name__ == "__main__":
    sys.exit(entrypoint())
