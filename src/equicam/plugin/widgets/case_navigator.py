"""Work through a folder of cases: a case list with statuses, next/previous, resume.

Opening a folder (``equicam view DATA_DIR``, napari's *File > Open Folder...* on a folder of
cases, or the button here) lists its cases with the volume of each case's current mask and
its status (new / maps computed / edited / saved), and opens the first unfinished case. Every
switch asks first when masks have unsaved edits (save them, discard them, or stay). A case's
saved masks (``<case id>_mask*.nii.gz`` next to it) are loaded as its masks when it is opened.
"""

from __future__ import annotations

import warnings
from pathlib import Path

from magicgui.widgets import Container, Label, PushButton, Table
from napari.layers import Image, Labels, Layer
from napari.utils import notifications
from psygnal import Signal
from qtpy.QtWidgets import (
    QAbstractItemView,
    QAbstractScrollArea,
    QFileDialog,
    QHeaderView,
    QMessageBox,
    QStyledItemDelegate,
)

from equicam.core.brats import CaseError, load_case
from equicam.plugin import shortcuts
from equicam.plugin.cam_layers import layer_info, volume_cm3
from equicam.plugin.cases import CaseFolder, load_mask, saved_mask_name, saved_masks
from equicam.plugin.layers import MASK_COLORS, case_layers, display_translate, layer_metadata
from equicam.plugin.sample_data import chosen_mask_folder
from equicam.plugin.widgets.mask_tools import MaskTools, save_mask


