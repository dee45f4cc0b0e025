"""The interface every dataset reader implements, so that the training datasets work with any of them.

A reader knows one on-disk layout (ours, G-Objaverse, RealEstate10K, MVImgNet, COLMAP scenes) and converts it into
the conventions of docs/conventions.md. Cameras are cheap to get (view selection needs them for every sample);
images are decoded only for the views asked for.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from diffusiongs.data.types import Domain, MultiViewExample
from diffusiongs.geometry.camera import Cameras


class MultiViewReader(Protocol):
    """A list of multi-view items (objects or scenes) in one layout."""

    domain: Domain
    """``"object"`` or ``"scene"``: every item of a reader belongs to one domain."""

    def __len__(self) -> int: ...

    def item_id(self, index: int) -> str:
        """A stable identifier of item ``index``."""
        ...

    def cameras(self, index: int) -> Cameras:
        """All cameras of item ``index`` (batch shape ``[view]``), without decoding images."""
        ...

    def load(self, index: int, views: Sequence[int] | None = None) -> MultiViewExample:
        """Item ``index`` with the views ``views`` (all when None), in that order.

        Raises:
            InputError: the item's files are missing or broken.
        """
        ...
