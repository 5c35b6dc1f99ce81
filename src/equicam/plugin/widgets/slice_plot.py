"""A small plot of each modality's slice-level tumour probability along the slice axis."""

from __future__ import annotations

import numpy as np
from magicgui.widgets import Container
from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
from matplotlib.figure import Figure

from equicam.core.brats import LAYER_NAMES


class SliceProbabilityPlot(Container):
    """Tumour probability per slice and modality, with a marker at the current slice."""

    def __init__(self) -> None:
        super().__init__()
        self.figure = Figure(figsize=(3.2, 1.6), tight_layout=True)
        self.figure.patch.set_facecolor("#262930")
        self.axes = self.figure.add_subplot()
        self.canvas = FigureCanvasQTAgg(self.figure)
        self.canvas.setMinimumHeight(140)
        self.native.layout().addWidget(self.canvas)
        self.probabilities: dict[str, np.ndarray] = {}
        self.computed: np.ndarray | None = None
        self.current = 0
        self.draw()

    def set_result(self, probabilities: dict[str, np.ndarray], computed: np.ndarray) -> None:
        """Show a run's ``slice_prob`` (modality -> ``(Z,)``); uncomputed slices are not drawn."""
        self.probabilities, self.computed = probabilities, computed
        self.draw()

    def set_current(self, z: int) -> None:
        """Move the marker to slice ``z``."""
        self.current = z
        self.draw()

    def draw(self) -> None:
        """Redraw the curves and the marker."""
        ax = self.axes
        ax.clear()
        ax.set_facecolor("#262930")
        for name, values in self.probabilities.items():
            z = (
                np.flatnonzero(self.computed)
                if self.computed is not None
                else np.arange(len(values))
            )
            ax.plot(
                z,
                values[z],
                marker="." if len(z) < 3 else None,
                label=LAYER_NAMES.get(name, name.replace("_", " ")),
            )
        if not self.probabilities:
            ax.set_axis_off()
            ax.text(
                0.5,
                0.5,
                "P(tumour) per slice appears here\nafter a whole-volume run",
                color="#a0a4ab",
                fontsize=7,
                ha="center",
                va="center",
                transform=ax.transAxes,
            )
            self.canvas.draw_idle()
            return
        ax.set_axis_on()
        ax.axvline(self.current, color="white", linewidth=0.8)
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel("slice", color="white", fontsize=7)
        ax.set_ylabel("P(tumour)", color="white", fontsize=7)
        ax.tick_params(colors="white", labelsize=6)
        # Above the axes, one row: inside, it hides the curves where they matter (near 1).
        ax.legend(
            fontsize=6,
            loc="lower center",
            bbox_to_anchor=(0.5, 1.0),
            ncol=len(self.probabilities),
            frameon=False,
            labelcolor="white",
            handlelength=1.2,
            columnspacing=1.0,
        )
        self.canvas.draw_idle()
