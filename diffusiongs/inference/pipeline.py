"""Image -> 3D Gaussians: ``Pipeline.from_pretrained(folder)(image)``.

The reverse process runs on the N noisy views of the model's camera rig; at every step the predicted Gaussians
are rendered at those views to give x0_hat. The Gaussians of the last step are the result.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from jaxtyping import Float
from torch import Tensor

from diffusiongs.diffusion import NoiseSchedule, SamplerConfig, make_sampler, run_reverse_process
from diffusiongs.errors import InputError
from diffusiongs.gaussians import Gaussians
from diffusiongs.geometry import Cameras
from diffusiongs.inference.preprocess import ConditionImage, PreprocessConfig, prepare_condition_image
from diffusiongs.render import RenderConfig
from diffusiongs.system import io as model_io
from diffusiongs.system.model import DETERMINISTIC_INPUT, DiffusionGS, ModelConfig

DEFAULT_MODEL_DIR = Path(__file__).resolve().parent.parent / "assets" / "demo_model"
"""The demo model shipped inside the package (``diffusiongs generate`` uses it when no checkpoint is given)."""


@dataclass(frozen=True)
class ExportFilter:
    """Which Gaussians to keep in the result."""

    min_opacity: float = 0.0
    """Drop Gaussians at or below this opacity (official exporter: 0.02)."""
    crop_box: float | None = None
    """Drop Gaussians outside [-crop_box, crop_box]^3 (official exporter: 0.91)."""

    def apply(self, gaussians: Gaussians) -> Gaussians:
        keep = gaussians.opacities > self.min_opacity
        if self.crop_box is not None:
            keep &= (gaussians.means.abs() <= self.crop_box).all(-1)
        return gaussians.select(keep)


@dataclass(frozen=True)
class GenerateConfig:
    """One generation."""

    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    seed: int = 0
    """Seed of the sampling noise, drawn on the CPU: the same chain on every device."""
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    export: ExportFilter = field(default_factory=ExportFilter)
    elevation_deg: float | None = None
    """Elevation of the condition camera (and the rig); None uses the model's rig."""


@dataclass(frozen=True)
class GenerationResult:
    """What one image produced.

    Attributes:
        gaussians: the exported Gaussians (unbatched, after :class:`ExportFilter`).
        condition: the prepared input view.
        cameras: the condition + noisy cameras, batch shape ``[1 + N]``.
        views: renders of the raw result at ``cameras``, ``[1 + N, 3, h, w]`` in [0, 1].
        timings: seconds per stage.
    """

    gaussians: Gaussians
    condition: ConditionImage
    cameras: Cameras
    views: Float[Tensor, "v 3 h w"]
    timings: dict[str, float]


