"""The random spatial transform A of the method, applied identically to images and CAMs.

A :class:`SpatialTransform` is a frozen value: draw it once per batch with
:func:`sample_transform`, then apply the *same* A to every modality's images and to the CAMs
with :func:`apply_transform`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.nn import functional as F

KINDS = ("hflip", "vflip", "rot90", "rot180", "rot270", "translate", "rescale")


@dataclass(frozen=True)
class SpatialTransform:
    """One spatial transform.

    Attributes
    ----------
    kind
        One of :data:`KINDS`.
    shift
        ``(dy, dx)`` as fractions of the height and width (``translate`` only).
    size
        Output side in pixels (``rescale`` only).
    """

    kind: str
    shift: tuple[float, float] = (0.0, 0.0)
    size: int | None = None


FAMILIES = ("flip", "rotation", "translation", "rescale")


def sample_transform(
    generator: torch.Generator,
    input_size: int,
    *,
    max_shift: float = 0.3,
    scale_range: tuple[float, float] = (0.8, 1.2),
) -> SpatialTransform:
    """Draw A as the method's authors do: one of :data:`FAMILIES` uniformly, then its parameters.

    A flip is horizontal or vertical, a rotation 90, 180 or 270 degrees, a translation up to
    ``max_shift`` of the side in y and x, a rescale a side in ``scale_range`` x ``input_size``
    rounded to a multiple of 8 (so that the U-Net accepts it); a rescale that rounds to
    ``input_size`` is the identity and is drawn again.

    Parameters
    ----------
    generator
        Source of the draw (one per run, so that a run is reproducible).
    input_size
        Side of the slices A is applied to.
    max_shift
        Largest translation, as a fraction of the side.
    scale_range
        Range of the rescale factor.
    """

    def pick(options: tuple) -> str:
        return options[int(torch.randint(len(options), (1,), generator=generator))]

    family = pick(FAMILIES)
    if family == "flip":
        return SpatialTransform(pick(("hflip", "vflip")))
    if family == "rotation":
        return SpatialTransform(pick(("rot90", "rot180", "rot270")))
    if family == "translation":
        dy, dx = ((torch.rand(2, generator=generator) * 2 - 1) * max_shift).tolist()
        return SpatialTransform("translate", shift=(dy, dx))
    low, high = scale_range
    while True:
        factor = low + (high - low) * float(torch.rand(1, generator=generator))
        size = max(8, int(round(input_size * factor / 8)) * 8)
        if size != input_size:
            return SpatialTransform("rescale", size=size)


def _translate(x: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    out = torch.zeros_like(x)
    h, w = x.shape[-2:]
    if abs(dy) >= h or abs(dx) >= w:
        return out
    src_y = slice(max(0, -dy), h - max(0, dy))
    dst_y = slice(max(0, dy), h - max(0, -dy))
    src_x = slice(max(0, -dx), w - max(0, dx))
    dst_x = slice(max(0, dx), w - max(0, -dx))
    out[..., dst_y, dst_x] = x[..., src_y, src_x]
    return out


def apply_transform(
    x: torch.Tensor, t: SpatialTransform, *, mode: str = "bilinear"
) -> torch.Tensor:
    """Apply ``t`` to a batch.

    Parameters
    ----------
    x
        ``(N, C, H, W)`` images, CAMs or masks.
    t
        The transform.
    mode
        Interpolation for ``rescale``: ``bilinear`` for images and maps, ``nearest`` for masks.

    Returns
    -------
    torch.Tensor
        ``(N, C, H, W)``, or ``(N, C, S, S)`` for a rescale to side S. Translation fills with 0.
    """
    if t.kind == "hflip":
        return x.flip(-1)
    if t.kind == "vflip":
        return x.flip(-2)
    if t.kind in ("rot90", "rot180", "rot270"):
        return torch.rot90(x, {"rot90": 1, "rot180": 2, "rot270": 3}[t.kind], dims=(-2, -1))
    if t.kind == "translate":
        h, w = x.shape[-2:]
        return _translate(x, round(t.shift[0] * h), round(t.shift[1] * w))
    if t.kind == "rescale":
        size = (t.size, t.size)
        if mode == "nearest":
            return F.interpolate(x, size=size, mode="nearest")
        return F.interpolate(x, size=size, mode=mode, align_corners=False)
    raise ValueError(f"unknown transform kind {t.kind!r}")


def invert_transform(t: SpatialTransform, original_size: int) -> SpatialTransform:
    """The transform that undoes ``t`` (translation: on the region that stayed in view).

    Parameters
    ----------
    t
        The transform to undo.
    original_size
        Side of the input before ``t`` (needed to undo a rescale).
    """
    inverse = {"hflip": "hflip", "vflip": "vflip", "rot90": "rot270", "rot180": "rot180"}
    inverse["rot270"] = "rot90"
    if t.kind in inverse:
        return SpatialTransform(inverse[t.kind])
    if t.kind == "translate":
        return SpatialTransform("translate", shift=(-t.shift[0], -t.shift[1]))
    if t.kind == "rescale":
        return SpatialTransform("rescale", size=original_size)
    raise ValueError(f"unknown transform kind {t.kind!r}")
