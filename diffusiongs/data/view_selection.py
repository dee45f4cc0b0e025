"""Choosing the views of one training sample: one condition view, N noisy views, M novel views (reference §4.1).

Modes:

* ``"constrained"`` (the paper): with camera centres ``p`` and forward axes ``z``,

  - position:     angle(p_cond, p_noisy_i) <= theta1 for every i, and angle(p_noisy_i, p_novel_j) <= theta2 for
    every pair (i, j) (angles between the centres as seen from the world origin);
  - orientation:  cos angle(z_cond, z_noisy_i) >= cos phi1 and cos angle(z_cond, z_novel_j) >= cos phi2.

  The search visits condition views in random order and, for each, the N-subsets of its admissible noisy views
  (in a random order) until one leaves at least M admissible novel views, from which M are drawn. It checks up to
  ``max_checks`` (condition, noisy set) pairs, which covers every pair for typical 32-view objects: when a valid set
  exists it is found.
* ``"orbit"`` (the official code): the condition view and N noisy views evenly spaced in azimuth around the world
  z axis (N = 3: 90 degrees apart), each the available view closest to its target azimuth at the condition view's
  elevation; M novel views at random among the rest.
* ``"random"``: 1 + N + M distinct views uniformly at random (ablations; the official scene loader).

**Fallback.** When the constrained search finds no valid set (or orbit views miss their targets by more than
``orbit_tolerance_deg``), the selection is still returned, marked ``satisfied=False``: for "constrained", a random
condition view, its N nearest views by position angle as the noisy views, and as novel views the M remaining views
whose largest position angle to the noisy views is smallest; for "orbit", the nearest views found. Training goes on
with the closest valid-looking sample rather than skipping the item.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

from diffusiongs.errors import InputError
from diffusiongs.geometry.camera import Cameras

ViewSelectionMode = Literal["constrained", "orbit", "random"]


@dataclass(frozen=True)
class ViewSelectionConfig:
    """How a sample's views are chosen.

    The angle defaults are **unverified guesses** (a third-party re-implementation's values): the paper's
    theta1/theta2/phi1/phi2 are not retrievable (reference §4.1).
    """

    mode: ViewSelectionMode = "constrained"
    """``constrained`` (paper angle constraints), ``orbit`` (official code: evenly spaced azimuths) or ``random``."""
    theta1_deg: float = 45.0
    """Largest angle between the condition and a noisy camera position, seen from the origin (unverified)."""
    theta2_deg: float = 60.0
    """Largest angle between any noisy and any novel camera position, seen from the origin (unverified)."""
    phi1_deg: float = 60.0
    """Largest angle between the condition and a noisy camera's forward axis (unverified)."""
    phi2_deg: float = 75.0
    """Largest angle between the condition and a novel camera's forward axis (unverified)."""
    max_checks: int = 4000
    """(condition, noisy set) pairs the constrained search may check before falling back."""
    orbit_tolerance_deg: float = 15.0
    """Orbit mode: largest miss in azimuth or elevation for a selection to count as satisfied."""


@dataclass(frozen=True)
class ViewSelection:
    """Indices ordered [condition | N noisy | M novel], and whether they meet the mode's constraints."""

    indices: list[int]
    satisfied: bool


def select_views(cameras: Cameras, num_noisy: int, num_novel: int, config: ViewSelectionConfig,
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
    if config.mode == "random":
        return ViewSelection(rng.choice(total, size=needed, replace=False).tolist(), True)
    if config.mode == "orbit":
        return _orbit(centers, num_noisy, num_novel, config, rng)
    return _constrained(centers, forwards, num_noisy, num_novel, config, rng)


def _cosines(vectors: np.ndarray) -> np.ndarray:
    """Pairwise cosines of the angles between the rows (a zero row has cosine 0 with everything)."""
    unit = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    return np.clip(unit @ unit.T, -1.0, 1.0)


def _constrained(centers: np.ndarray, forwards: np.ndarray, num_noisy: int, num_novel: int,
                 config: ViewSelectionConfig, rng: np.random.Generator) -> ViewSelection:
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
            if checks > config.max_checks:
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


def _orbit(centers: np.ndarray, num_noisy: int, num_novel: int, config: ViewSelectionConfig,
           rng: np.random.Generator) -> ViewSelection:
    total = len(centers)
    azimuth = np.degrees(np.arctan2(centers[:, 1], centers[:, 0]))
    elevation = np.degrees(np.arctan2(centers[:, 2], np.linalg.norm(centers[:, :2], axis=1)))
    cond = int(rng.integers(total))
    chosen, worst_miss = [cond], 0.0
    for k in range(1, num_noisy + 1):
        target = azimuth[cond] + k * 360.0 / (num_noisy + 1)
        azimuth_miss = np.abs((azimuth - target + 180.0) % 360.0 - 180.0)
        miss = np.maximum(azimuth_miss, np.abs(elevation - elevation[cond]))
        miss[chosen] = np.inf
        best = int(np.argmin(miss))
        chosen.append(best)
        worst_miss = max(worst_miss, float(miss[best]))
    rest = np.setdiff1d(np.arange(total), chosen)
    novel = rng.choice(rest, size=num_novel, replace=False).tolist()
    return ViewSelection(chosen + novel, worst_miss <= config.orbit_tolerance_deg)

