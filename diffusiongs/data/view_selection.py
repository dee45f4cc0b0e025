"""Choosing the views of one training sample: one condition view, N noisy views, M novel views (reference §4.1),
under the model's view layout (:class:`~diffusiongs.geometry.layout.ViewLayout`, which owns the modes).

* ``"orbit"``: the condition view and the N views of its orbit rig (the condition camera turned about z by
  360 k / (N + 1) degrees). The condition is drawn among the views whose whole rig exists in the item, within
  ``EXACT_TOLERANCE_DEG``: datasets rendered with rings of evenly spaced azimuths (``data synth|render``'s default
  ``--view-sampling rings``, G-Objaverse's 24-view ring) have them, so training sees exactly the inference layout.
  Items without any (e.g. 32 random views) fall back to the nearest views, marked ``satisfied=False``.
* ``"constrained"``: with camera centres ``p`` and forward axes ``z``,

  - position:     angle(p_cond, p_noisy_i) <= theta1 for every i, and angle(p_noisy_i, p_novel_j) <= theta2 for
    every pair (i, j) (angles between the centres as seen from the world origin);
  - orientation:  cos angle(z_cond, z_noisy_i) >= cos phi1 and cos angle(z_cond, z_novel_j) >= cos phi2.

  The search visits condition views in random order and, for each, the N-subsets of its admissible noisy views
  (in a random order) until one leaves at least M admissible novel views, from which M are drawn. It checks up to
  ``MAX_CHECKS`` (condition, noisy set) pairs, which covers every pair for typical 32-view objects: when a valid set
  exists it is found. When none does, the fallback is a random condition view, its N nearest views by position
  angle as the noisy views, and as novel views the M remaining views whose largest position angle to the noisy
  views is smallest (``satisfied=False``).
* ``"random"``: 1 + N + M distinct views uniformly at random.

In the orbit and constrained modes the M novel views are drawn among the rest (constrained: among the admissible
ones). Training goes on with the closest valid-looking sample rather than skipping an item that has no valid set.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np
import torch

from diffusiongs.errors import InputError
from diffusiongs.geometry.camera import Cameras
from diffusiongs.geometry.layout import ViewLayout

MAX_CHECKS = 4000
"""Constrained mode: (condition, noisy set) pairs the search may check before falling back."""
EXACT_TOLERANCE_DEG = 0.5
"""Orbit mode: a view stands for a rig view when their centres are this close, seen from the origin (and their
distances agree to 1 %)."""


@dataclass(frozen=True)
class ViewSelection:
    """Indices ordered [condition | N noisy | M novel], and whether they meet the layout's constraints."""

    indices: list[int]
    satisfied: bool


def select_views(cameras: Cameras, num_noisy: int, num_novel: int, layout: ViewLayout,
                 rng: np.random.Generator) -> ViewSelection:
    """Choose 1 + ``num_noisy`` + ``num_novel`` distinct views of one item (cameras of batch shape ``[view]``).

    Raises:
        InputError: the item has fewer views than that.
    """
    total = cameras.batch_shape[0]
    needed = 1 + num_noisy + num_novel
    if total < needed:
        raise InputError(f"view selection: the item has {total} views, a sample needs {needed}")
    centers = cameras.centers.double().numpy()
    forwards = cameras.forward.double().numpy()
    if layout.mode == "random":
        return ViewSelection(rng.choice(total, size=needed, replace=False).tolist(), True)
    if layout.mode == "orbit":
        return _orbit(centers, num_noisy, num_novel, layout, rng)
    return _constrained(centers, forwards, num_noisy, num_novel, layout, rng)


def _unit(vectors: np.ndarray) -> np.ndarray:
    return vectors / np.maximum(np.linalg.norm(vectors, axis=-1, keepdims=True), 1e-12)


def _rig_cosines(centers: np.ndarray, num_noisy: int, layout: ViewLayout, same_distance_only: bool = True
                 ) -> np.ndarray:
    """``[view c, N, view w]``: cosine of the angle between view w's centre and rig view k of condition c, -inf
    where w is c itself or (``same_distance_only``) the distances differ by more than 1 %."""
    if layout.mode == "constrained":  # its rig turns about an axis that depends on the condition camera
        raise ValueError("_rig_cosines: the constrained layout's rig differs per condition view")
    rotations = layout.rotations(torch.from_numpy(centers[0]), num_noisy)[1:].numpy()  # orbit/random: any centre
    unit = _unit(centers)
    cosines = np.einsum("kij,vj,wi->vkw", rotations, unit, unit)
    if same_distance_only:
        radius = np.linalg.norm(centers, axis=1)
        same_distance = np.abs(radius[None, :] / np.maximum(radius[:, None], 1e-12) - 1.0) <= 0.01
        cosines = np.where(same_distance[:, None, :], cosines, -np.inf)
    views = np.arange(len(centers))
    cosines[views, :, views] = -np.inf
    return cosines


