"""Correction tools for the selected mask, each one undoable with napari's undo (Ctrl-Z).

Thin buttons over :mod:`equicam.core.mask_edit`. A tool computes the corrected mask and writes
only the voxels that change through ``Labels.data_setitem``: one undo step per click, and the
``paint`` event that marks the mask as edited and unsaved. Spacing is the layer's ``scale``
(mm), so millimetres and cubic millimetres are the scan's, anisotropic voxels included.

"Fill between edited slices" interpolates between the slices you drew on with napari's brush,
fill or polygon (their strokes are recorded per mask), along the slice axis.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from magicgui.widgets import Container, FloatSpinBox, Label, PushButton
from napari.layers import Labels
from napari.utils import notifications

from equicam.core import mask_edit
from equicam.plugin import shortcuts

SLICE_AXIS = 0  # display order (Z, Y, X): axial slices


def drawn_slices(layer: Labels) -> set[int]:
    """The slices (along the slice axis) that brush strokes touched on ``layer``."""
    return layer.metadata.setdefault("equicam", {}).setdefault("drawn_slices", set())


def _record_strokes(layer: Labels, event) -> None:
    # Brush, fill and polygon edits are masked atoms with a bounding box; the tools' own bulk
    # writes are index tuples and must not count as drawn slices.
    for atom in event.value:
        key = getattr(atom, "slice_key", None)
        if key is not None:
            axial = key[SLICE_AXIS]
            drawn_slices(layer).update(range(axial.start, axial.stop))


class CorrectionTools(Container):
    """Buttons that correct the selected mask (Labels layer), each one undoable.

    Parameters
    ----------
    viewer
        The napari viewer.
    """

    def __init__(self, viewer) -> None:
        super().__init__(labels=False)
        self.viewer = viewer
        self._watched: set[int] = set()
        self.fill_between = PushButton(
            text="Fill between edited slices",
            tooltip=shortcuts.tooltip(
                "interpolate",
                "Shape-based interpolation between the slices you drew on, along the slice axis",
            ),
        )
        self.min_island = FloatSpinBox(
            label="under (mm³)", value=100.0, min=0.0, max=1e6, step=10.0
        )
        self.remove_islands = PushButton(
            text="Remove islands", tooltip="Delete connected pieces under the size set here"
        )
        self.keep_here = PushButton(
            text="Keep component under cursor",
            tooltip=shortcuts.tooltip(
                "keep_component",
                "Keep only the piece under the mouse cursor (hover, then press the key)",
            ),
        )
        self.fill_holes = PushButton(
            text="Fill holes", tooltip="Fill background the mask encloses, slice by slice"
        )
        self.margin = FloatSpinBox(label="by (mm)", value=2.0, min=0.0, max=50.0, step=0.5)
        self.grow = PushButton(text="Grow", tooltip="Add every voxel within the margin (mm)")
        self.shrink = PushButton(text="Shrink", tooltip="Peel the margin (mm) off the mask")
        self.status = Label(value="")
        self.status.native.setWordWrap(True)
        row = Container(widgets=[self.remove_islands, self.min_island], layout="horizontal")
        margin_row = Container(widgets=[self.grow, self.shrink, self.margin], layout="horizontal")
        for r in (row, margin_row):
            r.margins = (0, 0, 0, 0)
        title = Label(value="<b>Correct the selected mask</b> (Ctrl-Z undoes each tool)")
        title.native.setWordWrap(True)
        self.extend(
            [
                title,
                self.fill_between,
                row,
                self.keep_here,
                self.fill_holes,
                margin_row,
                self.status,
            ]
        )
        self.fill_between.clicked.connect(self.interpolate)
        self.remove_islands.clicked.connect(
            lambda: self._apply(
                "remove islands",
                lambda m, s: mask_edit.remove_small_components(m, s, self.min_island.value),
            )
        )
        self.keep_here.clicked.connect(self.keep_component)
        self.fill_holes.clicked.connect(
            lambda: self._apply("fill holes", lambda m, _s: mask_edit.fill_holes(m, SLICE_AXIS))
        )
        self.grow.clicked.connect(
            lambda: self._apply("grow", lambda m, s: mask_edit.grow(m, s, self.margin.value))
        )
        self.shrink.clicked.connect(
            lambda: self._apply("shrink", lambda m, s: mask_edit.shrink(m, s, self.margin.value))
        )
        viewer.layers.events.inserted.connect(lambda event: self._watch(event.value))
        for layer in viewer.layers:
            self._watch(layer)

    def _watch(self, layer) -> None:
        if isinstance(layer, Labels) and id(layer) not in self._watched:
            self._watched.add(id(layer))
            layer.events.paint.connect(lambda event: _record_strokes(layer, event))

    def _mask(self) -> Labels | None:
        layer = self.viewer.layers.selection.active
        if isinstance(layer, Labels):
            return layer
        notifications.show_error("Correction: select a mask (Labels layer) first")
        return None

    def _apply(self, what: str, edit: Callable[[np.ndarray, tuple], np.ndarray]) -> None:
        """Write ``edit(mask, spacing)`` into the selected mask as one undoable step."""
        layer = self._mask()
        if layer is None:
            return
        old = np.asarray(layer.data) != 0
        try:
            new = edit(old, tuple(float(s) for s in layer.scale))
        except ValueError as error:
            notifications.show_error(f"Correction ({what}): {error}")
            return
        changed = np.nonzero(old != new)
        label = max(int(layer.selected_label), 1)
        values = np.where(new[changed], label, 0).astype(layer.data.dtype)
        layer.data_setitem(changed, values)
        added = int(np.count_nonzero(values))
        self.status.value = f"{what}: +{added} / -{len(values) - added} voxels on '{layer.name}'"

    def interpolate(self) -> None:
        """Fill the slices between the edited slices of the selected mask (one undo step)."""
        layer = self._mask()
        if layer is None:
            return
        data = np.asarray(layer.data)
        keys = sorted(z for z in drawn_slices(layer) if data[z].any())
        if len(keys) < 2:
            notifications.show_error(
                "Correction: draw the tumour on at least two slices (brush), then fill between"
            )
            return
        self._apply(
            "fill between slices",
            lambda m, s: mask_edit.interpolate_slices(m, SLICE_AXIS, keys, s),
        )

    def keep_component(self) -> None:
        """Keep only the connected piece of the selected mask under the mouse cursor."""
        layer = self._mask()
        if layer is None:
            return
        index = np.round(layer.world_to_data(self.viewer.cursor.position)).astype(int)
        self._apply("keep component", lambda m, _s: mask_edit.keep_component_at(m, index))
