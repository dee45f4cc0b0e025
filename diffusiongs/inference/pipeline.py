"""Image -> 3D Gaussians: ``Pipeline.from_pretrained(folder)(image)`` for objects,
``Pipeline.generate_scene(image, cameras)`` for scenes.

The reverse process runs on the N noisy views of the model's camera rig (objects) or of the given scene cameras
(scenes); at every step the predicted Gaussians are rendered at those views to give x0_hat. The Gaussians of the last
step are the result.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from diffusiongs.data.images import composite_on_white
from diffusiongs.data.types import Domain
from diffusiongs.diffusion import NoiseSchedule, ProgressCallback, SamplerConfig, make_sampler, run_reverse_process
from diffusiongs.errors import InputError
from diffusiongs.gaussians import Gaussians
from diffusiongs.geometry import Cameras
from diffusiongs.inference.graphed import GraphedPredictor
from diffusiongs.inference.preprocess import (
    ConditionImage,
    ImageInput,
    PreprocessConfig,
    input_name,
    prepare_condition_image,
    read_rgba,
)
from diffusiongs.inference.scene import SceneCameraConfig, ScenePath, check_scene_config, scene_path, square_scene_view
from diffusiongs.render import RenderConfig
from diffusiongs.system import io as model_io
from diffusiongs.system.model import DETERMINISTIC_INPUT, DiffusionGS, ModelConfig, PixelRays

DEFAULT_MODEL_DIR = Path(__file__).resolve().parent.parent / "assets" / "demo_model"
"""The demo model shipped inside the package (``diffusiongs generate`` uses it when no checkpoint is given)."""


@dataclass(frozen=True)
class ExportFilter:
    """Which Gaussians to keep in the result. The default drops the near-transparent ones and those the decoder
    clamped onto its clip box (rays whose depth fell outside the object box): together most of the raw set, with
    no visible change to renders (docs/segmentation.md#pruning-the-export has the measurement)."""

    min_opacity: float = 0.02
    """Drop Gaussians at or below this opacity (the official exporter's 0.02); 0 keeps them."""
    drop_clipped: bool = True
    """Drop Gaussians pinned to a face of the decoder's clip box (``ModelConfig.object_decode.clip_box``): their
    centres were clamped there, they do not sit where the network put them."""
    crop_box: float | None = None
    """Also drop Gaussians outside [-crop_box, crop_box]^3 (official exporter: 0.91)."""

    def apply(self, gaussians: Gaussians, clip_box: float | None = None) -> Gaussians:
        """The kept subset of unbatched Gaussians; ``clip_box``: the decoder's clamp (None: nothing is pinned)."""
        keep = gaussians.opacities > self.min_opacity
        if self.drop_clipped and clip_box is not None:
            keep &= (gaussians.means.abs() < clip_box).all(-1)
        if self.crop_box is not None:
            keep &= (gaussians.means.abs() <= self.crop_box).all(-1)
        return gaussians.select(keep)

    def describe(self, clip_box: float | None = None) -> str:
        """The rule in words (for ``meta.json``)."""
        rules = [f"opacity > {self.min_opacity:g}"]
        if self.drop_clipped and clip_box is not None:
            rules.append(f"centre strictly inside the decoder's clip box [-{clip_box:g}, {clip_box:g}]^3")
        if self.crop_box is not None:
            rules.append(f"centre in [-{self.crop_box:g}, {self.crop_box:g}]^3")
        return "kept the Gaussians with " + " and ".join(rules)


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
        gaussians: the exported Gaussians (unbatched, on the CPU, after :class:`ExportFilter`).
        num_raw_gaussians: how many Gaussians the model predicted before the filter.
        condition: the prepared input view (``condition.foreground`` says where its mask came from).
        cameras: the condition + noisy cameras, batch shape ``[1 + N]``.
        views: renders of the raw result at ``cameras``, ``[1 + N, 3, h, w]`` in [0, 1].
        timings: seconds per stage.
        input: how the input is named in messages and ``meta.json`` (its path, or a description).
        config: the settings used.
        domain: ``"object"`` or ``"scene"`` (the decoder used).
        path: scenes: every camera of the path in the scene world, the rig among them (the fly-through follows it).
    """

    gaussians: Gaussians
    num_raw_gaussians: int
    condition: ConditionImage
    cameras: Cameras
    views: Float[Tensor, "v 3 h w"]
    timings: dict[str, float]
    input: str
    config: GenerateConfig
    domain: Domain = "object"
    path: ScenePath | None = None


class Pipeline:
    """A loaded model ready to turn images into Gaussians."""

    def __init__(self, model: DiffusionGS, device: torch.device | str = "cpu",
                 render_cfg: RenderConfig = RenderConfig(), compile: bool = False):
        """On CUDA the network runs in bfloat16 (weights cast once, autocast for the rest); the Gaussians and the
        renderer stay float32. ``compile``: torch.compile the network and the Gaussian decoding and replay them
        as one CUDA graph per step (CUDA only, :mod:`~diffusiongs.inference.graphed`; the first generation pays the
        compilation, later ones run faster)."""
        self.device = torch.device(device)
        self.model = model.eval().to(self.device)
        self.source: str | None = None
        """Where the model was loaded from (set by :meth:`from_pretrained`)."""
        self.render_cfg = render_cfg
        self.schedule = NoiseSchedule(model.cfg.schedule)
        self.autocast_dtype = torch.bfloat16 if self.device.type == "cuda" else None
        if self.autocast_dtype is not None:
            self.model.net.to(self.autocast_dtype)
        self._graphed = GraphedPredictor(self._predict) if compile and self.device.type == "cuda" else None

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
            pipeline = cls(_load_official(folder, camera_template, official_config), device, compile=compile)
        else:
            pipeline = cls(model_io.load_model(_model_folder(folder), prefer_ema), device, compile=compile)
        pipeline.source = str(folder)
        return pipeline

    def rig_cameras(self, elevation_deg: float | None = None) -> Cameras:
        """``[condition | N noisy]``: the condition camera on the model's object rig (azimuth 0), and the noisy views
        where the model's view layout puts them."""
        rig = self.cfg.object_rig
        if elevation_deg is not None:
            rig = replace(rig, elevation_deg=elevation_deg)
        condition = rig.cameras(1, self.cfg.resolution)[0]
        return self.cfg.view_layout.rig(condition, self.cfg.num_noisy_views).to(self.device)

    @torch.no_grad()
    def generate_from_condition(self, condition: Float[Tensor, "3 h w"], cameras: Cameras, cfg: GenerateConfig,
                                is_object: bool = True, progress: ProgressCallback | None = None
                                ) -> tuple[Gaussians, Float[Tensor, "n 3 h w"]]:
        """Sample Gaussians given a prepared condition view and its rig (view 0 = the condition camera).

        Returns the raw (unfiltered) Gaussians ``[N]`` and the final x0 renders of the noisy views.
        ``progress(done, total)`` is called after every network evaluation.
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
        rays = self.model.rays(cams)  # the cameras stay put for the whole chain
        if self._graphed is not None:
            self._graphed.bind(cond, cams, obj, rays)

        def predict_x0(x_t: Tensor, t: int) -> Tensor:
            steps = torch.full((1,), t, device=self.device, dtype=torch.long)
            gaussians = (self._graphed(x_t, steps) if self._graphed is not None
                         else self._predict(cond, x_t, cams, steps, obj, rays))
            x0 = self.model.render(gaussians, cams[:, 1:], self.render_cfg).rgb
            latest["gaussians"], latest["x0"] = gaussians, x0
            return x0

        if self.cfg.deterministic:
            predict_x0(torch.full(shape, DETERMINISTIC_INPUT, device=self.device), self.schedule.num_timesteps - 1)
            if progress is not None:
                progress(1, 1)
        else:
            sampler = make_sampler(self.schedule, cfg.sampler)
            x_T = torch.randn(shape, generator=generator).to(self.device)
            run_reverse_process(sampler, predict_x0, x_T, generator, progress)
        gaussians = latest["gaussians"][0]
        if self._graphed is not None:  # its Gaussians live in the CUDA graph's memory, which the next replay overwrites
            gaussians = gaussians.clone()
        return gaussians, latest["x0"][0]

    def _predict(self, condition: Float[Tensor, "1 1 3 h w"], x_t: Float[Tensor, "1 n 3 h w"], cameras: Cameras,
                 steps: Int[Tensor, " 1"], is_object: Bool[Tensor, " 1"], rays: PixelRays) -> Gaussians:
        """The Gaussians predicted from the condition view and x_t (the network under autocast on CUDA)."""
        with torch.autocast(self.device.type, dtype=self.autocast_dtype or torch.float32,
                            enabled=self.autocast_dtype is not None):
            return self.model.predict_gaussians(torch.cat([condition, x_t], dim=1), cameras, steps, is_object,
                                                rays).gaussians

    def __call__(self, image: ImageInput, cfg: GenerateConfig = GenerateConfig(),
                 progress: ProgressCallback | None = None) -> GenerationResult:
        """Generate Gaussians from an image: a file path, a PIL image or an HxWx3/HxWx4 array (uint8, or float in
        [0, 1]). RGB inputs get their background removed (``cfg.preprocess``). ``progress(done, total)`` is called
        after every denoising step."""
        if "object" not in self.cfg.denoiser.decoders:
            raise InputError(f"{self.source or 'this model'}: a scene-only model; use Pipeline.generate_scene(image, "
                             "cameras)")
        timings = {}
        start = time.perf_counter()
        condition = prepare_condition_image(image, self.cfg.resolution, cfg.preprocess)
        cameras = self.rig_cameras(cfg.elevation_deg)
        timings["preprocess_s"] = time.perf_counter() - start
        return self._sample(condition, cameras, cfg, "object", image, timings, progress)

    def generate_scene(self, image: ImageInput, cameras: SceneCameraConfig | ScenePath = SceneCameraConfig(),
                       cfg: GenerateConfig = GenerateConfig(), progress: ProgressCallback | None = None
                       ) -> GenerationResult:
        """Generate a scene's Gaussians from a photo (a path, PIL image or array; used whole, centre-cropped to a
        square) at the given cameras: a :class:`SceneCameraConfig` (a named trajectory or a RealEstate10K camera
        file), or a :class:`ScenePath` of your own cameras with intrinsics in the photo's pixels. The cameras are
        normalised as in training (docs/scenes.md); the result's ``path`` holds them in that world.
        ``cfg.preprocess`` and ``cfg.elevation_deg`` are object settings and are not used."""
        if "scene" not in self.cfg.denoiser.decoders:
            raise InputError(f"{self.source or 'this model'}: the model has no scene decoder (it has "
                             f"{list(self.cfg.denoiser.decoders)})")
        timings = {}
        start = time.perf_counter()
        rgb = read_scene_photo(image)
        num_noisy = self.cfg.num_noisy_views
        if isinstance(cameras, SceneCameraConfig):
            check_scene_config(cameras)
            cameras = scene_path(cameras, num_noisy, rgb.shape[-1], rgb.shape[-2])
        if len(cameras.rig) != num_noisy + 1:
            raise InputError(f"scene cameras: the model denoises N = {num_noisy} views, so the rig needs "
                             f"{num_noisy + 1} frames, got {len(cameras.rig)}")
        rgb, path = square_scene_view(rgb, cameras, self.cfg.resolution)
        path = path.normalized()
        condition = _scene_condition(rgb)
        timings["preprocess_s"] = time.perf_counter() - start
        result = self._sample(condition, path.rig_cameras.to(self.device), cfg, "scene", image, timings, progress)
        return replace(result, path=path)

    def scene_condition(self, image: ImageInput) -> ConditionImage:
        """A scene photo as :meth:`generate_scene` gives it to the model (centre-cropped to a square and resampled;
        the crop does not depend on the cameras), e.g. to show it before generating."""
        rgb = read_scene_photo(image)
        path = scene_path(SceneCameraConfig(), self.cfg.num_noisy_views, rgb.shape[-1], rgb.shape[-2])
        return _scene_condition(square_scene_view(rgb, path, self.cfg.resolution)[0])

    def _sample(self, condition: ConditionImage, cameras: Cameras, cfg: GenerateConfig, domain: Domain,
                image: ImageInput, timings: dict[str, float], progress: ProgressCallback | None) -> GenerationResult:
        """Sample, render the rig views and filter the Gaussians of one prepared input."""
        start = time.perf_counter()
        raw, _ = self.generate_from_condition(condition.rgb, cameras, cfg, is_object=domain == "object",
                                              progress=progress)
        timings["sampling_s"] = time.perf_counter() - start
        start = time.perf_counter()
        with torch.no_grad():
            views = self.model.render(raw[None], cameras.reshape(1, -1), self.render_cfg).rgb[0]
        timings["render_views_s"] = time.perf_counter() - start
        kept = cfg.export.apply(raw.to("cpu"), self.clip_box(domain))
        return GenerationResult(gaussians=kept, num_raw_gaussians=raw.num_gaussians, condition=condition,
                                cameras=cameras, views=views.cpu().clamp(0, 1), timings=timings,
                                input=input_name(image), config=cfg, domain=domain)

    def clip_box(self, domain: Domain) -> float | None:
        """The box the decoder of ``domain`` clamps centres into (None: none, as for scenes)."""
        return (self.cfg.object_decode if domain == "object" else self.cfg.scene_decode).clip_box


def read_scene_photo(image: ImageInput) -> Float[Tensor, "3 h w"]:
    """A scene photo in [0, 1], used whole (any transparency composited on white)."""
    rgba = torch.from_numpy(read_rgba(image)[0]).permute(2, 0, 1).float()
    return composite_on_white(rgba[:3], rgba[3:])


def _scene_condition(rgb: Float[Tensor, "3 r r"]) -> ConditionImage:
    return ConditionImage(rgb=rgb.clamp(0, 1), alpha=torch.ones_like(rgb[:1]), foreground="none")


def _model_folder(folder: Path) -> Path:
    """A folder with a model config in it: ``folder`` itself, or a run folder's latest checkpoint."""
    if (folder / model_io.CONFIG).is_file():
        return folder
    latest = folder / "checkpoints" / "latest"
    if not latest.is_file():
        raise InputError(f"{folder}: not a model folder (no {model_io.CONFIG}) and no checkpoints in it")
    return folder / "checkpoints" / latest.read_text().strip()


def _load_official(path: Path, camera_template: str | Path | None, config: str | Path | None) -> DiffusionGS:
    from diffusiongs.official import load_official_checkpoint  # only needed for official checkpoints

    cfg, state = load_official_checkpoint(path, camera_template=camera_template, config=config)
    model = DiffusionGS(cfg)
    model_io.load_model_state(model, state, path)
    return model