def orbit_partners(centers: np.ndarray, num_noisy: int, layout: ViewLayout) -> tuple[np.ndarray, np.ndarray]:
    """For every view taken as the condition, the views nearest to its N orbit-rig views and how far they miss.

    Returns:
        partners: ``[view, N]`` view indices (never the condition itself).
        miss_deg: ``[view, N]`` angle between each partner's centre and the rig view's, seen from the origin
            (infinite where no view has the condition's distance).
    """
    cosines = _rig_cosines(centers, num_noisy, layout)
    partners = np.argmax(cosines, axis=2)
    best = np.take_along_axis(cosines, partners[..., None], axis=2)[..., 0]
    miss = np.where(np.isfinite(best), np.degrees(np.arccos(np.clip(best, -1.0, 1.0))), np.inf)
    return partners, miss


def exact_orbit_conditions(centers: np.ndarray, num_noisy: int, layout: ViewLayout
                            ) -> tuple[np.ndarray, np.ndarray]:
    """The views whose orbit rig is among the other views (every rig view matched within
    :data:`EXACT_TOLERANCE_DEG` by a distinct view), and every view's ``[view, N]`` partners."""
    partners, miss = orbit_partners(centers, num_noisy, layout)
    distinct = np.array([len(set(row)) == num_noisy for row in partners.tolist()])
    return np.flatnonzero((miss <= EXACT_TOLERANCE_DEG).all(1) & distinct), partners


def holds_orbit_rig(cameras: Cameras, num_noisy: int, layout: ViewLayout) -> bool:
    """Whether some view of an item, taken as the condition, has its exact orbit rig among the item's views."""
    return len(exact_orbit_conditions(cameras.centers.double().numpy(), num_noisy, layout)[0]) > 0


def _orbit(centers: np.ndarray, num_noisy: int, num_novel: int, layout: ViewLayout,
           rng: np.random.Generator) -> ViewSelection:
    exact, partners = exact_orbit_conditions(centers, num_noisy, layout)
    satisfied = len(exact) > 0
    if satisfied:
        cond = int(rng.choice(exact))
        noisy = partners[cond].tolist()
    else:
        cond = int(rng.integers(len(centers)))
        noisy = _nearest_distinct(_rig_cosines(centers, num_noisy, layout, same_distance_only=False)[cond])
    chosen = [cond, *noisy]
    rest = np.setdiff1d(np.arange(len(centers)), chosen)
    novel = rng.choice(rest, size=num_novel, replace=False).tolist()
    return ViewSelection(chosen + novel, satisfied)


def _nearest_distinct(cosines: np.ndarray) -> list[int]:
    """For each rig view (rows of ``cosines`` ``[N, view]``), the nearest view not taken by a closer match."""
    picks: dict[int, int] = {}
    taken: set[int] = set()
    for k in np.argsort(-cosines.max(1), kind="stable"):  # the best-matched rig views choose first
        order = np.argsort(-cosines[k], kind="stable")
        picks[int(k)] = next(int(w) for w in order if int(w) not in taken and cosines[k, w] > -np.inf)
        taken.add(picks[int(k)])
    return [picks[k] for k in range(len(cosines))]


def _cosines(vectors: np.ndarray) -> np.ndarray:
    """Pairwise cosines of the angles between the rows (a zero row has cosine 0 with everything)."""
    unit = _unit(vectors)
    return np.clip(unit @ unit.T, -1.0, 1.0)


def _constrained(centers: np.ndarray, forwards: np.ndarray, num_noisy: int, num_novel: int,
                 config: ViewLayout, rng: np.random.Generator) -> ViewSelection:
    total = len(centers)
    position = _cosines(centers)
    orientation = _cosines(forwards)
    not_self = ~np.eye(total, dtype=bool)
    # Tolerance on the cosines so that a camera exactly at the limit angle counts as admissible.
    eps = 1e-9
    noisy_ok = (position >= math.cos(math.radians(config.theta1_deg)) - eps) \
        & (orientation >= math.cos(math.radians(config.phi1_deg)) - eps) & not_self
    novel_near = position >= math.cos(math.radians(config.theta2_deg)) - eps
    novel_facing = (orientation >= math.cos(math.radians(config.phi2_deg)) - eps) & not_self
    checks = 0
    for cond in rng.permutation(np.flatnonzero(noisy_ok.sum(1) >= num_noisy)):
        for noisy in itertools.combinations(rng.permutation(np.flatnonzero(noisy_ok[cond])), num_noisy):
            checks += 1
            if checks > MAX_CHECKS:
                return _nearest_fallback(position, num_noisy, num_novel, rng)
            novel_ok = novel_facing[cond] & novel_near[list(noisy)].all(0)
            novel_ok[list(noisy)] = False
            candidates = np.flatnonzero(novel_ok)
            if len(candidates) >= num_novel:
                novel = rng.choice(candidates, size=num_novel, replace=False)
                return ViewSelection([int(cond), *map(int, noisy), *novel.tolist()], True)
    return _nearest_fallback(position, num_noisy, num_novel, rng)


def _nearest_fallback(position: np.ndarray, num_noisy: int, num_novel: int, rng: np.random.Generator
                      ) -> ViewSelection:
    total = len(position)
    cond = int(rng.integers(total))
    order = [int(i) for i in np.argsort(-position[cond], kind="stable") if i != cond]
    noisy = order[:num_noisy]
    rest = np.array(order[num_noisy:])
    worst = position[np.ix_(noisy, rest)].min(0) if num_noisy else np.zeros(len(rest))
    novel = rest[np.argsort(-worst, kind="stable")[:num_novel]]
    return ViewSelection([cond, *noisy, *novel.tolist()], False)
