"""Linear maps between the official network's input/output channels and ours, folded into converted weights.

Two differences are folded, both exactly (they are linear in the pixel vector and in the raw outputs):

* **Ray channel order.** The official "relative_plk" embedding is ``[d, p_ref]`` after RGB, ours ``rppc()`` is
  ``[p_ref, d]``; Plücker is ``[o x d, d]`` on both sides.
* **World frame.** With official = A ours (A orthogonal, possibly a reflection; ``diffusiongs.official.cameras``),
  the official network sees ``p_ref' = A p_ref``, ``d' = A d`` and the moment ``(A o) x (A d) = det(A) A (o x d)``.
  Its outputs live in the official world: a covariance ``R' S^2 R'^T`` is ``A^T R' S^2 R'^T A`` in ours, so the
  Gaussian's rotation becomes ``B R'`` with the proper rotation ``B = det(A) A^T`` (flipping all three axes of an
  ellipsoid changes nothing), i.e. the quaternion ``q -> q_B ⊗ q``; free (global) Gaussian centres map by ``A^T``.
  Pixel-aligned centres need nothing: the depth along a ray is frame-independent and our decoder places the
  Gaussian on our ray.
"""

from __future__ import annotations

import torch
from jaxtyping import Float
from torch import Tensor

from diffusiongs.gaussians.layout import GAUSSIAN_CHANNELS, GAUSSIAN_LAYOUT
from diffusiongs.geometry import RayEmbedding
from diffusiongs.model.denoiser import RAY_CHANNELS, RGB_CHANNELS

PIXEL_CHANNELS = RGB_CHANNELS + RAY_CHANNELS
_FIRST = slice(RGB_CHANNELS, RGB_CHANNELS + 3)
"""Channels of the first 3-vector of a ray embedding (after RGB)."""
_SECOND = slice(RGB_CHANNELS + 3, PIXEL_CHANNELS)
"""Channels of the second 3-vector."""


def official_pixel_from_ours(embedding: RayEmbedding, official_from_ours: Float[Tensor, "3 3"]
                             ) -> Float[Tensor, "9 9"]:
    """M with ``official_pixel = M @ our_pixel`` for one pixel's ``[rgb | ray embedding]`` vector (float64)."""
    A = official_from_ours.double()
    M = torch.zeros(PIXEL_CHANNELS, PIXEL_CHANNELS, dtype=torch.float64)
    M[:RGB_CHANNELS, :RGB_CHANNELS] = torch.eye(RGB_CHANNELS)
    if embedding == "rppc":  # ours [p_ref, d] -> official [d', p_ref']
        M[_FIRST, _SECOND] = A
        M[_SECOND, _FIRST] = A
    else:  # [m, d] on both sides; the moment is a pseudovector
        M[_FIRST, _FIRST] = torch.linalg.det(A) * A
        M[_SECOND, _SECOND] = A
    return M


def quaternion_of(rotation: Float[Tensor, "3 3"]) -> Float[Tensor, "4"]:
    """Unit quaternion (w, x, y, z) of a proper rotation matrix.

    The entries of R give every product ``4 q_i q_j`` (the matrix ``P = 4 q q^T``); the row of the largest diagonal
    entry divided by ``2 sqrt(P_ii) = 4 |q_i|`` is q up to sign, without ill-conditioned divisions (Shepperd).
    """
    m = rotation.double()
    trace = m.trace()
    w_x, w_y, w_z = m[2, 1] - m[1, 2], m[0, 2] - m[2, 0], m[1, 0] - m[0, 1]
    x_y, x_z, y_z = m[0, 1] + m[1, 0], m[0, 2] + m[2, 0], m[1, 2] + m[2, 1]
    P = torch.stack([torch.stack([1 + trace, w_x, w_y, w_z]),
                     torch.stack([w_x, 1 + 2 * m[0, 0] - trace, x_y, x_z]),
                     torch.stack([w_y, x_y, 1 + 2 * m[1, 1] - trace, y_z]),
                     torch.stack([w_z, x_z, y_z, 1 + 2 * m[2, 2] - trace])])
    i = int(P.diagonal().argmax())
    return P[i] / (2 * P[i, i].sqrt())


def left_multiplication(p: Float[Tensor, "4"]) -> Float[Tensor, "4 4"]:
    """The matrix of q -> p ⊗ q (Hamilton product, (w, x, y, z)); R(p ⊗ q) = R(p) R(q)."""
    w, x, y, z = p.unbind()
    return torch.stack([torch.stack([w, -x, -y, -z]), torch.stack([x, w, -z, y]),
                        torch.stack([y, z, w, -x]), torch.stack([z, -y, x, w])])


def our_raw_from_official(official_from_ours: Float[Tensor, "3 3"], free: bool) -> Float[Tensor, "14 14"]:
    """U with ``our_raw = U @ official_raw`` for one Gaussian's 14 raw channels (float64).

    Args:
        free: a global Gaussian, whose position channels are its centre; for pixel-aligned Gaussians they only
            choose a depth and stay as they are.
    """
    A = official_from_ours.double()
    U = torch.eye(GAUSSIAN_CHANNELS, dtype=torch.float64)
    rotation = GAUSSIAN_LAYOUT.rotation
    U[rotation, rotation] = left_multiplication(quaternion_of(torch.linalg.det(A) * A.T))
    if free:
        U[GAUSSIAN_LAYOUT.position, GAUSSIAN_LAYOUT.position] = A.T
    return U


def fold_into_tokenizer(weight: Float[Tensor, "d p*p*9"], pixel_map: Float[Tensor, "9 9"]) -> Float[Tensor, "d p*p*9"]:
    """Tokenizer weights acting on our pixel vectors: ``W_ours = W_official (I_{p*p} ⊗ M)`` (features ordered
    (row, column, channel) on both sides)."""
    d = weight.shape[0]
    folded = torch.einsum("dkc,cj->dkj", weight.double().reshape(d, -1, PIXEL_CHANNELS), pixel_map)
    return folded.reshape(d, -1).to(weight.dtype)


def fold_into_head(weight: Float[Tensor, "k*14 d"], raw_map: Float[Tensor, "14 14"]) -> Float[Tensor, "k*14 d"]:
    """Bias-free output weights producing our raw channels: each Gaussian's 14 rows become ``U W_official``."""
    d = weight.shape[1]
    folded = torch.einsum("ij,kjd->kid", raw_map, weight.double().reshape(-1, GAUSSIAN_CHANNELS, d))
    return folded.reshape(-1, d).to(weight.dtype)
