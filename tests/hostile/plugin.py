"""Hostile saves and opens through the plugin's writer and reader, the functions napari calls
for File > Save and File > Open (no window needed): a mask saved over any patient's scan or an
earlier correction, a name that is not NIfTI, a saved mask reopened, a folder without a case."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.conftest import write_case
from tests.hostile.common import Run, write_test_case


@contextmanager
def _own_napari_settings(root: Path) -> Iterator[None]:
    """napari's settings (where equicam adds its reader preference) in ``root``, never the
    user's."""
    from napari import settings

    saved = settings._SETTINGS
    settings._SETTINGS = settings.NapariSettings(config_path=root / "napari-settings.yaml")
    try:
        yield
    finally:
        settings._SETTINGS = saved


def _plugin_kind(make: Callable[[Path], tuple]) -> Callable[[Path], Run]:
    """``make(root)`` builds the files under napari settings of the kind's own and returns
    ``(call, phrase, names, made, not_made)``."""

    def build(root: Path) -> Run:
        with _own_napari_settings(root):
            call, phrase, names, made, not_made = make(root)
        return Run(
            [], phrase, names, call=call, during=lambda: _own_napari_settings(root),
            made=made, not_made=not_made,
        )  # fmt: skip

    return build


def _case(root: Path):
    from equicam.core.brats import load_case
    from equicam.plugin.layers import layer_metadata

    case = load_case(write_test_case(root))
    return case, {"metadata": layer_metadata(case)}


def _save_onto(target: Callable[[Path], Path], phrase: str = "refusing to write"):
    def make(root: Path):
        from equicam.plugin.writer import write_mask

        case, meta = _case(root)
        write_case(root / "B", case_id="BraTS2021_00002")
        path = target(root)
        not_made = [] if path.exists() else [path]
        return lambda: write_mask(str(path), case.seg, meta), phrase, path, [], not_made

    return _plugin_kind(make)


def _over_a_correction(root: Path):
    """A new run's mask saved to the default name of an earlier, corrected one."""
    from equicam.plugin.cam_layers import default_mask_path
    from equicam.plugin.writer import save_mask_layer

    case, meta = _case(root)
    corrected = meta["metadata"]["equicam"]
    path = default_mask_path(corrected, "mask FLAIR (equivariant)")
    edited = case.seg.copy()
    edited[edited == 1] = 2
    save_mask_layer(edited, corrected, path)
    new_run = _case(root)[1]["metadata"]["equicam"]
    beside = path.with_name(path.name.replace(".nii.gz", "_2.nii.gz"))
    return lambda: save_mask_layer(case.seg, new_run, path), None, None, [beside], []


def _reopen(root: Path):
    """A mask saved by the plugin reopens as a Labels layer of its case."""
    from equicam.plugin.reader import get_reader
    from equicam.plugin.writer import write_mask

    case, meta = _case(root)
    path = case.files.folder / f"{case.case_id}_mask_corrected.nii.gz"
    write_mask(str(path), case.seg, meta)

    def call() -> None:
        ((_data, kwargs, kind),) = get_reader(str(path))(str(path))
        if kind != "labels" or kwargs["metadata"]["equicam"]["case_id"] != case.case_id:
            raise AssertionError(f"{path} reopened as {kind}, not as a mask of its case")

    return call, None, None, [], []


def _folder_without_case(root: Path):
    from equicam.plugin.reader import get_reader

    folder = root / "exports"
    folder.mkdir()
    (folder / "brain.nii.gz").write_bytes(b"")
    return lambda: get_reader(str(folder))(str(folder)), "no BraTS modality files", folder, [], []


PLUGIN_KINDS = {
    "save a mask over another patient's scan": _save_onto(
        lambda r: r / "B" / "BraTS2021_00002_flair.nii.gz"
    ),
    "save a mask named like the case's seg": _save_onto(
        lambda r: r / "BraTS2021_00001" / "BraTS2021_00001_seg.nii.gz"
    ),
    "save <case>_flair.nii beside the .nii.gz": _save_onto(
        lambda r: r / "BraTS2021_00001" / "BraTS2021_00001_flair.nii"
    ),
    "save under a 2023-layout scan name": _save_onto(lambda r: r / "B" / "new-t2f.nii.gz"),
    "save to m.txt through the writer": _save_onto(
        lambda r: r / "m.txt", r"output name must end in \.nii or \.nii\.gz"
    ),
    "save a new run's mask over a correction": _plugin_kind(_over_a_correction),
    "reopen a saved mask": _plugin_kind(_reopen),
    "open a folder without a case": _plugin_kind(_folder_without_case),
}
