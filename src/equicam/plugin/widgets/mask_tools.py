"""Correct and save: the selected mask's volume, its unsaved edits, the save folder (remembered)
and "Save selected mask".

Edits are napari's own brush strokes (undoable with Ctrl-Z); each stroke marks the mask as
edited and unsaved. A mask is saved as NIfTI in its scan's geometry, never over an input scan,
and napari asks before closing while edits are unsaved.
"""

from __future__ import annotations

from pathlib import Path

from magicgui.widgets import Container, FileEdit, Label, PushButton
from napari.layers import Labels
from napari.utils import notifications
from psygnal import Signal
from qtpy.QtCore import QEvent, QObject, QTimer
from qtpy.QtWidgets import QMessageBox

from equicam.plugin import shortcuts
from equicam.plugin.cam_layers import default_mask_path, layer_info, volume_cm3
from equicam.plugin.sample_data import chosen_mask_folder, in_package
from equicam.plugin.settings import update_settings
from equicam.plugin.writer import save_mask_layer


def save_mask(layer: Labels, path: Path | None = None) -> Path:
    """Save a mask layer of a case as NIfTI in its scan's geometry and mark it saved.

    Parameters
    ----------
    layer
        A Labels layer whose ``metadata["equicam"]`` holds the case's geometry.
    path
        Target file; default ``<case folder>/<case id>_<layer name>.nii.gz``.

    Returns
    -------
    Path
        The written file.

    Raises
    ------
    ValueError
        When the layer has no scan geometry or the file cannot be written (the error names
        the file); nothing is half-written. Another saved mask is never replaced (see
        :func:`~equicam.plugin.writer.save_mask_layer`).
    """
    info = layer_info(layer)
    if "geometry" not in info:
        raise ValueError(f"'{layer.name}' is not a mask of a case opened with napari-equicam")
    path = save_mask_layer(layer.data, info, path or default_mask_path(info, layer.name))
    info.update(saved=True, saved_file=str(path))
    return path


class _CloseGuard(QObject):
    """Asks before the napari window closes while masks have unsaved edits."""

    def __init__(self, tools: MaskTools) -> None:
        super().__init__()
        self.tools = tools

    def eventFilter(self, watched, event) -> bool:  # noqa: N802 - Qt's name
        if event.type() != QEvent.Type.Close:
            return False
        unsaved = self.tools.unsaved_masks()
        if not unsaved:
            return False
        answer = QMessageBox.question(
            watched,
            "Unsaved mask edits",
            "These masks have edits that are not saved:\n"
            + "\n".join(unsaved)
            + "\n\nClose napari and lose them?",
        )
        if answer == QMessageBox.StandardButton.Yes:
            return False
        event.ignore()
        return True


class MaskTools(Container):
    """Volume (cm³) and unsaved state of the selected mask; save it next to the case or in the
    chosen save folder."""

    status_changed = Signal()  # after an edit, a save or a new selection

    def __init__(self, viewer) -> None:
        super().__init__(labels=True)
        self.viewer = viewer
        self._close_guard = _CloseGuard(self)
        self.status = Label(value="")
        self.status.native.setWordWrap(True)  # a long mask name must not widen the dock
        self.save_folder = FileEdit(
            label="save folder",
            mode="d",
            nullable=True,
            value=chosen_mask_folder(),
            tooltip="where masks are saved by default, remembered; empty: beside each case "
            "(~/equicam-masks for the sample case)",
        )
        self.save_folder.line_edit.native.setPlaceholderText("beside each case")
        self.save_path = FileEdit(label="save as", mode="w", filter="*.nii.gz")
        self.save = PushButton(text="Save selected mask", tooltip=shortcuts.tooltip("save_mask"))
        self.extend([self.status, self.save_folder, self.save_path, self.save])
        self.save_folder.changed.connect(self._folder_chosen)
        self.save.clicked.connect(self.save_selected)
        viewer.layers.selection.events.active.connect(self._selected)

    def watch(self, layer: Labels) -> None:
        """Track brush edits of a new mask layer."""
        layer.events.paint.connect(lambda _event: self._edited(layer))

    def _edited(self, layer: Labels) -> None:
        layer_info(layer).update(edited=True, saved=False)
        window = self.native.window()
        if window is not self.native:  # docked: guard the main window against closing
            window.installEventFilter(self._close_guard)
        # napari may emit ``paint`` before it writes the stroke: count once it is written
        QTimer.singleShot(0, self.show_status)

    def unsaved_masks(self) -> list[str]:
        """Names of the mask layers whose edits are not saved."""
        return [
            layer.name
            for layer in self.viewer.layers
            if isinstance(layer, Labels) and not layer_info(layer).get("saved", True)
        ]

    def _folder_chosen(self, folder: Path | None) -> None:
        """Remember the save folder (never one inside the installed package) and show the
        selected mask's new default file."""
        if folder is not None and in_package(folder):
            notifications.show_error(
                f"CAM inspector: {folder} lies inside the installed napari-equicam package, "
                "which a reinstall replaces; choose another save folder"
            )
            self.save_folder.value = None
            return
        update_settings("masks", {"folder": None if folder is None else str(folder)})
        self._selected()

    def _selected(self, _event=None) -> None:
        layer = self.viewer.layers.selection.active
        if isinstance(layer, Labels) and "case_folder" in layer_info(layer):
            self.save_path.value = default_mask_path(layer_info(layer), layer.name)
        self.show_status()

    def show_status(self) -> None:
        """Show the selected mask's volume and whether it has unsaved edits, and the full name
        of the selected CAM or mask (its layer name is short)."""
        layer = self.viewer.layers.selection.active
        info = layer_info(layer)
        lines = []
        if isinstance(layer, Labels):
            unsaved = "  (unsaved edits)" if not info.get("saved", True) else ""
            lines.append(f"{layer.name}: {volume_cm3(layer.data, layer.scale):.2f} cm³{unsaved}")
        if "full_name" in info:
            lines.append(f"{info['full_name']}, {info['protocol']} protocol")
        self.status.value = "\n".join(lines)
        self.status_changed.emit()

    def save_selected(self) -> None:
        """Save the selected mask as NIfTI in its scan's geometry, never over an input scan
        nor over another saved mask (see :func:`~equicam.plugin.writer.save_mask_layer`)."""
        layer = self.viewer.layers.selection.active
        if not isinstance(layer, Labels) or "geometry" not in layer_info(layer):
            notifications.show_error("CAM inspector: select a mask layer of a case to save")
            return
        path = Path(self.save_path.value)
        if not path.name.endswith((".nii", ".nii.gz")):
            path = default_mask_path(layer_info(layer), layer.name)
        try:
            path = save_mask(layer, path)
        except (ValueError, OSError) as error:
            notifications.show_error(f"CAM inspector: {error}")
            return
        self.show_status()
        notifications.show_info(f"saved {path}")
