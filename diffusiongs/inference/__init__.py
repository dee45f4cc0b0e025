"""Inference: an image in, Gaussians and their files out.

    from diffusiongs.inference import Pipeline, write_outputs
    pipeline = Pipeline.from_pretrained()          # the shipped demo model, or a model folder / official .ckpt
    result = pipeline("photo.png")                 # or a PIL image, or an HxWx3/HxWx4 array
    write_outputs(pipeline, result, "outputs/photo")
    scene = pipeline.generate_scene("room.jpg", SceneCameraConfig(trajectory="orbit"))   # scene models

Modules:
    preprocess  reading inputs (paths, PIL images, arrays), EXIF orientation, framing the object
    segment     background removal for RGB inputs (u2netp through onnxruntime, or a border-colour fill)
    pipeline    the Pipeline: sampling, the export filter
    graphed     a sampling step's prediction as one CUDA graph (``compile=True`` on CUDA)
    scene       scene cameras: named trajectories, RealEstate10K camera files, the scene frame, the fly-through path
    media       turntable and fly-through renders, videos, image rows
    outputs     gaussians.ply, views.png, turntable.mp4/.gif (scenes: flythrough.mp4/.gif) and meta.json
"""

from diffusiongs.diffusion import ProgressCallback, SamplerConfig
from diffusiongs.inference.outputs import OutputConfig, write_outputs
from diffusiongs.inference.pipeline import (
    DEFAULT_MODEL_DIR,
    ExportFilter,
    GenerateConfig,
    GenerationResult,
    Pipeline,
)
from diffusiongs.inference.preprocess import ConditionImage, ImageInput, PreprocessConfig, prepare_condition_image
from diffusiongs.inference.scene import SceneCameraConfig, ScenePath

__all__ = [
    "DEFAULT_MODEL_DIR", "ConditionImage", "ExportFilter", "GenerateConfig", "GenerationResult", "ImageInput",
    "OutputConfig", "Pipeline", "PreprocessConfig", "ProgressCallback", "SamplerConfig", "SceneCameraConfig",
    "ScenePath", "prepare_condition_image", "write_outputs",
]
