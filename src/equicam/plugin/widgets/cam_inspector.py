"""The "CAM inspector" dock widget: run the CAM networks on the open scans, show and correct.

The widget only reads its controls, calls the core (the same code as ``equicam cam``) and adds
layers on the main thread. Every run, current slice or whole volume, is the core's progress
generator in a napari thread worker, with a progress bar in the dock and a Cancel button, so
the viewer never waits on the networks. The slow first steps happen ahead of the first click,
in the background: the chosen model is loaded, its inference copies made and run once, as
soon as the widget opens or the model or device changes, and the picked scans are normalised
as soon as they are picked (kept until a layer's data is replaced). The dock is composed of
small widgets: the folder of cases in :mod:`.case_navigator`, comparing runs in :mod:`.compare`,
correction tools in :mod:`.correction_tools`, saving masks in :mod:`.mask_tools`, display
choices in :mod:`.display`, the protocol in :mod:`.protocol` and fine-tuning a second stage on
saved corrections in :mod:`.learn`. Its choices are remembered across launches
(:mod:`equicam.plugin.settings`) and its loop has keyboard shortcuts
(:mod:`equicam.plugin.shortcuts`).
"""

from __future__ import annotations

import contextlib
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FileEdit,
    FloatSlider,
    Label,
    ProgressBar,
    PushButton,
)
from napari.layers import Image
from napari.utils import notifications, progress
from qtpy.QtCore import Qt, QTimer
from qtpy.QtWidgets import QFrame, QScrollArea, QStyle

from equicam.core.brats import LAYER_NAMES, MODALITIES
from equicam.core.fusion import FUSION_NAMES
from equicam.core.inference import METHOD_NAMES, model_maps, run_to_end
from equicam.core.preprocess import BIAS_DEGREE, normalise_images
from equicam.core.refine import THRESHOLD_ONLY
from equicam.plugin import shortcuts
from equicam.plugin.cam_layers import (
    cam_layers,
    in_use_text,
    layer_info,
    mask_layer_name,
    run_label,
)
from equicam.plugin.layers import MASK_COLORS
from equicam.plugin.runs import Run, layer_mask, merged, protocol_for, shown_maps
from equicam.plugin.settings import remember
from equicam.plugin.widgets.case_navigator import CaseNavigator
from equicam.plugin.widgets.compare import ComparePanel
from equicam.plugin.widgets.correction_tools import CorrectionTools
from equicam.plugin.widgets.display import DisplayOptions
from equicam.plugin.widgets.learn import LearnFromCorrections
from equicam.plugin.widgets.mask_tools import MaskTools
from equicam.plugin.widgets.protocol import ProtocolChoice
from equicam.plugin.widgets.slice_plot import SliceProbabilityPlot

if TYPE_CHECKING:
    import napari

CHECKPOINT_FILE = "checkpoint file..."


def _load_ready(spec: str, device: str) -> tuple:
    """A checkpoint's model (CAM networks or a second stage) and metadata with every network's
    inference copy made and run once on ``device`` (oneDNN and cuDNN prepare their kernels on
    a first call)."""
    from equicam.core.checkpoint import load_model

    model, meta = load_model(spec, device=device)
    blank = {m: np.ones((1, 8, 8), np.float32) for m in model.modalities}
    run_to_end(model_maps(model, blank, device=device, fusions=()))
    return model, meta


def _normalised(images: dict[str, np.ndarray], bias_correction: bool) -> dict[str, np.ndarray]:
    """The picked scans normalised as ``equicam cam`` normalises a case."""
    return normalise_images(
        {m: np.asarray(v, np.float32) for m, v in images.items()},
        BIAS_DEGREE if bias_correction else 0,
    )


