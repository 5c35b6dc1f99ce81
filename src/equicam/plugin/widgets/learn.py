"""Learning from corrections: fine-tune the chosen second stage on the folder's saved masks.

The same code as ``python -m training.finetune_segnet`` (:func:`~equicam.core.segnet_fit.
fine_tune`), in a napari thread worker with a progress bar and Cancel; a cancelled run writes
nothing. The new checkpoint can then be picked with *checkpoint file...*.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from magicgui.widgets import Container, FileEdit, ProgressBar, PushButton, SpinBox
from napari.utils import notifications


class LearnFromCorrections(Container):
    """Folder of corrected cases, new checkpoint, steps; run and cancel.

    Parameters
    ----------
    segnet
        Returns the inspector's chosen checkpoint (a second stage's file, or a CAM model's,
        which is refused with a message).
    """

    def __init__(self, segnet: Callable[[], str]) -> None:
        super().__init__(labels=True)
        self._segnet = segnet
        self._worker = None
        self.cases = FileEdit(label="corrected cases", mode="d")
        self.out = FileEdit(label="new checkpoint", mode="w", filter="*.safetensors")
        self.steps = SpinBox(label="steps", value=200, min=1, max=100_000)
        self.run = PushButton(
            text="Learn from corrections",
            tooltip="Fine-tune the chosen second stage on the newest saved mask of every case "
            "in the folder, then choose its threshold and input sizes again on them; writes a new "
            "checkpoint",
        )
        self.cancel = PushButton(text="Cancel", enabled=False)
        self.progress = ProgressBar(value=0, visible=False)
        self.extend([self.cases, self.out, self.steps, self.run, self.cancel, self.progress])
        self.run.clicked.connect(self.start)
        self.cancel.clicked.connect(self.stop)

    def start(self) -> None:
        """Fine-tune in a thread worker."""
        from napari.qt.threading import create_worker

        spec, folder, out, steps = (
            self._segnet(),
            self.cases.value,
            self.out.value,
            self.steps.value,
        )

        def job():
            from equicam.core.errors import EquicamError
            from equicam.core.evaluation import bias_correction_of
            from equicam.core.segnet import load_segnet
            from equicam.core.segnet_fit import check_new_checkpoint, fine_tune
            from equicam.plugin.cases import corrected_cases

            try:
                check_new_checkpoint(out)
                segnet, meta = load_segnet(spec)
                cases, sources = corrected_cases(
                    folder, segnet.modalities, bias_correction_of(meta)
                )
                return (yield from fine_tune(spec, cases, out, steps=steps, sources=sources))
            except (EquicamError, ValueError, OSError, RuntimeError) as error:
                return str(error)  # a message, not an exception: superqt would re-raise that

        self._worker = create_worker(job)
        self._worker.yielded.connect(self._on_progress)
        self._worker.returned.connect(self._returned)
        self._worker.finished.connect(self._done)
        self.run.enabled, self.cancel.enabled, self.progress.visible = False, True, True
        self._worker.start()

    def stop(self) -> None:
        """Ask the running worker to stop at its next step (nothing is written)."""
        if self._worker is not None:
            self._worker.quit()
            notifications.show_info("Learn from corrections: cancelled, nothing written")

    def _on_progress(self, step) -> None:
        self.progress.max, self.progress.value = max(step.total, 1), step.done
        self.progress.native.setFormat(f"{step.message}  %v / %m")

    def _returned(self, summary) -> None:
        if isinstance(summary, str):
            notifications.show_error(f"Learn from corrections: {summary}")
            return
        notifications.show_info(
            f"Learn from corrections: wrote {Path(summary['path']).name} (loss "
            f"{summary['loss_before']:.3f} -> {summary['loss_after']:.3f}, threshold "
            f"{summary['threshold']}); pick it with 'checkpoint file...'"
        )

    def _done(self) -> None:
        self._worker = None
        self.run.enabled, self.cancel.enabled, self.progress.visible = True, False, False
