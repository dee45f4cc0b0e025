"""The standard 3DGS PLY layout (graphdeco), the only place that knows its attribute names.

Per vertex, little-endian float32: ``x y z nx ny nz f_dc_0..2 f_rest_0..(3*(K-1)-1) opacity scale_0..2 rot_0..3``
with opacity as a logit, scales as logs, rotations as (w, x, y, z) and colour as the SH degree-0 coefficient
(rgb = SH_C0 f_dc + 0.5). ``f_rest`` is zero-padded to SH degree 3 (45 values) by default, which every common
3DGS viewer opens.

Files are written in this package's z-up world by default; ``up="y"`` rotates them into the y-up frame that most
viewers assume (a rotation, not a mirror: handedness is kept).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from diffusiongs.errors import InputError
from diffusiongs.gaussians.container import SH_C0, Gaussians

UpAxis = Literal["z", "y"]

Y_UP_ROTATION = (math.sqrt(0.5), -math.sqrt(0.5), 0.0, 0.0)
"""-90 degrees about x as a (w, x, y, z) quaternion: (x, y, z) -> (x, z, -y), z-up to y-up."""

_OPACITY_EPS = 1e-6
_SCALE_EPS = 1e-12


class PlyFormatError(InputError):
    """A file that is not a 3DGS PLY this reader understands."""


def _attribute_names(num_rest: int) -> list[str]:
    return (["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
            + [f"f_rest_{i}" for i in range(num_rest)]
            + ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"])


def save_ply(gaussians: Gaussians, path: str | Path, sh_degree: int = 3, up: UpAxis = "z") -> Path:
    """Write one unbatched set of Gaussians (``[N, ...]``) as a 3DGS PLY, atomically.

    Args:
        sh_degree: the SH degree the file declares; higher-order coefficients are written as zeros.
        up: the world axis that points up in the file: ``z`` (this package's object world, as given) or ``y``
            (rotated by :data:`Y_UP_ROTATION`).
    """
    if gaussians.batch_shape:
        raise ValueError(f"save_ply writes one set of Gaussians, got batch shape {tuple(gaussians.batch_shape)}")
    g = gaussians.detach().float().to("cpu")
    if up == "y":
        g = g.rotated(torch.tensor(Y_UP_ROTATION))
    n = g.num_gaussians
    num_rest = 3 * ((sh_degree + 1) ** 2 - 1)
    opacity = g.opacities.clamp(_OPACITY_EPS, 1 - _OPACITY_EPS)
    columns = [g.means, torch.zeros(n, 3), (g.colors - 0.5) / SH_C0, torch.zeros(n, num_rest),
               torch.logit(opacity)[:, None], torch.log(g.scales.clamp_min(_SCALE_EPS)),
               torch.nn.functional.normalize(g.quats, dim=-1)]
    data = torch.cat(columns, dim=1).numpy().astype("<f4")
    names = _attribute_names(num_rest)
    header = "ply\nformat binary_little_endian 1.0\n" f"element vertex {n}\n" \
        + "".join(f"property float {name}\n" for name in names) + "end_header\n"
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(header.encode("ascii"))
        f.write(np.ascontiguousarray(data).tobytes())
    os.replace(tmp, path)
    return path


_PLY_TYPES = {"float": "f4", "float32": "f4", "double": "f8", "float64": "f8", "uchar": "u1", "uint8": "u1",
              "char": "i1", "int8": "i1", "ushort": "u2", "uint16": "u2", "short": "i2", "int16": "i2",
              "uint": "u4", "uint32": "u4", "int": "i4", "int32": "i4"}


def _read_header(f, path: Path) -> tuple[int, list[tuple[str, str]], str]:
    if f.readline().strip() != b"ply":
        raise PlyFormatError(f"{path}: not a PLY file (no 'ply' magic line)")
    count, props, endian, in_vertex = None, [], None, False
    while True:
        line = f.readline()
        if not line:
            raise PlyFormatError(f"{path}: header ends before 'end_header'")
        words = line.decode("ascii", errors="replace").split()
        if not words or words[0] in ("comment", "obj_info"):
            continue
        if words[0] == "end_header":
            break
        if words[0] == "format":
            endian = {"binary_little_endian": "<", "binary_big_endian": ">"}.get(words[1])
            if endian is None:
                raise PlyFormatError(f"{path}: format '{words[1]}' is not supported (binary PLY only)")
        elif words[0] == "element":
            in_vertex = words[1] == "vertex"
            if in_vertex:
                count = int(words[2])
            elif count is not None:
                break  # vertex data comes first; later elements are not needed
        elif words[0] == "property" and in_vertex:
            if words[1] == "list":
                raise PlyFormatError(f"{path}: list properties in the vertex element are not supported")
            if words[1] not in _PLY_TYPES:
                raise PlyFormatError(f"{path}: unknown property type '{words[1]}'")
            props.append((words[2], _PLY_TYPES[words[1]]))
    if count is None or endian is None:
        raise PlyFormatError(f"{path}: no vertex element or no binary format line")
    # Skip to the data if we stopped at a later element's line.
    while not line.startswith(b"end_header"):
        line = f.readline()
        if not line:
            raise PlyFormatError(f"{path}: header ends before 'end_header'")
    return count, props, endian


def load_ply(path: str | Path) -> Gaussians:
    """Read a 3DGS PLY written by :func:`save_ply` or by graphdeco-style trainers (SH degree 0 is used)."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            count, props, endian = _read_header(f, path)
            dtype = np.dtype([(name, endian + kind) for name, kind in props])
            data = np.fromfile(f, dtype=dtype, count=count)
    except OSError as err:
        raise PlyFormatError(f"{path}: cannot read ({err.strerror})") from None
    if len(data) != count:
        raise PlyFormatError(f"{path}: header declares {count} vertices, file holds {len(data)}")
    required = [n for n in _attribute_names(0) if n not in ("nx", "ny", "nz")]
    missing = [n for n in required if n not in data.dtype.names]
    if missing:
        raise PlyFormatError(f"{path}: missing 3DGS attributes {missing}")

    def cols(*names: str) -> torch.Tensor:
        return torch.from_numpy(np.stack([data[n].astype(np.float32) for n in names], axis=-1))

    return Gaussians(
        means=cols("x", "y", "z"),
        quats=torch.nn.functional.normalize(cols("rot_0", "rot_1", "rot_2", "rot_3"), dim=-1),
        scales=torch.exp(cols("scale_0", "scale_1", "scale_2")),
        opacities=torch.sigmoid(cols("opacity")[:, 0]),
        colors=torch.clamp(SH_C0 * cols("f_dc_0", "f_dc_1", "f_dc_2") + 0.5, min=0.0),
    )
