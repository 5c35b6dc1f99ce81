"""The "CAM inspector" dock widget: run the CAM networks on the open scans, show and correct.

The widget only reads its controls, calls the core (the same code as ``equicam cam``) and adds
layers on the main thread. A whole-volume run is the core's progress generator in a napari
thread worker, with napari's progress bar and a Cancel button.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from magicgui.widgets import ComboBox, Container, FileEdit, FloatSlider, Label, PushButton, Table
from napari.layers import Image, Labels
from napari.utils import notifications, progress
from qtpy.QtCore import QEvent, QObject
from qtpy.QtWidgets import QMessageBox

from equicam.core.brats import LAYER_NAMES, MODALITIES, save_volume
from equicam.core.fusion import FUSIONS
from equicam.core.inference import METHOD_NAMES, cam_volume, run_to_end
from equicam.core.metrics import assd, dice
from equicam.core.preprocess import brain_mask, normalise_volume
from equicam.plugin.cam_layers import cam_layers, mask_layer_name, run_label, volume_cm3
from equicam.plugin.layers import GROUND_TRUTH
from equicam.plugin.widgets.slice_plot import SliceProbabilityPlot

CHECKPOINT_FILE = "checkpoint file..."


class _CloseGuard(QObject):
    """Asks before the napari window closes while masks have unsaved edits."""

    def __init__(self, inspector: CamInspector) -> None:
        super().__init__()
        self.inspector = inspector

    def eventFilter(self, watched, event) -> bool:  # noqa: N802 - Qt's name
        if event.type() != QEvent.Type.Close:
            return False
        unsaved = self.inspector.unsaved_masks()
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


class CamInspector(Container):
    """Pick the modality layers, a model, a device and a map; run; threshold; correct; save."""

    def __init__(self, viewer) -> None:
        from equicam.core.device import available_devices

        super().__init__(labels=True)
        self.viewer = viewer
        self._models: dict = {}
        self._normalised: tuple | None = None
        self._close_guard = _CloseGuard(self)
        self._worker = None
        self._bar = None
        self.pickers = {
            m: ComboBox(label=LAYER_NAMES[m], choices=self._image_names, nullable=True)
            for m in MODALITIES
        }
        self.model = ComboBox(label="model", choices=["equivariant", "baseline", CHECKPOINT_FILE])
        self.checkpoint = FileEdit(label="checkpoint", filter="*.safetensors", visible=False)
        self.device = ComboBox(label="device", choices=["auto", *available_devices()])
        self.method = ComboBox(label="map", choices=[(v, k) for k, v in METHOD_NAMES.items()])
        self.fusion = ComboBox(label="fusion", choices=list(FUSIONS), value="mean")
        self.threshold = FloatSlider(label="threshold", min=0.05, max=0.95, step=0.05, value=0.5)
        self.run_slice = PushButton(text="Run current slice")
        self.run_volume = PushButton(text="Run whole volume")
        self.cancel = PushButton(text="Cancel", enabled=False)
        self.side_by_side = PushButton(text="Side by side (grid)")
        self.compare = PushButton(text="Compare masks with ground truth")
        self.table = Table(value={"mask": [], "Dice": [], "ASSD (mm)": []}, visible=False)
        self.save_path = FileEdit(label="save as", mode="w", filter="*.nii.gz")
        self.save = PushButton(text="Save selected mask")
        self.status = Label(value="")
        self.plot = SliceProbabilityPlot()
        self._plotted: tuple[str, dict, np.ndarray] | None = None
        self.extend(
            [
                *self.pickers.values(),
                self.model,
                self.checkpoint,
                self.device,
                self.method,
                self.fusion,
                self.run_slice,
                self.run_volume,
                self.cancel,
                self.threshold,
                self.plot,
                self.side_by_side,
                self.compare,
                self.table,
                self.save_path,
                self.save,
                self.status,
            ]
        )

        self.model.changed.connect(
            lambda v: setattr(self.checkpoint, "visible", v == CHECKPOINT_FILE)
        )
        self.run_slice.clicked.connect(self.run_current_slice)
        self.run_volume.clicked.connect(self.run_whole_volume)
        self.cancel.clicked.connect(self.cancel_run)
        self.threshold.changed.connect(self.update_masks)
        self.side_by_side.clicked.connect(self.toggle_grid)
        self.compare.clicked.connect(self.compare_masks)
        self.save.clicked.connect(self.save_selected)
        for event in (viewer.layers.events.inserted, viewer.layers.events.removed):
            event.connect(self._refresh_pickers)
        viewer.layers.selection.events.active.connect(self._show_status)
        viewer.dims.events.current_step.connect(
            lambda _e: self.plot.set_current(int(viewer.dims.current_step[0]))
        )
        self._refresh_pickers()

    # --- inputs -------------------------------------------------------------------------
    def _image_names(self, _widget=None) -> list[str]:
        return [
            layer.name
            for layer in self.viewer.layers
            if isinstance(layer, Image) and "map" not in layer.metadata.get("equicam", {})
        ]

    def _refresh_pickers(self, _event=None) -> None:
        for modality, picker in self.pickers.items():
            picker.reset_choices()
            if picker.value is None:
                for name in self._image_names():
                    layer = self.viewer.layers[name]
                    if (
                        layer.metadata.get("equicam", {}).get("modality") == modality
                        or name.lower() == LAYER_NAMES[modality].lower()
                    ):
                        picker.value = name
                        break

    def _inputs(self) -> tuple[dict, Image]:
        """Normalised volumes of the picked layers (cached: a slice click must be instant)."""
        chosen = {m: self.viewer.layers[p.value] for m, p in self.pickers.items() if p.value}
        if not chosen:
            raise ValueError("pick at least one modality layer")
        reference = next(iter(chosen.values()))
        key = tuple((m, id(layer.data)) for m, layer in chosen.items())
        if self._normalised is None or self._normalised[0] != key:
            images = {m: np.asarray(layer.data, np.float32) for m, layer in chosen.items()}
            if len({v.shape for v in images.values()}) > 1:
                raise ValueError("the picked layers have different shapes")
            brain = brain_mask(images)
            self._normalised = (key, {m: normalise_volume(v, brain) for m, v in images.items()})
        return self._normalised[1], reference

    def _model(self):
        from equicam.core.checkpoint import load_checkpoint
        from equicam.core.device import resolve_device

        spec = (
            str(self.checkpoint.value) if self.model.value == CHECKPOINT_FILE else self.model.value
        )
        device = resolve_device(self.device.value)
        if (spec, device) not in self._models:
            self._models[(spec, device)] = (*load_checkpoint(spec, device=device), device)
        model, meta, device = self._models[(spec, device)]
        if "threshold" in meta and not any(
            "run" in self._info(layer) for layer in self.viewer.layers
        ):
            self.threshold.value = float(meta["threshold"])
        label = Path(spec).stem if self.model.value == CHECKPOINT_FILE else spec
        return model, device, run_label(label, self.method.value)

    # --- running --------------------------------------------------------------------------
    def _job(self, slices=None):
        images, reference = self._inputs()
        model, device, label = self._model()
        generator = cam_volume(
            model,
            images,
            method=self.method.value,
            slices=slices,
            device=device,
            fusions=(self.fusion.value,),
        )
        return generator, reference, label

    def run_current_slice(self) -> None:
        """Compute the maps of the slice under the cursor, synchronously."""
        try:
            reference = self.viewer.layers[next(p.value for p in self.pickers.values() if p.value)]
            z = int(round(reference.world_to_data(self.viewer.dims.point)[0]))
            generator, reference, label = self._job(slices=[z])
            self._show(run_to_end(generator), reference, label)
        except (ValueError, StopIteration, OSError) as error:
            notifications.show_error(f"CAM inspector: {error}")

    def run_whole_volume(self) -> None:
        """Compute every slice in a thread worker, with progress and Cancel."""
        from napari.qt.threading import create_worker

        try:
            generator, reference, label = self._job()
        except (ValueError, OSError) as error:
            notifications.show_error(f"CAM inspector: {error}")
            return

        def job():
            return (yield from generator)

        self._worker = create_worker(job)
        self._bar = progress(total=0, desc="CAM")
        self._worker.yielded.connect(self._on_progress)
        self._worker.returned.connect(lambda result: self._show(result, reference, label))
        self._worker.errored.connect(lambda e: notifications.show_error(f"CAM inspector: {e}"))
        self._worker.finished.connect(self._done)
        self._set_busy(True)
        self._worker.start()

    def cancel_run(self) -> None:
        """Ask the running worker to stop at its next step."""
        if self._worker is not None:
            self._worker.quit()
            notifications.show_info("CAM inspector: run cancelled")

    def _on_progress(self, step) -> None:
        self._bar.total = step.total
        self._bar.n = step.done
        self._bar.set_description(step.message)
        self._bar.refresh()

    def _done(self) -> None:
        if self._bar is not None:
            self._bar.close()
        self._worker, self._bar = None, None
        self._set_busy(False)

    def _set_busy(self, busy: bool) -> None:
        self.run_slice.enabled = self.run_volume.enabled = not busy
        self.cancel.enabled = busy

    # --- outputs --------------------------------------------------------------------------
    @staticmethod
    def _info(layer) -> dict:
        return layer.metadata.get("equicam", {})

    def _show(self, result, reference, label: str) -> None:
        computed = result.computed
        for data, kwargs, kind in cam_layers(
            result, label, self.threshold.value, reference.scale, reference.metadata
        ):
            if kind == "labels":
                continue
            name = kwargs["name"]
            if name in self.viewer.layers:
                layer = self.viewer.layers[name]
                layer.data[computed] = data[computed]
                layer.refresh()
            else:
                self.viewer.add_image(data, **kwargs)
        self.update_masks()
        self._update_plot(result, label)

    def _update_plot(self, result, label: str) -> None:
        """Merge this run's slice probabilities with earlier slices of the same run."""
        if self._plotted is None or self._plotted[0] != label:
            shape = result.computed.shape
            self._plotted = (
                label,
                {m: np.zeros(shape) for m in result.slice_prob},
                np.zeros(shape, bool),
            )
        _, probabilities, computed = self._plotted
        for m, values in result.slice_prob.items():
            probabilities[m][result.computed] = values[result.computed]
        computed |= result.computed
        self.plot.set_result(probabilities, computed)

    def update_masks(self, _value=None) -> None:
        """(Re)threshold every CAM into its mask; an edited mask is kept and a new one made."""
        threshold = self.threshold.value
        for cam in [layer for layer in self.viewer.layers if isinstance(layer, Image)]:
            info = self._info(cam)
            if "run" not in info:
                continue
            name = mask_layer_name(info["map"], info["run"])
            mask = (np.asarray(cam.data) >= threshold).astype(np.uint8)
            if name in self.viewer.layers and self._info(self.viewer.layers[name]).get("edited"):
                kept = self.viewer.layers[name]
                kept.name = f"{name} edited"
                notifications.show_info(f"kept your edited mask as '{kept.name}'")
            if name in self.viewer.layers:
                self.viewer.layers[name].data = mask
                continue
            metadata = {"equicam": {**info, "edited": False, "saved": True}}
            layer = self.viewer.add_labels(
                mask,
                name=name,
                scale=cam.scale,
                opacity=0.5,
                metadata=metadata,
                visible=cam.visible,
            )
            layer.events.paint.connect(lambda _e, layer=layer: self._edited(layer))

    def _edited(self, layer: Labels) -> None:
        self._info(layer).update(edited=True, saved=False)
        window = self.native.window()
        if window is not self.native:  # docked: guard the main window against closing
            window.installEventFilter(self._close_guard)
        self._show_status()

    def unsaved_masks(self) -> list[str]:
        """Names of the mask layers whose edits are not saved."""
        return [
            layer.name
            for layer in self.viewer.layers
            if isinstance(layer, Labels) and not self._info(layer).get("saved", True)
        ]

    def _show_status(self, _event=None) -> None:
        layer = self.viewer.layers.selection.active
        if not isinstance(layer, Labels):
            self.status.value = ""
            return
        unsaved = "  (unsaved edits)" if not self._info(layer).get("saved", True) else ""
        self.status.value = f"{layer.name}: {volume_cm3(layer.data, layer.scale):.2f} cm³{unsaved}"

    def toggle_grid(self) -> None:
        """Show layers side by side (napari grid mode) or stacked."""
        # napari 0.9 moved the grid to viewer.canvas
        grid = self.viewer.canvas.grid if hasattr(self.viewer, "canvas") else self.viewer.grid
        grid.enabled = not grid.enabled

    def compare_masks(self) -> None:
        """Dice and ASSD of every mask layer against the ground truth (whole tumour)."""
        if GROUND_TRUTH not in self.viewer.layers:
            notifications.show_error("CAM inspector: no 'ground truth' layer to compare with")
            return
        truth = np.asarray(self.viewer.layers[GROUND_TRUTH].data) > 0
        rows = {"mask": [], "Dice": [], "ASSD (mm)": []}
        for layer in self.viewer.layers:
            if isinstance(layer, Labels) and "run" in self._info(layer):
                pred = np.asarray(layer.data) > 0
                rows["mask"].append(layer.name)
                rows["Dice"].append(round(dice(pred, truth), 3))
                rows["ASSD (mm)"].append(round(assd(pred, truth, tuple(layer.scale)), 2))
        self.table.value = rows
        self.table.visible = True

    def save_selected(self) -> None:
        """Save the selected mask as NIfTI in its scan's geometry (never over an input scan)."""
        layer = self.viewer.layers.selection.active
        info = self._info(layer) if layer is not None else {}
        if not isinstance(layer, Labels) or "geometry" not in info:
            notifications.show_error("CAM inspector: select a mask layer of a case to save")
            return
        path = Path(self.save_path.value)
        if not path.name.endswith((".nii", ".nii.gz")):
            slug = re.sub(r"[^A-Za-z0-9]+", "_", layer.name).strip("_")
            path = Path(info["case_folder"]) / f"{info['case_id']}_{slug}.nii.gz"
        try:
            save_volume(layer.data, info["geometry"], path, protect=info["inputs"])
        except (ValueError, OSError) as error:
            notifications.show_error(f"CAM inspector: {error}")
            return
        info["saved"] = True
        self._show_status()
        notifications.show_info(f"saved {path}")
