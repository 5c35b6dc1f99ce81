"""Display choices: masks filled or outlined, the ground truth's legend, CAM and GT toggles.

The ground truth is drawn as an outline in fixed colours (core red, oedema green, enhancing
yellow) and the pseudo-masks in one other colour, so that the two never mix; the legend says
which is which. The slice axis is named in napari's slider.
"""

from __future__ import annotations

from magicgui.widgets import ComboBox, Container, Label
from napari.layers import Image, Labels
from qtpy.QtWidgets import QSizePolicy

from equicam.plugin import shortcuts
from equicam.plugin.cam_layers import layer_info
from equicam.plugin.layers import AXIS_LABELS, GROUND_TRUTH, LABEL_COLORS, LABEL_NAMES

MASK_STYLES = {"filled": 0, "outline": 2}  # Labels.contour: 0 fills, n draws an n-pixel outline


def _swatch(color: str, text: str) -> str:
    return f'<span style="color:{color}">&#9632;</span>&nbsp;{text}'


LEGEND = (
    "ground truth: "
    + " ".join(_swatch(LABEL_COLORS[k], v) for k, v in LABEL_NAMES.items())
    + "<br>pseudo-mask: "
    + _swatch("deepskyblue", "tumour")
)


class DisplayOptions(Container):
    """Mask style (filled / outline) and the legend of the label colours.

    Parameters
    ----------
    viewer
        The napari viewer.
    """

    def __init__(self, viewer) -> None:
        super().__init__(labels=False)
        self.viewer = viewer
        self.mask_style = ComboBox(
            label="masks",
            choices=list(MASK_STYLES),
            value="filled",
            tooltip=f"Pseudo-masks filled or as outlines. {shortcuts.tooltip('toggle_cam')}; "
            f"{shortcuts.tooltip('toggle_ground_truth')}",
        )
        self.legend = Label(value=LEGEND)
        # never widen the dock for the legend (it would be clipped on a small screen)
        self.legend.native.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.extend([Container(widgets=[self.mask_style]), self.legend])
        self.mask_style.changed.connect(self.apply_style)
        viewer.layers.events.inserted.connect(self._inserted)
        self._name_axes()
        if GROUND_TRUTH in viewer.layers:
            viewer.layers[GROUND_TRUTH].contour = 1

    def _name_axes(self) -> None:
        if self.viewer.dims.ndim == len(AXIS_LABELS):
            self.viewer.dims.axis_labels = AXIS_LABELS

    def _inserted(self, event) -> None:
        self._name_axes()
        layer = event.value
        if isinstance(layer, Labels) and "run" in layer_info(layer):
            layer.contour = MASK_STYLES[self.mask_style.value]
        elif isinstance(layer, Labels) and layer.name == GROUND_TRUTH:
            layer.contour = 1  # an outline: the mask under it stays visible

    def _masks(self) -> list[Labels]:
        return [
            layer
            for layer in self.viewer.layers
            if isinstance(layer, Labels) and "run" in layer_info(layer)
        ]

    def apply_style(self, _value=None) -> None:
        """Fill or outline every pseudo-mask (the side-by-side grid outlines them itself)."""
        if self.viewer.canvas.grid.enabled:
            return
        for layer in self._masks():
            layer.contour = MASK_STYLES[self.mask_style.value]

    def toggle_cams(self) -> None:
        """Hide every CAM if one is shown, else show the fused maps."""
        cams = [
            layer
            for layer in self.viewer.layers
            if isinstance(layer, Image) and "run" in layer_info(layer)
        ]
        shown = any(layer.visible for layer in cams)
        for layer in cams:
            layer.visible = not shown and layer_info(layer)["map"].startswith("fused")

    def toggle_ground_truth(self) -> None:
        """Show or hide the ground truth."""
        if GROUND_TRUTH in self.viewer.layers:
            truth = self.viewer.layers[GROUND_TRUTH]
            truth.visible = not truth.visible
