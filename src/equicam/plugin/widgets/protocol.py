"""The CAM inspector's protocol control: the post-processing its maps and masks get.

``checkpoint's choice`` (the default) is the protocol that measured best on the checkpoint's
validation patients; ``paper``, ``refined`` and ``guided`` are :mod:`equicam.core.refine`'s.
A protocol is greyed out for a checkpoint calibrated without it.
"""

from __future__ import annotations

from magicgui.widgets import ComboBox

from equicam.plugin.runs import CHECKPOINTS_CHOICE

TOOLTIP = (
    "paper: the method's protocol (per-slice min-max, classifier gating, one threshold per "
    "map); refined: per-volume normalisation, a slice gate smoothed along z, connected "
    "components and growth in mm, all calibrated on validation patients and run on the whole "
    "volume; guided: maps made the refined way under a slice gate of its own (or, where "
    "calibration chose it, their strongest component) as seeds of one sequence's bright "
    "regions (FLAIR say); "
    "checkpoint's choice: the one that measured best on its validation patients"
)
NOT_CALIBRATED = (
    "This checkpoint has no {} calibration (python -m training.calibrate adds it): its masks "
    "are made under paper then."
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
                ("guided", "guided"),
            ],
            value=CHECKPOINTS_CHOICE,
            tooltip=TOOLTIP,
        )

    def offer(self, meta: dict | None) -> None:
        """Grey ``refined`` and ``guided`` out, and say why, where ``meta`` (a checkpoint's
        metadata; None: not known yet) has no calibration for them."""
        missing = []
        for protocol in ("refined", "guided"):
            calibrated = meta is None or protocol in meta
            self.native.model().item(self.native.findText(protocol)).setEnabled(calibrated)
            missing += [] if calibrated else [protocol]
        note = NOT_CALIBRATED.format(" or ".join(missing)) if missing else ""
        self.tooltip = f"{note} {TOOLTIP}".strip()