class Pipeline:
    """A loaded model ready to turn images into Gaussians."""

    def __init__(self, model: DiffusionGS, device: torch.device | str = "cpu",
                 render_cfg: RenderConfig = RenderConfig(), compile: bool = False):
        """On CUDA the network runs in bfloat16 (weights cast once, autocast for the rest); the Gaussians and the
        renderer stay float32. ``compile``: torch.compile the network with CUDA graphs (CUDA only; the first
        generation pays the compilation, later ones run faster)."""
        self.device = torch.device(device)
        self.model = model.eval().to(self.device)
        self.render_cfg = render_cfg
        self.schedule = NoiseSchedule(model.cfg.schedule)
        self.autocast_dtype = torch.bfloat16 if self.device.type == "cuda" else None
        if self.autocast_dtype is not None:
            self.model.net.to(self.autocast_dtype)
        if compile and self.device.type == "cuda":
            self.model.net.compile(mode="reduce-overhead")

    @property
    def cfg(self) -> ModelConfig:
        return self.model.cfg

    @classmethod
    def from_pretrained(cls, folder: str | Path = DEFAULT_MODEL_DIR, device: torch.device | str | None = None,
                        prefer_ema: bool = True, camera_template: str | Path | None = None,
                        compile: bool = False, official_config: str | Path | None = None) -> Pipeline:
        """Load a model folder (``config.json`` + ``model.safetensors``/``ema.safetensors``): an exported model,
        a training checkpoint folder, a training run folder (its latest checkpoint), or an official
        Open-DiffusionGS ``.ckpt`` file, converted in memory (``camera_template``: its ``camera_template.pt``;
        ``official_config``: its YAML config, see :func:`~diffusiongs.official.load_official_checkpoint`)."""
        folder = Path(folder)
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        if not folder.exists():
            raise InputError(f"{folder}: no such model folder")
        if folder.is_file():
            return cls(_load_official(folder, camera_template, official_config), device, compile=compile)
        if not (folder / model_io.CONFIG).is_file():
            latest = folder / "checkpoints" / "latest"
            if not latest.is_file():
                raise InputError(f"{folder}: not a model folder (no {model_io.CONFIG}) and no checkpoints in it")
            folder = folder / "checkpoints" / latest.read_text().strip()
        return cls(model_io.load_model(folder, prefer_ema), device, compile=compile)

    def rig_cameras(self, elevation_deg: float | None = None) -> Cameras:
        rig = self.cfg.object_rig
        if elevation_deg is not None:
            rig = replace(rig, elevation_deg=elevation_deg)
        return rig.cameras(1 + self.cfg.num_noisy_views, self.cfg.resolution).to(self.device)

    @torch.no_grad()
    def generate_from_condition(self, condition: Float[Tensor, "3 h w"], cameras: Cameras, cfg: GenerateConfig,
                                is_object: bool = True) -> tuple[Gaussians, Float[Tensor, "n 3 h w"]]:
        """Sample Gaussians given a prepared condition view and its rig (view 0 = the condition camera).

        Returns the raw (unfiltered) Gaussians ``[N]`` and the final x0 renders of the noisy views.
        """
        self.model.require_decoder(is_object)
        n = cameras.batch_shape[0] - 1
        cond = condition.to(self.device)[None, None]
        cams = cameras.reshape(1, n + 1)
        obj = torch.tensor([is_object], device=self.device)
        # The noise comes from a CPU generator, so that a seed means the same chain on the CPU and on a GPU.
        generator = torch.Generator().manual_seed(cfg.seed)
        shape = (1, n, 3, cameras.height, cameras.width)
        latest: dict[str, object] = {}

        def predict_x0(x_t: Tensor, t: int) -> Tensor:
            steps = torch.full((1,), t, device=self.device, dtype=torch.long)
            with torch.autocast(self.device.type, dtype=self.autocast_dtype or torch.float32,
                                enabled=self.autocast_dtype is not None):
                pred = self.model.predict_gaussians(torch.cat([cond, x_t], dim=1), cams, steps, obj)
            x0 = self.model.render(pred.gaussians, cams[:, 1:], self.render_cfg).rgb
            latest["gaussians"], latest["x0"] = pred.gaussians, x0
            return x0

        if self.cfg.deterministic:
            predict_x0(torch.full(shape, DETERMINISTIC_INPUT, device=self.device), self.schedule.num_timesteps - 1)
        else:
            sampler = make_sampler(self.schedule, cfg.sampler)
            x_T = torch.randn(shape, generator=generator).to(self.device)
            run_reverse_process(sampler, predict_x0, x_T, generator)
        return latest["gaussians"][0], latest["x0"][0]

    def __call__(self, image: str | Path, cfg: GenerateConfig = GenerateConfig()) -> GenerationResult:
        timings = {}
        start = time.perf_counter()
        condition = prepare_condition_image(image, self.cfg.resolution, cfg.preprocess)
        cameras = self.rig_cameras(cfg.elevation_deg)
        timings["preprocess_s"] = time.perf_counter() - start
        start = time.perf_counter()
        raw, _ = self.generate_from_condition(condition.rgb, cameras, cfg)
        timings["sampling_s"] = time.perf_counter() - start
        start = time.perf_counter()
        with torch.no_grad():
            views = self.model.render(raw[None], cameras.reshape(1, -1), self.render_cfg).rgb[0]
        timings["render_views_s"] = time.perf_counter() - start
        return GenerationResult(gaussians=cfg.export.apply(raw.to("cpu")), condition=condition, cameras=cameras,
                                views=views.cpu().clamp(0, 1), timings=timings)


def _load_official(path: Path, camera_template: str | Path | None, config: str | Path | None) -> DiffusionGS:
    from diffusiongs.official import load_official_checkpoint  # only needed for official checkpoints

    cfg, state = load_official_checkpoint(path, camera_template=camera_template, config=config)
    model = DiffusionGS(cfg)
    model_io.load_model_state(model, state, path)
    return model
