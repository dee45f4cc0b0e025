"""``diffusiongs demo``: the web demo on localhost (gradio, the `demo` extra), on the shipped model by default."""

from __future__ import annotations

import importlib.util
import os
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path

import tyro

from diffusiongs.cli.device import DeviceChoice, resolve_device
from diffusiongs.demo.runner import DemoRunner, DemoSettings
from diffusiongs.errors import InputError
from diffusiongs.inference.mesh import MeshConfig, require_mesh_extra
from diffusiongs.inference.pipeline import DEFAULT_MODEL_DIR, Pipeline

EXAMPLES_DIR = Path(__file__).resolve().parents[2] / "examples" / "images"
"""The repository's example inputs, offered on the page when the package runs from a checkout."""


@dataclass(frozen=True)
class DemoArgs:
    """Serve the web demo: drop an image, get 3D Gaussians, a turntable video and a mesh, in the browser."""

    checkpoint: Path = DEFAULT_MODEL_DIR
    """Model folder (exported model, training checkpoint or run folder) or an official Open-DiffusionGS .ckpt;
    default: the shipped demo model."""
    camera_template: Path | None = None
    """With an official .ckpt: its camera_template.pt."""
    host: str = "127.0.0.1"
    """Address to listen on (0.0.0.0 serves the local network too; there is never a public share link)."""
    port: int = 7860
    """Port to listen on (the page is http://HOST:PORT/)."""
    out: Path | None = None
    """Folder for the results (one numbered folder per generation); default: a new temporary folder."""
    defaults: DemoSettings = field(default_factory=DemoSettings)
    """The page's initial settings."""
    frames: int = 36
    """Turntable frames (0: no video)."""
    mesh_options: MeshConfig = field(default_factory=MeshConfig)
    """How meshes are extracted."""
    compile: bool = False
    """CUDA only: torch.compile the network with CUDA graphs (the first generation pays the compilation)."""
    device: DeviceChoice = "auto"
    """auto: CUDA when available, else the CPU."""


def main(argv: list[str]) -> int:
    args = tyro.cli(DemoArgs, args=argv, prog="diffusiongs demo")
    if importlib.util.find_spec("gradio") is None:
        raise InputError("the web demo needs gradio: pip install 'diffusiongs[demo]'")
    require_mesh_extra()
    args.defaults.validate()
    # Read by gradio when it is imported: no usage statistics and no version check leave this machine.
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    from diffusiongs.demo.app import build_app, launch

    device = resolve_device(args.device)
    pipeline = Pipeline.from_pretrained(args.checkpoint, device=device, camera_template=args.camera_template,
                                        compile=args.compile)
    out = args.out or Path(tempfile.mkdtemp(prefix="diffusiongs-demo-"))
    runner = DemoRunner(pipeline, out, frames=args.frames, mesh_cfg=args.mesh_options)
    defaults = args.defaults
    if runner.domains == ("scene",) and defaults.domain == "object":
        print(f"diffusiongs demo: {args.checkpoint} is a scene-only model: the page makes scenes")
        defaults = replace(defaults, domain="scene")
    defaults.validate(runner.max_steps, runner.domains)  # again, now that the model is known
    examples = sorted(EXAMPLES_DIR.glob("*.png")) if EXAMPLES_DIR.is_dir() else []
    print(f"diffusiongs demo: model {args.checkpoint} on {device}; results in {out}")
    launch(build_app(runner, examples, defaults), args.host, args.port, [out, EXAMPLES_DIR])
    return 0
