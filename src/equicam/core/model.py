"""The per-modality CAM network of the method and the multi-modal container.

Each modality has its own small 2-D U-Net (no weight sharing). Its head is a 1x1
convolution without bias to two channels (0 = healthy, 1 = tumour); that output *is*
the class activation map at input resolution, and the class logits are its global
average, so the map and the classifier are tied.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.nn import functional as F

from equicam.core.preprocess import zscore_slices

PAPER_WIDTHS = (64, 128, 256, 256)
INPUT_NORMS = ("case", "slice")


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of one multi-modal CAM model.

    Attributes
    ----------
    modalities
        Names of the modalities, one network each, in a fixed order.
    widths
        Channels of the four encoder levels; the paper uses (64, 128, 256, 256).
    input_size
        Side, in pixels, of the square slices that the networks see.
    n_classes
        Number of CAM channels (0 = healthy, 1 = tumour).
    input_norm
        ``case``: the networks see the per-case brain z-score of preprocessing as it is;
        ``slice``: each network first re-z-scores every slice within its brain (the paper's).
    """

    modalities: tuple[str, ...] = ("t1", "t1ce", "t2", "flair")
    widths: tuple[int, ...] = PAPER_WIDTHS
    input_size: int = 240
    n_classes: int = 2
    input_norm: str = "case"

    def __post_init__(self) -> None:
        if self.input_norm not in INPUT_NORMS:
            raise ValueError(f"input_norm is {self.input_norm!r}; use one of {INPUT_NORMS}")

    def to_dict(self) -> dict:
        """Plain JSON-able form (tuples become lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict) -> ModelConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error."""
        known = set(cls.__dataclass_fields__)
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown model settings: {sorted(unknown)}")
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        return cls(**values)


def _double_conv(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
        nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class CAMNet(nn.Module):
    """A 1-channel 2-D U-Net whose 2-channel output is the CAM.

    Parameters
    ----------
    widths
        Channels of the four encoder levels (three 2x poolings between them).
    n_classes
        Channels of the CAM head.
    input_norm
        ``slice`` re-z-scores each input slice within its brain first (:func:`zscore_slices`).

    Notes
    -----
    ``forward`` maps ``(N, 1, H, W)`` to the raw CAM ``(N, n_classes, H, W)``;
    ``logits(cam)`` is its spatial mean ``(N, n_classes)``. ``features`` is the output of
    the last 3x3 conv block, the layer Grad-CAM differentiates through.
    H and W must be divisible by 8.
    """

    def __init__(
        self, widths: Sequence[int] = PAPER_WIDTHS, n_classes: int = 2, input_norm: str = "case"
    ) -> None:
        super().__init__()
        if len(widths) != 4:
            raise ValueError(f"widths needs 4 levels, got {list(widths)}")
        self.slice_norm = input_norm == "slice"
        w = list(widths)
        self.enc = nn.ModuleList(
            [_double_conv(1, w[0])] + [_double_conv(w[i - 1], w[i]) for i in range(1, 4)]
        )
        self.dec = nn.ModuleList([_double_conv(w[i + 1] + w[i], w[i]) for i in (2, 1, 0)])
        self.last = nn.Sequential(
            nn.Conv2d(w[0], w[0], 3, padding=1, bias=False),
            nn.BatchNorm2d(w[0]),
            nn.ReLU(inplace=True),
        )
        self.head = nn.Conv2d(w[0], n_classes, 1, bias=False)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Last 3x3 conv block's activations, ``(N, widths[0], H, W)``."""
        if self.slice_norm:
            x = zscore_slices(x)
        skips = []
        for i, block in enumerate(self.enc):
            x = block(x if i == 0 else F.max_pool2d(x, 2))
            skips.append(x)
        for block, skip in zip(self.dec, reversed(skips[:-1]), strict=True):
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = block(torch.cat([x, skip], dim=1))
        return self.last(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Raw CAM, ``(N, 1, H, W) -> (N, n_classes, H, W)``, float32 even under autocast.

        The head runs outside autocast: the CAM is the map under study and feeds min-max
        normalisation and small squared differences, which bf16's 8 mantissa bits blur.
        """
        features = self.features(x)
        with torch.autocast(features.device.type, enabled=False):
            return self.head(features.float())

    @staticmethod
    def logits(cam: torch.Tensor) -> torch.Tensor:
        """Class logits from a CAM by global average pooling, ``(N, C, H, W) -> (N, C)``."""
        return cam.mean(dim=(2, 3))


def fold_batchnorm(net: CAMNet) -> CAMNet:
    """An inference copy of ``net`` with each BatchNorm folded into the convolution before it.

    In eval mode a BatchNorm is a fixed per-channel scale and shift, which the convolution's
    weights and bias can absorb: the copy gives the same maps (up to rounding) with one pass
    over memory less per layer. ``net`` itself is left as it is.
    """
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    folded = copy.deepcopy(net).eval()
    for block in folded.modules():
        if not isinstance(block, nn.Sequential):
            continue
        for i in range(len(block) - 1):
            if isinstance(block[i], nn.Conv2d) and isinstance(block[i + 1], nn.BatchNorm2d):
                block[i] = fuse_conv_bn_eval(block[i], block[i + 1])
                block[i + 1] = nn.Identity()
    return folded


class MultiModalCAM(nn.Module):
    """One :class:`CAMNet` per modality; any subset of them can run.

    Parameters
    ----------
    config
        The architecture; ``config.modalities`` names the networks.

    Attributes
    ----------
    fusion_weights
        Modality -> weight of the ``weighted`` fusion, chosen on validation patients and
        kept in the checkpoint; ``None`` (equal weights) until calibrated.
    """

    def __init__(self, config: ModelConfig | None = None) -> None:
        super().__init__()
        config = config or ModelConfig()
        self.config = config
        self.fusion_weights: dict[str, float] | None = None
        self.nets = nn.ModuleDict(
            {
                m: CAMNet(config.widths, config.n_classes, config.input_norm)
                for m in config.modalities
            }
        )

    @property
    def modalities(self) -> tuple[str, ...]:
        """The modality names, in the model's order."""
        return self.config.modalities

    def forward(
        self, images: dict[str, torch.Tensor], modalities: Iterable[str] | None = None
    ) -> dict[str, torch.Tensor]:
        """Raw CAM per modality, each ``(N, 1, H, W) -> (N, n_classes, H, W)``.

        ``modalities`` defaults to every modality of the model present in ``images``.
        """
        names = [m for m in self.modalities if m in images] if modalities is None else modalities
        return {m: self.nets[m](images[m]) for m in names}
