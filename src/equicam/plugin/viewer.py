"""Start napari with a case open (``equicam view``)."""

from __future__ import annotations

from pathlib import Path


def open_viewer(case: str | Path | None = None, *, run: bool = True):
    """Open napari with ``case`` (default: the bundled sample case) and the CAM inspector."""
    import napari

    from equicam.plugin.sample_data import SAMPLE_CASE

    viewer = napari.Viewer(title="napari-equicam")
    viewer.open(str(case or SAMPLE_CASE), plugin="napari-equicam")
    viewer.window.add_plugin_dock_widget("napari-equicam", "CAM inspector")
    if run:
        napari.run()
    return viewer
