"""Compare maps side by side (napari's grid) and masks against the ground truth (Dice, ASSD,
HD95).

Each grid cell holds one CAM over its own scan, with its mask outline and its name: either the
sequences (and fusion) of one run, or one map from every run (equivariant vs baseline vs
Grad-CAM). One camera: every cell pans, zooms and slices together.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from magicgui.widgets import ComboBox, Container, PushButton, Table
from napari.layers import Image, Labels
from napari.utils import notifications
from qtpy.QtWidgets import QHeaderView, QStyledItemDelegate

from equicam.core.brats import LAYER_NAMES
from equicam.plugin.cam_layers import compare_table, layer_info, mask_layer_name
from equicam.plugin.layers import GROUND_TRUTH

GRID_MODES = ["off", "sequences of one run", "runs of one map"]

TITLE_FONT_SIZE = 8  # napari's 10 is large for a title in a third of the canvas


class ComparePanel(Container):
    """The side-by-side grid, and "Compare masks with ground truth" with its table.

    Parameters
    ----------
    viewer
        The napari viewer.
    scans
        Returns the picked scan layers, modality -> layer.
    default_map
        The map whose runs are compared when the selected layer is not a CAM or a mask
        (e.g. ``fused_mean``).
    show_sequences
        Makes the per-sequence CAM layers of the runs (the grid of one run's sequences
        needs them).
    """

    def __init__(
        self,
        viewer,
        scans: Callable[[], dict[str, Image]],
        default_map: Callable[[], str],
        show_sequences: Callable[[], None],
    ) -> None:
        super().__init__(labels=False)
        self.viewer = viewer
        self._scans, self._default_map = scans, default_map
        self._show_sequences = show_sequences
        self._saved: tuple[list, dict] | None = None
        self._underlays: list[Image] = []
        self.side_by_side = ComboBox(label="side by side", choices=GRID_MODES, value="off")
        self.compare = PushButton(text="Compare masks with ground truth")
        self.table = Table(
            value={"mask": [], "Dice": [], "ASSD (mm)": [], "HD95 (mm)": []}, visible=False
        )
        # magicgui's own delegate re-renders numbers with 4 decimals (or as 5.000e-02): show
        # the cells as written, 3 decimals for Dice and 1 for millimetres.
        self.table.native.setItemDelegate(QStyledItemDelegate(self.table.native))
        self.extend([Container(widgets=[self.side_by_side]), self.compare, self.table])
        self.side_by_side.changed.connect(self._grid_mode)
        self.compare.clicked.connect(self.compare_masks)

    def _grid_mode(self, mode: str) -> None:
        if self._saved is not None:
            self.grid_off()
        if mode != "off" and not self.grid_on(mode):
            self.side_by_side.value = "off"

    def _cells(self, mode: str) -> list[tuple[Image, Image]]:
        """(scan, CAM) per grid cell: the sequences of one run, or the runs of one map."""
        scans = self._scans()
        fallback = scans.get("flair") or next(iter(scans.values()), None)
        cams = [
            layer
            for layer in self.viewer.layers
            if isinstance(layer, Image) and "run" in layer_info(layer)
        ]
        if not cams or fallback is None:
            return []
        active = self.viewer.layers.selection.active
        chosen = layer_info(active) if active is not None and "run" in layer_info(active) else {}
        if mode == "runs of one map":
            key, value = "map", chosen.get("map", self._default_map())
        else:
            key, value = "run", chosen.get("run", layer_info(cams[-1])["run"])
        order = list(LAYER_NAMES)  # sequences in their usual order, made when they were

        def place(cam: Image) -> int:
            name = layer_info(cam)["map"]
            return order.index(name) if name in order else len(order)

        return [
            (scans.get(layer_info(c)["map"], fallback), c)
            for c in sorted(cams, key=place)
            if layer_info(c)[key] == value
        ]

    def grid_on(self, mode: str) -> bool:
        """One cell per CAM: its scan, the CAM and its mask outline; False if nothing to show."""
        if mode == "sequences of one run":
            self._show_sequences()
        viewer, cells = self.viewer, self._cells(mode)
        if not cells:
            notifications.show_info("CAM inspector: run a model first, then compare")
            return False
        masks = [
            mask_layer_name(layer_info(cam)["map"], layer_info(cam)["run"]) for _, cam in cells
        ]
        with_masks = all(mask in viewer.layers for mask in masks)
        self._saved = (list(viewer.layers), {layer.name: layer.visible for layer in viewer.layers})
        for layer in viewer.layers:
            layer.visible = False
        groups = []
        for (scan, cam), mask in zip(cells, masks, strict=True):
            underlay = viewer.add_image(
                scan.data,
                name=f"{scan.name} ({cam.name})",
                scale=scan.scale,
                translate=scan.translate,
                colormap=scan.colormap,
                contrast_limits=scan.contrast_limits,
                metadata={"equicam": {"underlay": True}},
            )
            self._underlays.append(underlay)
            cam.visible = cam.name_overlay.visible = True
            cam.name_overlay.font_size = TITLE_FONT_SIZE
            group = [underlay, cam]
            if with_masks:
                outline = viewer.layers[mask]
                outline.visible, outline.contour = True, 1
                group.append(outline)
            groups.extend(group)
        for index, layer in enumerate(groups):  # one stride-long group per cell, at the top
            viewer.layers.move(viewer.layers.index(layer), index)
        viewer.canvas.grid.stride = 3 if with_masks else 2
        viewer.canvas.grid.spacing = 4  # pixels between cells
        viewer.canvas.grid.enabled = True
        viewer.reset_view()
        return True

    def grid_off(self) -> None:
        """Back to one view with the layers, order and visibility from before."""
        order, visible = self._saved
        self._saved = None
        self.viewer.canvas.grid.enabled = False
        self.viewer.canvas.grid.stride, self.viewer.canvas.grid.spacing = 1, 0
        for layer in self._underlays:
            if layer in self.viewer.layers:
                self.viewer.layers.remove(layer)
        self._underlays = []
        kept = [layer for layer in order if layer in self.viewer.layers]
        for index, layer in enumerate(kept):
            self.viewer.layers.move(self.viewer.layers.index(layer), index)
            layer.visible = visible.get(layer.name, layer.visible)
            layer.name_overlay.visible = False
            if isinstance(layer, Labels) and "run" in layer_info(layer):
                layer.contour = 0
        self.viewer.reset_view()

    def compare_masks(self) -> None:
        """Dice, ASSD and HD95 of every mask layer against the ground truth (whole tumour)."""
        if GROUND_TRUTH not in self.viewer.layers:
            notifications.show_error("CAM inspector: no 'ground truth' layer to compare with")
            return
        truth = self.viewer.layers[GROUND_TRUTH]
        masks = {
            layer.name: np.asarray(layer.data)
            for layer in self.viewer.layers
            if isinstance(layer, Labels) and "run" in layer_info(layer)
        }
        rows = compare_table(masks, truth.data, truth.scale)
        rows["Dice"] = [f"{v:.3f}" for v in rows["Dice"]]
        rows["ASSD (mm)"] = [f"{v:.1f}" for v in rows["ASSD (mm)"]]
        rows["HD95 (mm)"] = [f"{v:.1f}" for v in rows["HD95 (mm)"]]
        self.table.value = rows
        for row, name in enumerate(rows["mask"]):  # layer names are short: the full one on hover
            full = layer_info(self.viewer.layers[name]).get("full_name", name)
            self.table.native.item(row, 0).setToolTip(full)
        self.table.visible = True
        header = self.table.native.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        self.table.native.setMinimumHeight(min(40 + 24 * len(masks), 200))
