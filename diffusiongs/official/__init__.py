"""Loading the released Open-DiffusionGS checkpoints (docs/official.md): safe reading, key mapping, cameras."""

from diffusiongs.official.cameras import (
    TemplateFit,
    builtin_camera_template,
    fit_camera_template,
    load_camera_template,
)
from diffusiongs.official.convert import (
    ConversionReport,
    convert_official,
    convert_official_checkpoint,
    load_official_checkpoint,
)
from diffusiongs.official.safe_load import read_torch_file

__all__ = [
    "ConversionReport", "TemplateFit", "builtin_camera_template", "convert_official", "convert_official_checkpoint",
    "fit_camera_template", "load_camera_template", "load_official_checkpoint", "read_torch_file",
]