class CaseNavigator(Container):
    """The case list of a data folder, with Previous / Next and the unsaved-edits guard.

    Parameters
    ----------
    viewer
        The napari viewer.
    masks
        The inspector's mask tools (unsaved masks, watching edits, status changes).
    """

    leaving = Signal()  # before the open case's layers are removed
    opened = Signal(str)  # case id, after its layers are added

    def __init__(self, viewer, masks: MaskTools) -> None:
        super().__init__(labels=False)
        self.viewer, self.masks = viewer, masks
        self.folder: CaseFolder | None = None
        self._loading = False  # statuses are not read from half-replaced layers
        self.title = Label(value="No folder of cases open")
        self.title.native.setWordWrap(True)  # a long case id must not widen the dock
        self.open_button = PushButton(text="Open folder...", tooltip="Open a folder of cases")
        self.previous = PushButton(text="◀ Previous", tooltip=shortcuts.tooltip("previous_case"))
        self.next = PushButton(text="Next ▶", tooltip=shortcuts.tooltip("next_case"))
        self.table = Table(value={"case": [], "mask cm³": [], "status": []}, visible=False)
        native = self.table.native
        native.setItemDelegate(QStyledItemDelegate(native))  # cells as written ("12.3")
        native.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        # the dock's width, not the table's contents, sets the width
        native.setSizeAdjustPolicy(QAbstractScrollArea.SizeAdjustPolicy.AdjustIgnored)
        native.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        native.setToolTip("Double-click a case to open it")
        header = native.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        buttons = Container(
            widgets=[self.previous, self.next, self.open_button], layout="horizontal"
        )
        buttons.margins = (0, 0, 0, 0)
        self.extend([self.title, buttons, self.table])
        self.open_button.clicked.connect(self._choose_folder)
        self.previous.clicked.connect(lambda: self.go(-1))
        self.next.clicked.connect(lambda: self.go(+1))
        self.table.native.cellDoubleClicked.connect(lambda row, _col: self.switch_to(row))
        masks.status_changed.connect(self.refresh)
        for event in (viewer.layers.events.inserted, viewer.layers.events.removed):
            event.connect(self.refresh)

    # --- folder and switching -------------------------------------------------------------
    def _choose_folder(self) -> None:
        path = QFileDialog.getExistingDirectory(self.native, "Folder of cases")
        if path:
            self.open_folder(path)

    def open_folder(self, data_dir: str | Path) -> bool:
        """List the cases of ``data_dir`` and open the first unfinished one.

        Returns False (and says why) when the folder holds no case or the user stays.
        """
        try:
            folder = CaseFolder.open(data_dir)
        except CaseError as error:
            notifications.show_error(f"Case navigator: {error}")
            return False
        if not self._may_leave():
            return False
        self.folder = folder
        self._load(folder.current)
        return True

    def go(self, step: int) -> None:
        """Open the next (``+1``) or previous (``-1``) case, if there is one."""
        if self.folder is not None:
            target = self.folder.current + step
            if 0 <= target < len(self.folder.cases):
                self.switch_to(target)

    def switch_to(self, index: int) -> bool:
        """Open case ``index`` of the list after the unsaved-edits guard; False if not done."""
        if self.folder is None or index == self.folder.current or not self._may_leave():
            return False
        self._load(index)
        return True

    def _may_leave(self) -> bool:
        """Ask what to do with unsaved edits: save them, discard them, or stay (False)."""
        unsaved = self.masks.unsaved_masks()
        if not unsaved:
            return True
        box = QMessageBox(
            QMessageBox.Icon.Question,
            "Unsaved mask edits",
            "These masks have edits that are not saved:\n" + "\n".join(unsaved),
            QMessageBox.StandardButton.Save
            | QMessageBox.StandardButton.Discard
            | QMessageBox.StandardButton.Cancel,
            self.native,
        )
        box.setDefaultButton(QMessageBox.StandardButton.Save)
        answer = box.exec()
        if answer == QMessageBox.StandardButton.Cancel:
            return False
        if answer == QMessageBox.StandardButton.Save:
            for name in unsaved:
                try:
                    save_mask(self.viewer.layers[name])
                except (ValueError, OSError) as error:
                    notifications.show_error(f"Case navigator: {error}")
                    return False
        return True

    def _load(self, index: int) -> None:
        """Replace the open case's layers with case ``index`` and its saved masks."""
        folder = self.folder
        self.leaving.emit()
        self._remember_current()
        self._loading = True
        try:
            self._replace_layers(folder, index)
        finally:
            self._loading = False
        folder.remember()
        self.refresh()
        self.opened.emit(folder.ids[index])

    def _replace_layers(self, folder: CaseFolder, index: int) -> None:
        # Unselect first: removing the selected layer repopulates the layer controls, which
        # redraws the canvas mid-removal (a segfault seen with software OpenGL).
        self.viewer.layers.selection.clear()
        for layer in [
            layer
            for layer in self.viewer.layers
            if "case_id" in layer_info(layer) or "underlay" in layer_info(layer)
        ][::-1]:
            self.viewer.layers.remove(layer)
        files = folder.cases[index]
        folder.current = index
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                case = load_case(files)
        except CaseError as error:
            notifications.show_error(f"Case navigator: {error}")
            return
        for warning in caught:
            notifications.show_warning(str(warning.message))
        for data, kwargs, kind in case_layers(case):
            self.viewer.add_layer(Layer.create(data, kwargs, kind))
        for path in saved_masks(files, chosen_mask_folder()):
            try:
                mask = load_mask(path, case)
            except CaseError as error:
                notifications.show_error(f"Case navigator: {error}")
                continue
            layer = self.viewer.add_labels(
                mask,
                name=saved_mask_name(path, case.case_id),
                scale=case.spacing,
                translate=display_translate(case.geometry),
                opacity=0.5,
                colormap=MASK_COLORS,
                metadata=layer_metadata(
                    case, run="saved", map="saved", edited=False, saved=True, saved_file=str(path)
                ),
            )
            self.masks.watch(layer)
        self.viewer.reset_view()

    # --- status -----------------------------------------------------------------------------
    def _case_masks(self, case_id: str) -> list[Labels]:
        return [
            layer
            for layer in self.viewer.layers
            if isinstance(layer, Labels)
            and "run" in layer_info(layer)
            and layer_info(layer).get("case_id") == case_id
        ]

    def _remember_current(self) -> None:
        """Store the open case's status and mask volume before it is closed."""
        folder = self.folder
        if folder is None or not folder.cases:
            return
        case_id = folder.ids[folder.current]
        status, volume = self._current_state(case_id)
        if status == "edited":  # discarded or saved just now
            status = (
                "saved"
                if saved_masks(folder.cases[folder.current], chosen_mask_folder())
                else "maps computed"
            )
        folder.set(case_id, status, volume)

    def _current_state(self, case_id: str) -> tuple[str, float | None]:
        masks = self._case_masks(case_id)
        active = self.viewer.layers.selection.active
        shown = active if active in masks else (masks[-1] if masks else None)
        volume = volume_cm3(shown.data, shown.scale) if shown is not None else None
        if any(not layer_info(m).get("saved", True) for m in masks):
            return "edited", volume
        if saved_masks(self.folder.cases[self.folder.current], chosen_mask_folder()):
            return "saved", volume
        cams = [
            layer
            for layer in self.viewer.layers
            if isinstance(layer, Image)
            and "run" in layer_info(layer)
            and layer_info(layer).get("case_id") == case_id
        ]
        if cams:
            return "maps computed", volume
        return self.folder.status[case_id], volume

    def refresh(self, _event=None) -> None:
        """Update the open case's row and the table from the layers and the files."""
        folder = self.folder
        if folder is None or self._loading:
            return
        case_id = folder.ids[folder.current]
        status, volume = self._current_state(case_id)
        if status != folder.status[case_id]:
            folder.set(case_id, status, volume)  # remembered at once: napari may be closed next
        elif volume is not None:
            folder.volume[case_id] = round(volume, 2)
        done = sum(s == "saved" for s in folder.status.values())
        self.title.value = (
            f"<b>{case_id}</b> — case {folder.current + 1} of {len(folder.cases)} "
            f"({done} saved) in {folder.data_dir.name}"
        )
        volumes = [folder.volume.get(i) for i in folder.ids]
        self.table.value = {
            "case": folder.ids,
            "mask cm³": ["—" if v is None else f"{v:.1f}" for v in volumes],
            "status": [folder.status[i] for i in folder.ids],
        }
        self.table.native.selectRow(folder.current)
        self.table.native.setMinimumHeight(min(30 + 24 * len(folder.cases), 170))
        self.table.visible = True
        self.previous.enabled = folder.current > 0
        self.next.enabled = folder.current < len(folder.cases) - 1
