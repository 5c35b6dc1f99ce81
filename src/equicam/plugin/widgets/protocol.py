"""The CAM inspector's protocol control: the post-processing its maps and masks get.

``checkpoint's choice`` (the default) is the protocol that measured best on the checkpoint's
validation patients; ``paper`` and ``refined`` are :mod:`equicam.core.refine`'s. ``refined``
is greyed out for a checkpoint calibrated before the protocol existed.
"""

from __future__ import annotations

from magicgui.widgets import ComboBox

from equicam.plugin.runs import CHECKPOINTS_CHOICE

TOOLTIP = (
    "paper: the method's protocol (per-slice min-max, classifier gating, one threshold per "
    "map); refined: per-volume normalisation, a slice gate smoothed along z, connected "
    "components and growth in mm, all calibrated on validation patients and run on the whole "
    "volume; checkpoint's choice: the one that measured best on its validation patients"
)
NOT_CALIBRATED = (
    "This checkpoint has no refined calibration (python -m training.calibrate adds it): "
    "its masks are made under paper."
)


class ProtocolChoice(ComboBox):
    """A combo box of the protocols that knows which ones a checkpoint offers."""

    def __init__(self) -> None:
        super().__init__(
            label="protocol",
            choices=[
                ("checkpoint's choice", CHECKPOINTS_CHOICE),
                ("paper", "paper"),
                ("refined", "refined"),
            ],
            value=CHECKPOINTS_CHOICE,
            tooltip=TOOLTIP,
        )

    def offer(self, meta: dict | None) -> None:
        """Grey ``refined`` out, and say why, when ``meta`` (a checkpoint's metadata; None:
        not known yet) has no refined calibration."""
        calibrated = meta is None or "refined" in meta
        item = self.native.model().item(self.native.findText("refined"))
        item.setEnabled(calibrated)
        self.tooltip = TOOLTIP if calibrated else f"{NOT_CALIBRATED} {TOOLTIP}"