class CamInspector(Container):
    """Pick the modality layers, a model, a device and a map; run; threshold; compare; save.

    Parameters
    ----------
    viewer
        The napari viewer (napari passes it when the widget is opened from the Plugins menu).
    """

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        from equicam.core.device import available_devices

        super().__init__(labels=False)
        self.viewer = viewer
        # Loading and normalising, off the main thread; (checkpoint, device) -> Future.
        self._background = ThreadPoolExecutor(max_workers=2, thread_name_prefix="equicam")
        # Its threads end with the widget: a closed dock would otherwise keep them (and any load
        # still queued) for the rest of the session.
        pool = self._background
        self.native.destroyed.connect(lambda *_: pool.shutdown(wait=False, cancel_futures=True))
        self._models: dict[tuple[str, str], Future] = {}
        self._normalised: tuple[tuple, Future] | None = None
        # Layers come in bursts; the timer is the widget's, so it goes when the widget goes.
        self._prepare_soon = QTimer(self.native, singleShot=True, interval=200)
        self._prepare_soon.timeout.connect(self.prepare)
        self._runs: dict[str, Run] = {}  # run label -> its slices so far; the last run last
        self._second_stage = False  # the chosen checkpoint is a second stage
        self._shown_count = 0  # CAM layers record when they were made; masks are remade after
        self._worker = None
        self._bar = None
        self.pickers = {
            m: ComboBox(label=LAYER_NAMES[m], choices=self._image_names, nullable=True)
            for m in MODALITIES
        }
        self.model = ComboBox(
            label="model", choices=["equivariant", "baseline", "second-stage", CHECKPOINT_FILE]
        )
        self.checkpoint = FileEdit(label="checkpoint", filter="*.safetensors", visible=False)
        self.device = ComboBox(label="device", choices=["auto", *available_devices()])
        self.method = ComboBox(label="map", choices=[(v, k) for k, v in METHOD_NAMES.items()])
        self.fusion = ComboBox(
            label="fusion",
            choices=list(FUSION_NAMES),
            value="weighted",
            tooltip="weighted: the mean with per-sequence weights chosen on validation patients "
            "(in the checkpoint); mean, max, geometric: every sequence alike",
        )
        self.protocol = ProtocolChoice()
        self.bias_correction = CheckBox(
            text="bias-field correction",
            value=False,
            tooltip="Divide each scan by a smooth field fitted to it before normalising, as "
            "equicam evaluate --bias-correction does: set from the checkpoint (as the data it "
            "was trained or calibrated on were prepared); a corrected run is a run of its own "
            "('bc' in layer names)",
        )
        self.run_slice = PushButton(
            text="Run current slice", tooltip=shortcuts.tooltip("run_slice")
        )
        self.run_volume = PushButton(
            text="Run whole volume", tooltip=shortcuts.tooltip("run_volume")
        )
        self.cancel = PushButton(text="Cancel", enabled=False)
        self.progress = ProgressBar(value=0, visible=False)
        self.per_sequence = CheckBox(
            text="per-sequence maps",
            value=False,
            tooltip="Besides the fused map, a CAM and a mask for each sequence (hidden until "
            "shown); off, a first click adds two layers instead of ten and is quicker",
        )
        self.per_map = CheckBox(text="checkpoint's threshold per map", value=True)
        self.threshold = FloatSlider(label="threshold", min=0.05, max=0.95, step=0.05, value=0.5)
        self.in_use = Label(value="")
        self.in_use.native.setWordWrap(True)
        self._shown: tuple[dict, str, str] = ({}, "", "")  # last run's meta, protocol, note
        self.plot = SliceProbabilityPlot()
        self.comparison = ComparePanel(
            viewer,
            self._scan_layers,
            lambda: f"fused_{self.fusion.value}",
            lambda: setattr(self.per_sequence, "value", True),
        )
        self.masks = MaskTools(viewer)
        self.cases = CaseNavigator(viewer, self.masks)
        self.tools = CorrectionTools(viewer)
        self.display = DisplayOptions(viewer)
        self.learn = LearnFromCorrections(self._spec)
        settings = Container(
            widgets=[
                *self.pickers.values(),
                self.model,
                self.checkpoint,
                self.device,
                self.method,
                self.fusion,
                self.protocol,
                self.bias_correction,
                self.run_slice,
                self.run_volume,
                self.cancel,
                self.progress,
                self.per_sequence,
                self.per_map,
                self.threshold,
            ],
            labels=True,
        )
        settings.append(self.in_use)
        settings.margins = (0, 0, 0, 0)
        body = Container(
            widgets=[
                self.cases,
                settings,
                self.plot,
                self.display,
                self.comparison,
                self.tools,
                self.masks,
                self.learn,
            ],
            labels=False,
        )
        # napari docks ``native`` as it is: scroll it here, so that the dock fits a 1366 x 768
        # screen (magicgui's own ``scrollable`` wraps a widget napari does not dock).
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        scroll.setFrameShape(QFrame.Shape.NoFrame)
        scroll.setWidget(body.native)
        # a scroll bar that is always there is counted in the dock's width (one that comes and
        # goes would cover the right edge of the controls)
        scroll.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOn)
        bar = scroll.style().pixelMetric(QStyle.PixelMetric.PM_ScrollBarExtent)
        scroll.setMinimumWidth(body.native.minimumSizeHint().width() + bar + 4)
        self.native.layout().addWidget(scroll)
        self.margins = (0, 0, 0, 0)
        self.model.changed.connect(
            lambda v: setattr(self.checkpoint, "visible", v == CHECKPOINT_FILE)
        )
        self.run_slice.clicked.connect(self.run_current_slice)
        self.run_volume.clicked.connect(self.run_whole_volume)
        self.cancel.clicked.connect(self.cancel_run)
        self.per_map.changed.connect(self.update_masks)
        self.per_sequence.changed.connect(self._per_sequence_toggled)
        self.protocol.changed.connect(self._show_runs)
        for control in (self.model, self.checkpoint):
            control.changed.connect(self._offer_protocols)
        self.threshold.changed.connect(self._threshold_moved)
        for event in (viewer.layers.events.inserted, viewer.layers.events.removed):
            event.connect(self._refresh_pickers)
        for control in (
            *self.pickers.values(),
            self.model,
            self.checkpoint,
            self.device,
            self.bias_correction,
        ):
            control.changed.connect(lambda _value: self._prepare_soon.start())
        viewer.dims.events.current_step.connect(
            lambda _e: self.plot.set_current(int(viewer.dims.current_step[0]))
        )
        self.cases.leaving.connect(self._leave_case)
        self.comparison.side_by_side.changed.connect(self.display.apply_style)
        self._refresh_pickers()
        self._prepare_soon.start()
        remember(
            "inspector",
            {
                "model": self.model,
                "checkpoint": self.checkpoint,
                "device": self.device,
                "map": self.method,
                "fusion": self.fusion,
                "protocol": self.protocol,
                "threshold": self.threshold,  # before per_map: moving it unticks per_map
                "per_map": self.per_map,
                "per_sequence": self.per_sequence,
                "mask_style": self.display.mask_style,
            },
        )
        shortcuts.attach(self)
        self._offer_protocols()

    def _leave_case(self) -> None:
        """Before the navigator closes a case: stop its run, leave the grid, clear the plot."""
        self.cancel_run()
        self.comparison.side_by_side.value = "off"
        self._runs.clear()
        self.plot.set_result({}, None)

    # --- inputs -------------------------------------------------------------------------
    def _image_names(self, _widget=None) -> list[str]:
        """Scan layers: images that are neither CAMs nor grid underlays."""
        return [
            layer.name
            for layer in self.viewer.layers
            if isinstance(layer, Image) and not {"map", "underlay"} & layer_info(layer).keys()
        ]

    def _refresh_pickers(self, _event=None) -> None:
        for modality, picker in self.pickers.items():
            picker.reset_choices()
            if picker.value is None:
                for name in self._image_names():
                    layer = self.viewer.layers[name]
                    if (
                        layer_info(layer).get("modality") == modality
                        or name.lower() == LAYER_NAMES[modality].lower()
                    ):
                        picker.value = name
                        break

    def _scan_layers(self) -> dict[str, Image]:
        """The picked scan layers, modality -> layer."""
        return {
            m: self.viewer.layers[p.value]
            for m, p in self.pickers.items()
            if p.value and p.value in self.viewer.layers
        }

    def _inputs(self) -> tuple[Future, Image]:
        """The normalised volumes of the picked layers (a Future; made once per set of layer
        data arrays) and the first picked layer."""
        chosen = {m: self.viewer.layers[p.value] for m, p in self.pickers.items() if p.value}
        if not chosen:
            raise ValueError("pick at least one modality layer")
        reference = next(iter(chosen.values()))
        corrected = self.bias_correction.value
        key = (*((m, id(layer.data)) for m, layer in chosen.items()), corrected)
        if self._normalised is None or self._normalised[0] != key:
            if len({layer.data.shape for layer in chosen.values()}) > 1:
                raise ValueError("the picked layers have different shapes")
            images = {m: layer.data for m, layer in chosen.items()}
            self._normalised = (key, self._background.submit(_normalised, images, corrected))
        return self._normalised[1], reference

    def _spec(self) -> str:
        """The chosen checkpoint: a bundled name or a file."""
        own = self.model.value == CHECKPOINT_FILE
        return str(self.checkpoint.value) if own else self.model.value

    def _offer_protocols(self, _value=None) -> None:
        """Grey out the protocols that the chosen checkpoint has no settings for, and the map,
        fusion and protocol for a second stage (its metadata only is read: no weights)."""
        from equicam.core.checkpoint import (
            SECOND_STAGE,
            CheckpointError,
            read_metadata,
            resolve_checkpoint,
        )
        from equicam.core.evaluation import bias_correction_of

        try:
            meta = read_metadata(resolve_checkpoint(self._spec()))
        except CheckpointError:  # not chosen yet, or bad: a run reports it
            meta = None
        self._second_stage = meta is not None and meta.get("kind") == SECOND_STAGE
        self.bias_correction.value = meta is not None and bias_correction_of(meta)
        for control in (self.method, self.fusion, self.protocol):
            control.enabled = not self._second_stage
        self.protocol.offer(meta)

    def _model(self) -> tuple[Future, str, str]:
        """The chosen model and metadata (a Future; loaded once per checkpoint and device), the
        device and the run's label."""
        from equicam.core.device import resolve_device

        own = self.model.value == CHECKPOINT_FILE
        spec = self._spec()
        device = resolve_device(self.device.value)
        future = self._models.get((spec, device))
        if future is None or (future.done() and future.exception() is not None):
            future = self._background.submit(_load_ready, spec, device)  # a failure is retried
            self._models[(spec, device)] = future
        method = "cam" if self._second_stage else self.method.value
        name = Path(spec).stem if own else spec
        return future, device, run_label(name, method, self.bias_correction.value)

    def prepare(self) -> None:
        """Load the chosen model and normalise the picked scans in the background, so that
        the first click finds them ready. Problems wait for a run to report them."""
        own = self.model.value == CHECKPOINT_FILE
        if not own or Path(str(self.checkpoint.value)).is_file():
            self._model()
        with contextlib.suppress(ValueError):
            self._inputs()

    # --- running --------------------------------------------------------------------------
    def run_current_slice(self) -> None:
        """Compute the maps of the slice under the cursor in a thread worker."""
        try:
            _, reference = self._inputs()
            z = int(round(reference.world_to_data(self.viewer.dims.point)[0]))
        except (ValueError, OSError) as error:
            notifications.show_error(f"CAM inspector: {error}")
            return
        self._start(slices=[z])

    def run_whole_volume(self) -> None:
        """Compute every slice in a thread worker, with progress and Cancel."""
        self._start(slices=None)

    def _start(self, slices) -> None:
        """Run the chosen map on ``slices`` (None: every slice) in a thread worker."""
        from napari.qt.threading import create_worker

        try:
            images, reference = self._inputs()
            model, device, label = self._model()
        except (ValueError, OSError) as error:
            notifications.show_error(f"CAM inspector: {error}")
            return
        scale, metadata = reference.scale, reference.metadata
        method, fusion = self.method.value, self.fusion.value
        key = self._normalised[0]

        def job():
            try:  # waits for the background loading and normalising if they are not done
                network, meta = model.result()
                generator = model_maps(
                    network,
                    images.result(),
                    method=method,
                    slices=slices,
                    device=device,
                    fusions=(fusion,),
                )
                return (yield from generator), meta, images.result()
            except (ValueError, OSError, RuntimeError) as error:  # bad input, file, device
                return str(error)  # a message, not an exception: superqt would re-raise that

        self._worker = create_worker(job)
        if slices is None:
            self._bar = progress(total=0, desc="CAM")
            self._worker.yielded.connect(self._on_progress)
        self._worker.returned.connect(
            lambda out: self._returned(out, (key, scale, metadata), label)
        )
        self._worker.finished.connect(self._done)
        self._set_busy(True)
        self._worker.start()

    def cancel_run(self) -> None:
        """Ask the running worker to stop at its next step."""
        if self._worker is not None:
            self._worker.quit()
            notifications.show_info("CAM inspector: run cancelled")

    def _returned(self, result, scans: tuple, label: str) -> None:
        if isinstance(result, str):
            notifications.show_error(f"CAM inspector: {result}")
            return
        maps, meta, images = result
        if (
            self.per_map.value  # else the slider holds the user's (perhaps remembered) value
            and "threshold" in meta
            and not any("run" in layer_info(layer) for layer in self.viewer.layers)
        ):
            with self.threshold.changed.blocked():  # a default, not the user's choice
                self.threshold.value = float(meta["threshold"])  # chosen on validation
        self._show(maps, (*scans, images), label, meta)

    def _on_progress(self, step) -> None:
        bar = self._bar  # updating the bar may process events, _done among them
        if bar is None:  # a step queued before the run finished or was cancelled
            return
        bar.total = step.total
        bar.n = step.done
        bar.set_description(step.message)
        bar.refresh()
        self.progress.max, self.progress.value = max(step.total, 1), step.done
        self.progress.native.setFormat(f"{step.message}  %v / %m")

    def _done(self) -> None:
        if self._bar is not None:
            self._bar.close()
        self._worker, self._bar = None, None
        self._set_busy(False)

    def _set_busy(self, busy: bool) -> None:
        self.run_slice.enabled = self.run_volume.enabled = not busy
        self.cancel.enabled = self.progress.visible = busy

    # --- outputs --------------------------------------------------------------------------
    def _show(self, result, scans: tuple, label: str, meta: dict) -> None:
        """Merge a run's slices into the earlier ones of the same run on the same scans, then
        show them (main thread). ``scans``: the key, scale, metadata and normalised volumes of
        the scans it ran on; ``meta``: the checkpoint's metadata."""
        key, scale, metadata, images = scans
        earlier = self._runs.pop(label, None)  # popped: the newest run goes last
        previous = earlier.result if earlier is not None and earlier.key == key else None
        self._runs[label] = Run(key, merged(previous, result), scale, metadata, meta, images)
        self._show_runs(labels=[label])

    def _show_runs(self, _value=None, labels=None) -> None:
        """Add or update the CAM layers of the runs ``labels`` (default all) under the chosen
        protocol, then the masks and the plot of the newest run."""
        layers = self.viewer.layers
        for label in self._runs if labels is None else labels:
            run = self._runs[label]
            protocol, note = protocol_for(self.protocol.value, run.meta)
            maps, settings, protocol, more = shown_maps(run, protocol)
            if not self.per_sequence.value:  # fewer layers: a quicker first click
                maps = {n: v for n, v in maps.items() if n not in LAYER_NAMES} or maps
            self._shown = (run.meta, protocol, note or more)
            self._shown_count += 1  # its masks are made again (see update_masks)
            for data, kwargs, _ in cam_layers(
                maps, label, run.scale, run.metadata, settings, protocol
            ):
                kwargs["metadata"]["equicam"]["shown"] = self._shown_count
                if kwargs["name"] not in layers:
                    self.viewer.add_image(data, **kwargs)
                    continue
                layer = layers[kwargs["name"]]
                layer.metadata = kwargs["metadata"]
                layer.data = data
        self.update_masks()
        if self._runs:
            newest = self._runs[next(reversed(self._runs))].result
            self.plot.set_result(newest.slice_prob, newest.computed)

    def _per_sequence_toggled(self, shown: bool) -> None:
        """Add every run's per-sequence CAMs and masks, or remove them (an edited mask stays).

        The selected layer stays selected (it picks the run of the side-by-side grid)."""
        if shown:
            selected = self.viewer.layers.selection.active
            self._show_runs()
            if selected is not None:
                self.viewer.layers.selection.active = selected
            return
        for layer in list(self.viewer.layers):
            info = layer_info(layer)
            if "run" in info and info.get("map") in LAYER_NAMES and not info.get("edited"):
                self.viewer.layers.remove(layer)
        self._show_in_use()

    def _threshold_moved(self, _value=None) -> None:
        """Moving the slider means one threshold for every map."""
        if self.per_map.value:
            self.per_map.value = False  # its change event re-thresholds
        else:
            self.update_masks()

    def update_masks(self, _value=None) -> None:
        """(Re)make every CAM's mask; an edited mask is kept and a new one made.

        Each map's own threshold and protocol steps from its checkpoint, or the slider's
        threshold for all maps with their protocol steps. The edited layer itself is only
        renamed (``... edited``): its data array and its undo history stay as they are.
        """
        for cam in [layer for layer in self.viewer.layers if isinstance(layer, Image)]:
            info = layer_info(cam)
            if "run" not in info or info["run"] not in self._runs:
                continue
            name = mask_layer_name(info["map"], info["run"])
            threshold = info["threshold"] if self.per_map.value else self.threshold.value
            made = (info["shown"], info["protocol"], threshold)
            if (
                name in self.viewer.layers
                and layer_info(self.viewer.layers[name]).get("made") == made
            ):
                continue  # refined masks cost a growth in mm: made once per map and threshold
            run = self._runs[info["run"]]
            mask = layer_mask(
                cam.data, info["mask_settings"], threshold, run.result.brain, cam.scale, run.images
            )
            mask_info = {k: v for k, v in info.items() if k != "mask_settings"}
            mask_info["full_name"] = mask_layer_name(info["map"], info["run"], full=True)
            if name in self.viewer.layers and layer_info(self.viewer.layers[name]).get("edited"):
                kept = self.viewer.layers[name]
                kept.name = f"{name} edited"
                notifications.show_warning(
                    f"CAM inspector: your edits are kept in '{kept.name}'; '{name}' is new"
                )
            if name in self.viewer.layers:
                layer = self.viewer.layers[name]
                layer.data = mask
                layer.metadata["equicam"].update(protocol=info["protocol"], made=made)
                continue
            layer = self.viewer.add_labels(
                mask,
                name=name,
                scale=cam.scale,
                translate=cam.translate,
                colormap=MASK_COLORS,
                opacity=0.5,
                metadata={"equicam": {**mask_info, "edited": False, "saved": True, "made": made}},
                visible=cam.visible,
            )
            self.masks.watch(layer)
        self.masks.show_status()
        self._show_in_use()

    def _show_in_use(self) -> None:
        """The protocol, fusion weights and mask thresholds in use, under the controls."""
        per_map = {
            layer_info(cam)["map"]: layer_info(cam)["threshold"]
            for cam in self.viewer.layers
            if isinstance(cam, Image) and "run" in layer_info(cam)
        }
        meta, protocol, note = self._shown
        fusion = "" if protocol == THRESHOLD_ONLY else self.fusion.value
        self.in_use.value = in_use_text(
            meta, fusion, per_map if self.per_map.value else None, protocol, note
        )
