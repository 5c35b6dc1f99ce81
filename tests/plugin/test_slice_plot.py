"""The slice-probability plot of the CAM inspector."""

import numpy as np

from equicam.plugin.widgets.slice_plot import SliceProbabilityPlot


def test_before_a_run_the_plot_says_what_will_appear_instead_of_empty_axes(qtbot):
    plot = SliceProbabilityPlot()
    qtbot.addWidget(plot.native)
    assert not plot.axes.axison
    assert "after a whole-volume run" in plot.axes.texts[0].get_text()


def test_curves_cover_computed_slices_and_the_legend_sits_above_them(qtbot):
    plot = SliceProbabilityPlot()
    qtbot.addWidget(plot.native)
    computed = np.zeros(10, bool)
    computed[2:8] = True
    probabilities = {"t1": np.linspace(0, 1, 10), "flair": np.full(10, 0.9)}
    plot.set_result(probabilities, computed)
    plot.set_current(4)
    lines = plot.axes.get_lines()
    curves = [line for line in lines if line.get_label() in ("T1", "FLAIR")]
    assert [line.get_label() for line in curves] == ["T1", "FLAIR"]
    assert list(curves[0].get_xdata()) == [2, 3, 4, 5, 6, 7]
    assert any(list(line.get_xdata()) == [4, 4] for line in lines)
    plot.canvas.draw()
    renderer = plot.canvas.get_renderer()
    legend = plot.axes.get_legend().get_window_extent(renderer)
    axes = plot.axes.get_window_extent(renderer)
    assert plot.axes.axison and legend.y0 >= axes.y1 - 1
