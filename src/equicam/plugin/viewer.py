"""Start napari with a case or a folder of cases open (``equicam view``)."""

from __future__ import annotations

from pathlib import Path


def open_folder(viewer, data_dir: str | Path):
    """Dock the CAM inspector (once) and open ``data_dir`` in its case navigator.

    Returns
    -------
    CamInspector
        The docked inspector.
    """
    # napari hands back the docked inspector when there is one
    _, inspector = viewer.window.add_plugin_dock_widget("napari-equicam", "CAM inspector")
    inspector.cases.open_folder(data_dir)
    return inspector


def open_viewer(case: str | Path | None = None, *, run: bool = True):
    """Open napari with ``case`` (default: the bundled sample case) and the CAM inspector.

    ``case`` may be a case folder, one of its files, or a folder of cases (opened in the case
    navigator at the first unfinished case).
    """
    import napari

    from equicam.plugin.cases import holds_cases
    from equicam.plugin.sample_data import SAMPLE_CASE

    viewer = napari.Viewer(title="napari-equicam")
    if case is not None and holds_cases(Path(case)):
        open_folder(viewer, case)
    else:
        viewer.open(str(case or SAMPLE_CASE), plugin="napari-equicam")
        viewer.window.add_plugin_dock_widget("napari-equicam", "CAM inspector")
    if run:
        napari.run()
    return viewer
