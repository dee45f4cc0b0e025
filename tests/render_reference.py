"""A dense brute-force Gaussian renderer in float64: the independent reference the render tests compare against.

Every Gaussian is evaluated at every pixel, with no tiles, boxes or packing; Gaussians are sorted by depth and
composited by a literal front-to-back loop. It applies the rules the renderer promises (gsplat's classic mode):
near/far culling of centres, EWA covariance with the field-of-view clamp in the Jacobian, eps2d blur, opacity and
determinant culling, alpha = min(0.999, o exp(-d'Σ'^-1 d / 2)), alpha < 1/255 skipped, stop before the Gaussian
that would take the transmittance to 1e-4 or below. Written apart from ``diffusiongs.render`` on purpose: it shares
no code with it beyond the input types.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor

from diffusiongs.gaussians import Gaussians
from diffusiongs.geometry import Cameras


@contextmanager
def one_thread() -> Iterator[None]:
    """Run torch on one thread: the reference's many small ops are fastest so, and they do not stall when other
    processes load the cores (wrap its backward pass too)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _rotation(quats: Tensor) -> Tensor:
    """R = (w² - v.v) I + 2 v vᵀ + 2 w [v]x for the normalised quaternion (w, v)."""
    q = quats / quats.norm(dim=-1, keepdim=True)
    w, v = q[..., :1, None], q[..., 1:]
    eye = torch.eye(3, dtype=q.dtype)
    vx, vy, vz = v.unbind(-1)
    zero = torch.zeros_like(vx)
    cross = torch.stack([zero, -vz, vy, vz, zero, -vx, -vy, vx, zero], -1).reshape(*v.shape[:-1], 3, 3)
    return (w * w - (v * v).sum(-1)[..., None, None]) * eye + 2 * v[..., :, None] * v[..., None, :] + 2 * w * cross


def _render_image(g: Gaussians, w2c: Tensor, K: Tensor, width: int, height: int, background: Tensor,
                  near: float, far: float, eps2d: float) -> tuple[Tensor, Tensor, Tensor]:
    cam = g.means @ w2c[:3, :3].T + w2c[:3, 3]
    z = cam[:, 2]
    keep = (z >= near) & (z <= far) & (g.opacities >= 1 / 255)
    cam, z = cam[keep], z[keep]
    rot = _rotation(g.quats[keep])
    cov_world = rot @ torch.diag_embed(g.scales[keep] ** 2) @ rot.transpose(-1, -2)
    cov_cam = w2c[:3, :3] @ cov_world @ w2c[:3, :3].T

    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    # d(fx X/Z + cx, fy Y/Z + cy)/d(X, Y, Z) at the centre, with X/Z and Y/Z limited to 1.3 x the half field of view
    # (measured from the principal point) so that far off-screen Gaussians stay bounded.
    u = (cam[:, 0] / z).clamp(-(cx + 0.15 * width) / fx, (width - cx + 0.15 * width) / fx)
    v = (cam[:, 1] / z).clamp(-(cy + 0.15 * height) / fy, (height - cy + 0.15 * height) / fy)
    jac = torch.zeros(len(z), 2, 3, dtype=z.dtype)
    jac[:, 0, 0] = fx / z
    jac[:, 0, 2] = -fx * u / z
    jac[:, 1, 1] = fy / z
    jac[:, 1, 2] = -fy * v / z
    cov2d = jac @ cov_cam @ jac.transpose(-1, -2) + eps2d * torch.eye(2, dtype=z.dtype)
    ok = torch.linalg.det(cov2d) > 0
    precision = torch.linalg.inv(cov2d[ok])
    centre = torch.stack([fx * cam[ok, 0] / z[ok] + cx, fy * cam[ok, 1] / z[ok] + cy], -1)

    ys, xs = torch.meshgrid(torch.arange(height, dtype=z.dtype) + 0.5, torch.arange(width, dtype=z.dtype) + 0.5,
                            indexing="ij")
    delta = torch.stack([xs.reshape(-1), ys.reshape(-1)], -1)[None] - centre[:, None]  # [n, pixels, 2]
    power = 0.5 * torch.einsum("npi,nij,npj->np", delta, precision, delta)
    opacity = g.opacities[keep][ok]
    alpha = torch.minimum(opacity[:, None] * torch.exp(-power), torch.tensor(0.999, dtype=z.dtype))
    features = torch.cat([g.colors[keep][ok], z[ok, None]], -1)

    trans = torch.ones(height * width, dtype=z.dtype)
    acc = torch.zeros(height * width, 4, dtype=z.dtype)
    done = torch.zeros(height * width, dtype=torch.bool)
    for k in torch.argsort(z[ok].float(), stable=True).tolist():
        counts = ~done & (power[k] >= 0) & (alpha[k] >= 1 / 255)
        after = trans * (1 - alpha[k])
        stops = counts & (after <= 1e-4)
        done = done | stops
        used = counts & ~stops
        acc = acc + torch.where(used, alpha[k] * trans, 0.0)[:, None] * features[k]
        trans = torch.where(used, after, trans)
    acc_alpha = 1 - trans
    rgb = acc[:, :3] + trans[:, None] * background
    depth = acc[:, 3] / acc_alpha.clamp(min=1e-10)
    shape = (height, width)
    return rgb.T.reshape(3, *shape), acc_alpha.reshape(1, *shape), depth.reshape(1, *shape)


def reference_render(gaussians: Gaussians, cameras: Cameras, background: Tensor, near: float = 0.01,
                     far: float = 100.0, eps2d: float = 0.3) -> tuple[Tensor, Tensor, Tensor]:
    """(rgb, alpha, depth), each ``[b, v, c, h, w]`` in float64, for Gaussians ``[b, N]`` and cameras ``[b, v]``;
    ``background`` is ``[3]`` or per view ``[b, v, 3]``. Differentiable w.r.t. the Gaussians and the background."""
    g = gaussians.to(dtype=torch.float64)
    # World-to-camera of the rigid c2w = [R | t] (docs/conventions.md): [R^T | -R^T t]. A float32 rotation is
    # orthonormal only to rounding, and a general inverse would differ from this by that much.
    c2w = cameras.c2w.double()
    rot_t = c2w[..., :3, :3].transpose(-1, -2)
    w2c = torch.cat([rot_t, -rot_t @ c2w[..., :3, 3:]], dim=-1)
    K = cameras.K.double()
    background = background.double().expand(*cameras.batch_shape, 3)
    with one_thread():
        images = [[_render_image(g[b], w2c[b, v], K[b, v], cameras.width, cameras.height, background[b, v], near,
                                 far, eps2d) for v in range(cameras.batch_shape[1])]
                  for b in range(cameras.batch_shape[0])]
    return tuple(torch.stack([torch.stack([view[i] for view in row]) for row in images]) for i in range(3))
