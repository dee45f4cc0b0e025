"""The web page of ``diffusiongs demo`` (gradio): drop an image, see the segmented input, generate with a progress
bar, look at the Gaussians and the mesh in 3D, watch the turntable, download the files.

Everything the page loads comes from the local server (gradio bundles its frontend, fonts and 3D viewer); analytics
are off and no share link is ever made. Errors reach the page as one line (gradio's error toast), never a traceback.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gradio as gr

from diffusiongs.demo.runner import DemoRunner, DemoSettings
from diffusiongs.diffusion.samplers import SamplerName
from diffusiongs.errors import InputError
from diffusiongs.inference.media import to_uint8
from diffusiongs.inference.preprocess import PreprocessConfig, prepare_condition_image

log = logging.getLogger(__name__)

SAMPLERS: tuple[SamplerName, ...] = ("ddim", "ddpm", "dpmpp2m")
VIEWER_BACKGROUND = (1.0, 1.0, 1.0, 1.0)
"""The mesh view's background: white, the background the model renders on (the splat viewer's is black)."""
MESH_CAMERA = (0.0, 70.0, None)
"""The mesh view starts where the input was seen from: azimuth 0 (+x), 20 degrees above the horizon (babylon's
(alpha, beta) in degrees, beta from the up axis)."""
VIEWER_HEIGHT = 420
"""Pixels; the splat viewer's field of view grows with its canvas (see ``runner.VIEWER_SCALE``)."""
INTRO = """# DiffusionGS

Drop an image of one object: RGBA with a transparent background, or RGB (its background is removed by a small
network shipped with the package). The model predicts 3D Gaussians in a few denoising steps; a mesh is fused from
renders of them. Drag in the 3D views to turn the result."""


def _readable(err: Exception, upload: Path) -> str:
    """The error's message with gradio's upload folder left out of the file name."""
    return str(err).replace(str(upload), upload.name)


def _guarded(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn every failure of ``fn`` into one line in the page (gradio shows :class:`gr.Error` messages only)."""
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except InputError as err:
            raise gr.Error(str(err)) from None
        except Exception as err:  # a bug or an exhausted device: the console keeps the traceback
            log.exception("demo: generation failed")
            raise gr.Error(f"generation failed: {type(err).__name__}: {err}") from None
    return wrapper


def _upload_path(upload: str | None) -> Path:
    if not upload:
        raise gr.Error("drop an image first")
    return Path(upload)


def build_app(runner: DemoRunner, examples: list[Path], defaults: DemoSettings = DemoSettings(),
              title: str = "DiffusionGS demo") -> gr.Blocks:
    """The page; ``runner`` does the work, ``examples`` are offered as one-click inputs."""
    resolution = runner.pipeline.cfg.resolution

    @_guarded
    def segment(upload: str | None, ratio: float, domain: str):
        """The prepared input view, shown as soon as an image is dropped or picked (or a setting changes): an object
        segmented and recentred, a scene photo centre-cropped, as the model will get them."""
        if not upload:
            return None
        path = Path(upload)
        try:
            condition = (runner.pipeline.scene_condition(path) if domain == "scene" else
                         prepare_condition_image(path, resolution, PreprocessConfig(foreground_ratio=ratio)))
        except InputError as err:
            raise gr.Error(_readable(err, path)) from None
        return to_uint8(condition.rgb[None])[0]

    @_guarded
    def generate(upload: str | None, sampler: SamplerName, steps: float, seed: float, ratio: float, mesh: bool,
                 domain: str, progress=gr.Progress()):
        path = _upload_path(upload)
        settings = DemoSettings(sampler=sampler, steps=int(steps), seed=int(seed), foreground_ratio=float(ratio),
                                mesh=bool(mesh), domain=domain)
        try:
            out = runner.run(path, settings, lambda fraction, message: progress(fraction, desc=message))
        except InputError as err:
            raise gr.Error(_readable(err, path)) from None
        downloads = [str(p) for p in (out.gaussians, out.mesh, out.video) if p is not None]
        return (str(out.condition), str(out.viewer), None if out.mesh is None else str(out.mesh),
                None if out.video is None else str(out.video), downloads, out.summary)

    with gr.Blocks(title=title, analytics_enabled=False) as app:
        gr.Markdown(INTRO)
        with gr.Row():
            with gr.Column(scale=1):
                image = gr.File(label="Image (PNG, JPEG, WebP)", file_types=["image"], elem_id="image-input")
                with gr.Accordion("Settings", open=True):
                    sampler = gr.Dropdown(list(SAMPLERS), value=defaults.sampler, label="Sampler")
                    steps = gr.Slider(1, runner.max_steps, value=defaults.steps, step=1, label="Steps",
                                      elem_id="steps")
                    seed = gr.Number(value=defaults.seed, precision=0, minimum=0, label="Seed")
                    ratio = gr.Slider(0.3, 1.0, value=defaults.foreground_ratio, step=0.05,
                                      label="Object size in the frame (foreground ratio)")
                    mesh = gr.Checkbox(value=defaults.mesh, label="Extract a mesh (GLB)")
                    domain = gr.Radio(list(runner.domains), value=defaults.domain, label="An object, or a scene (the "
                                      "whole photo, denoised along a short orbit)", elem_id="domain",
                                      visible=len(runner.domains) > 1)
                button = gr.Button("Generate", variant="primary", elem_id="generate")
                if examples:
                    gr.Examples([[str(p)] for p in examples], inputs=[image], label="Examples")
            with gr.Column(scale=2):
                with gr.Row():
                    condition = gr.Image(label="Segmented input", interactive=False, elem_id="segmented")
                    video = gr.Video(label="Turntable", interactive=False, autoplay=True, loop=True,
                                     elem_id="turntable")
                with gr.Row():
                    splat = gr.Model3D(label="Gaussians", interactive=False, height=VIEWER_HEIGHT,
                                       elem_id="gaussians-view")
                    mesh_view = gr.Model3D(label="Mesh", clear_color=VIEWER_BACKGROUND, interactive=False,
                                           height=VIEWER_HEIGHT, camera_position=MESH_CAMERA, elem_id="mesh-view")
                downloads = gr.File(label="Downloads", file_count="multiple", interactive=False, elem_id="downloads")
                summary = gr.Markdown(elem_id="summary")
        # change, not upload: a click on an example sets the file too.
        image.change(segment, [image, ratio, domain], condition)
        ratio.release(segment, [image, ratio, domain], condition)
        domain.change(segment, [image, ratio, domain], condition)
        button.click(generate, [image, sampler, steps, seed, ratio, mesh, domain],
                     [condition, splat, mesh_view, video, downloads, summary])
    return app


def launch(app: gr.Blocks, host: str, port: int, allowed_paths: list[Path]) -> None:
    """Serve until interrupted; one generation at a time (the model is one, and the CPU is busy enough)."""
    app.queue(default_concurrency_limit=1).launch(
        server_name=host, server_port=port, share=False, show_error=False, ssr_mode=False, quiet=False,
        allowed_paths=[str(p) for p in allowed_paths], footer_links=[])
