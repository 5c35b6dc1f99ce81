"""Find, load and save BraTS cases in every layout in use.

Layouts
-------
``brats2021``
    BraTS 2018-2021: ``<id>_t1``, ``_t1ce``, ``_t2``, ``_flair``, ``_seg`` (ET labelled 4).
``brats2023``
    BraTS 2023 and later: ``<id>-t1n``, ``-t1c``, ``-t2w``, ``-t2f``, ``-seg`` (ET labelled 3).
``decathlon``
    Medical Segmentation Decathlon Task01: one 4-D file per case in ``imagesTr``/``imagesTs``
    (channels FLAIR, T1w, T1gd, T2w) and its labels in ``labelsTr``.

Every file may be ``.nii`` or ``.nii.gz``. Segmentations are normalised to one label set:
0 background, 1 necrotic / non-enhancing core, 2 oedema, 3 enhancing tumour.

Geometry
--------
All modalities are shown in one display orientation: array axis 0 runs inferior to superior
(the axial slice slider), axis 1 anterior to posterior (anterior at the top of the screen),
axis 2 patient right to patient left (radiological convention). The file's own affine and
header are kept in :class:`Geometry` so that masks are written back in the scan's geometry.
"""

from __future__ import annotations

import gzip
import io
import math
import os
import re
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel import orientations

from equicam.core.atomic import write_file
from equicam.core.errors import EquicamError

MODALITIES: tuple[str, ...] = ("t1", "t1ce", "t2", "flair")
LAYER_NAMES: dict[str, str] = {"t1": "T1", "t1ce": "T1ce", "t2": "T2", "flair": "FLAIR"}
DISPLAY_AXCODES = ("S", "P", "L")
LABEL_NAMES: dict[int, str] = {1: "necrotic core", 2: "oedema", 3: "enhancing tumour"}

_SUFFIXES = {
    "brats2021": {"t1": "_t1", "t1ce": "_t1ce", "t2": "_t2", "flair": "_flair", "seg": "_seg"},
    "brats2023": {"t1": "-t1n", "t1ce": "-t1c", "t2": "-t2w", "flair": "-t2f", "seg": "-seg"},
}
# Raw label -> normalised label, per layout.
_LABEL_MAPS = {
    "brats2021": {0: 0, 1: 1, 2: 2, 4: 3},
    "brats2023": {0: 0, 1: 1, 2: 2, 3: 3},
    "decathlon": {0: 0, 1: 2, 2: 1, 3: 3},
}
_DECATHLON_CHANNELS = ("flair", "t1", "t1ce", "t2")
_NIFTI = re.compile(r"^(?P<stem>.+?)(?P<ext>\.nii(\.gz)?)$")
_AFFINE_TOL_MM = 1e-3


class CaseError(EquicamError):
    """A case or file that cannot be used; the message names the file and the problem."""


class CaseWarning(UserWarning):
    """Something about a case that the user should know, but that does not stop loading."""


@dataclass(frozen=True)
class Geometry:
    """How a file's voxel array maps to the display orientation, and back.

    Attributes
    ----------
    affine
        The file's voxel-to-world (RAS+ mm) affine, kept verbatim for saving.
    header
        The file's NIfTI header, kept for saving.
    file_shape
        Shape of the file's 3-D array.
    source
        The file the geometry was read from.
    """

    affine: np.ndarray
    header: nib.Nifti1Header
    file_shape: tuple[int, int, int]
    source: Path

    @property
    def _to_display_ornt(self) -> np.ndarray:
        start = orientations.io_orientation(self.affine)
        return orientations.ornt_transform(start, orientations.axcodes2ornt(DISPLAY_AXCODES))

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size in mm along the display axes (slice, row, column)."""
        zooms = np.sqrt((self.affine[:3, :3] ** 2).sum(axis=0))
        ornt = self._to_display_ornt
        spacing = [0.0, 0.0, 0.0]
        for file_axis, (display_axis, _) in enumerate(ornt):
            spacing[int(display_axis)] = float(zooms[file_axis])
        return tuple(spacing)

    @property
    def display_shape(self) -> tuple[int, int, int]:
        """Shape of the array in display orientation."""
        shape = [0, 0, 0]
        for file_axis, (display_axis, _) in enumerate(self._to_display_ornt):
            shape[int(display_axis)] = self.file_shape[file_axis]
        return tuple(shape)

    @property
    def is_oblique(self) -> bool:
        """True when the voxel axes are not aligned with the world axes."""
        rot = self.affine[:3, :3] / np.sqrt((self.affine[:3, :3] ** 2).sum(axis=0))
        return not np.allclose(np.abs(rot), np.round(np.abs(rot)), atol=1e-4)

    def to_display(self, array: np.ndarray) -> np.ndarray:
        """Reorder a file-ordered ``(I, J, K)`` array into display order ``(Z, Y, X)``."""
        return orientations.apply_orientation(array, self._to_display_ornt)

    def to_file(self, array: np.ndarray) -> np.ndarray:
        """Inverse of :meth:`to_display`."""
        start = orientations.io_orientation(self.affine)
        back = orientations.ornt_transform(orientations.axcodes2ornt(DISPLAY_AXCODES), start)
        return orientations.apply_orientation(array, back)


@dataclass(frozen=True)
class CaseFiles:
    """Where the files of one case are.

    Attributes
    ----------
    case_id
        The case's identifier, e.g. ``BraTS2021_00000``.
    folder
        The folder that holds the case.
    images
        Modality name -> file. For the Decathlon layout all modalities share one 4-D file.
    seg
        The segmentation file, or None.
    layout
        ``brats2021``, ``brats2023`` or ``decathlon``.
    """

    case_id: str
    folder: Path
    images: dict[str, Path]
    seg: Path | None
    layout: str

    @property
    def inputs(self) -> set[Path]:
        """Every input file (scans and segmentation): never to be overwritten."""
        files = {p.resolve() for p in self.images.values()}
        return files | ({self.seg.resolve()} if self.seg else set())


@dataclass
class Case:
    """A loaded case: arrays in display order and the geometry to write results back.

    Attributes
    ----------
    case_id
        Identifier of the case.
    files
        Where it came from.
    images
        Modality -> C-contiguous float32 array ``(Z, Y, X)`` in display order.
    seg
        Normalised labels ``(Z, Y, X)``, C-contiguous uint8 (see module docstring), or None.
    geometry
        Geometry of the first modality's file (all modalities share it).
    """

    case_id: str
    files: CaseFiles
    images: dict[str, np.ndarray]
    seg: np.ndarray | None
    geometry: Geometry
    warnings: list[str] = field(default_factory=list)

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size in mm along (Z, Y, X)."""
        return self.geometry.spacing

    @property
    def whole_tumour(self) -> np.ndarray | None:
        """Whole-tumour mask (every non-zero label), or None without a segmentation."""
        return None if self.seg is None else self.seg > 0


def _split_nifti(path: Path) -> tuple[str, str] | None:
    match = _NIFTI.match(path.name)
    return (match["stem"], match["ext"]) if match else None


def _match_suffix(stem: str) -> tuple[str, str, str] | None:
    """Return (layout, key, case_id) when a file stem ends with a known BraTS suffix."""
    for layout, suffixes in _SUFFIXES.items():
        for key, suffix in suffixes.items():
            if stem.lower().endswith(suffix) and len(stem) > len(suffix):
                return layout, key, stem[: -len(suffix)]
    return None


def _decathlon_case(path: Path) -> CaseFiles:
    stem = _split_nifti(path)[0]
    root = path.parent.parent
    image = next(
        (
            root / sub / f"{stem}{ext}"
            for sub in ("imagesTr", "imagesTs")
            for ext in (".nii.gz", ".nii")
            if (root / sub / f"{stem}{ext}").is_file()
        ),
        None,
    )
    if image is None:
        raise CaseError(path, "no 4-D image file for this label file in imagesTr or imagesTs")
    labels = [root / "labelsTr" / f"{stem}{ext}" for ext in (".nii.gz", ".nii")]
    seg = next((p for p in labels if p.is_file()), None)
    return CaseFiles(
        stem, image.parent, dict.fromkeys(_DECATHLON_CHANNELS, image), seg, "decathlon"
    )


def _cases_in_folder(folder: Path) -> dict[str, dict[str, list[Path]]]:
    """Group the BraTS-named NIfTI files of one folder by (layout, case id).

    Hidden files are skipped: macOS leaves ``._<name>`` copies next to every file it unpacks,
    and :func:`save_volume` writes through hidden temporary files.
    """
    groups: dict[str, dict[str, list[Path]]] = {}
    for path in sorted(folder.iterdir()):
        parts = _split_nifti(path)
        if not parts or path.name.startswith("."):
            continue
        if not path.is_file():
            if path.is_dir():
                continue
            raise CaseError(path, "not a readable file (a broken or looping link, a pipe?)")
        found = _match_suffix(parts[0])
        if found is None:
            continue
        layout, key, case_id = found
        groups.setdefault(f"{layout}\0{case_id}", {}).setdefault(key, []).append(path)
    return groups


def _case_from_group(folder: Path, group_key: str, files: dict[str, list[Path]]) -> CaseFiles:
    layout, case_id = group_key.split("\0")
    for key, paths in files.items():
        if len(paths) > 1:
            names = ", ".join(p.name for p in paths)
            raise CaseError(folder, f"case {case_id} has {len(paths)} files for {key}: {names}")
    images = {m: files[m][0] for m in MODALITIES if m in files}
    seg = files["seg"][0] if "seg" in files else None
    if not images:
        raise CaseError(folder, f"case {case_id} has a segmentation but no image modality")
    return CaseFiles(case_id, folder, images, seg, layout)


def find_case(path: str | os.PathLike) -> CaseFiles:
    """Locate the files of the case that ``path`` belongs to.

    Parameters
    ----------
    path
        A case folder, or any one of the case's NIfTI files (a scan or the segmentation;
        for the Decathlon layout the 4-D image or its label file).

    Returns
    -------
    CaseFiles

    Raises
    ------
    CaseError
        When the path does not exist, holds no BraTS case, holds several cases, or has two
        files for one modality.
    """
    path = Path(path)
    if not path.exists():
        reason = "a broken symbolic link" if path.is_symlink() else "no such file or folder"
        raise CaseError(path, reason)
    if not path.is_file() and not path.is_dir():
        raise CaseError(path, "not a regular file or folder (a pipe or a device?)")
    if path.is_file():
        parts = _split_nifti(path)
        if parts is None:
            raise CaseError(path, "not a NIfTI file (.nii or .nii.gz)")
        if path.name.startswith("."):
            raise CaseError(path, "hidden file (e.g. a macOS '._' copy), not a scan")
        if path.parent.name in ("imagesTr", "imagesTs", "labelsTr"):
            return _decathlon_case(path)
        found = _match_suffix(parts[0])
        if found is None:
            raise CaseError(
                path,
                "file name does not follow a BraTS layout "
                "(expected e.g. <case>_flair.nii.gz or <case>-t2f.nii.gz)",
            )
        layout, _, case_id = found
        key = f"{layout}\0{case_id}"
        return _case_from_group(path.parent, key, _cases_in_folder(path.parent)[key])
    groups = _cases_in_folder(path)
    if not groups:
        raise CaseError(path, "no BraTS modality files (t1, t1ce, t2, flair) in this folder")
    if len(groups) > 1:
        ids = sorted(k.split("\0")[1] for k in groups)
        raise CaseError(path, f"folder holds {len(ids)} cases ({', '.join(ids)}); open one")
    key, files = next(iter(groups.items()))
    return _case_from_group(path, key, files)


def find_cases(data_dir: str | os.PathLike) -> list[CaseFiles]:
    """Every case under a data folder (any layout, searched recursively), sorted by id.

    Raises
    ------
    CaseError
        When the folder does not exist or holds no case at all.
    """
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise CaseError(data_dir, "not a folder")
    cases: dict[str, CaseFiles] = {}
    for folder in sorted([data_dir, *(p for p in data_dir.rglob("*") if p.is_dir())]):
        if folder.name in ("imagesTr", "imagesTs"):
            for path in sorted(folder.iterdir()):
                if _split_nifti(path) and path.is_file() and not path.name.startswith("."):
                    case = _decathlon_case(path)
                    cases.setdefault(case.case_id, case)
            continue
        for key, files in _cases_in_folder(folder).items():
            case = _case_from_group(folder, key, files)
            if case.case_id in cases:
                raise CaseError(
                    folder, f"case {case.case_id} also exists in {cases[case.case_id].folder}"
                )
            cases[case.case_id] = case
    if not cases:
        raise CaseError(data_dir, "no BraTS case found in this folder or below")
    return [cases[k] for k in sorted(cases)]


def read_limits() -> dict[str, int]:
    """Bounds checked on a NIfTI header before any of its data is read.

    ``EQUICAM_MAX_AXIS`` (default 2048 voxels along any axis) and ``EQUICAM_MAX_VOXELS``
    (default 2**26, about 67 million voxels: seven BraTS volumes) override them. A file past
    them is refused before memory is allocated for it.
    """
    return {
        "axis": int(os.environ.get("EQUICAM_MAX_AXIS", 2048)),
        "voxels": int(os.environ.get("EQUICAM_MAX_VOXELS", 2**26)),
    }


def _open_stream(path: Path):
    return gzip.open(path, "rb") if path.name.lower().endswith(".gz") else open(path, "rb")


def _read_header(path: Path, head: bytes) -> nib.Nifti1Header:
    sizes = {int.from_bytes(head[:4], order) for order in ("little", "big")}
    klass = nib.Nifti1Header if 348 in sizes else nib.Nifti2Header if 540 in sizes else None
    header = None if klass is None else klass.from_fileobj(io.BytesIO(head), check=False)
    if header is None or header["magic"].item() not in (b"n+1", b"n+2"):
        raise CaseError(
            path,
            "cannot read NIfTI, the file is truncated or corrupt (its header is not a "
            "single-file NIfTI-1 or NIfTI-2 header)",
        )
    try:
        header.get_data_dtype()
    except Exception:  # noqa: BLE001 - nibabel's unknown-code error
        raise CaseError(
            path, f"cannot read NIfTI: unknown data type code {int(header['datatype'])}"
        ) from None
    return header


def _check_header(path: Path, header: nib.Nifti1Header) -> int:
    """Refuse a header whose data would be unusable or too large; returns the bytes to read."""
    limits = read_limits()
    shape = header.get_data_shape()
    if not shape or any(int(d) < 1 for d in shape):
        raise CaseError(path, f"the header gives an empty shape {shape}")
    if max(shape) > limits["axis"] or math.prod(shape) > limits["voxels"]:
        raise CaseError(
            path,
            f"the header claims shape {shape}, beyond the limits ({limits['axis']} voxels a "
            f"side, {limits['voxels']} in all; raise EQUICAM_MAX_AXIS / EQUICAM_MAX_VOXELS "
            "if this is a real scan)",
        )
    dtype = header.get_data_dtype()
    if dtype.kind == "c":
        raise CaseError(path, f"complex data ({dtype}) is not a magnitude image")
    if dtype.fields is not None or dtype.kind not in "biuf":
        raise CaseError(path, f"RGB or other non-scalar data ({dtype}) is not an MRI scan")
    offset = int(header["vox_offset"])
    if not header.sizeof_hdr <= offset <= 2**24:
        raise CaseError(path, f"the header's data offset {offset} is not plausible")
    return offset + math.prod(shape) * dtype.itemsize


def read_nifti(path: Path) -> tuple[np.ndarray, nib.Nifti1Image]:
    """Read a NIfTI file, checking its header against :func:`read_limits` first.

    Only the bytes the header promises are decompressed, so a file cannot make the reader
    allocate more than the limits allow.
    """
    if not path.is_file():
        raise CaseError(path, "not a regular file (a folder, pipe, device or broken link)")
    try:
        with _open_stream(path) as stream:
            head = stream.read(540)
            header = _read_header(path, head)
            expected = _check_header(path, header)
            raw = (head + stream.read(max(0, expected - len(head))))[:expected]
            stream.read(1)  # reaches a compressed file's end: its length and CRC are checked
        if len(raw) < expected:
            raise CaseError(
                path,
                "cannot read NIfTI, the file is truncated or corrupt (the header promises "
                f"{expected} bytes, the file holds {len(raw)})",
            )
        image = nib.Nifti2Image if isinstance(header, nib.Nifti2Header) else nib.Nifti1Image
        image = image.from_bytes(raw)
        with np.errstate(all="ignore"):
            data = np.asanyarray(image.dataobj)
    except CaseError:
        raise
    except Exception as error:  # noqa: BLE001 - gzip, zlib and nibabel raise many kinds
        raise CaseError(
            path, f"cannot read NIfTI, the file is truncated or corrupt ({error})"
        ) from None
    return data, image


def _as_float32(path: Path, data: np.ndarray, what: str) -> np.ndarray:
    """``data`` (after the header's scaling) as float32, refusing values that do not fit."""
    with np.errstate(all="ignore"):
        volume = np.asarray(data, dtype=np.float32)
    bad = int(np.count_nonzero(~np.isfinite(volume)))
    if bad:
        raise CaseError(
            path, f"{what} holds {bad} NaN or infinite voxels (after the header's scaling)"
        )
    return volume


def _check_volume(path: Path, data: np.ndarray, what: str) -> None:
    if data.ndim != 3:
        raise CaseError(
            path, f"{what} must be a 3-D volume, found {data.ndim}-D shape {data.shape}"
        )
    if what != "segmentation" and not np.any(data):
        raise CaseError(path, f"{what} is empty (every voxel is 0)")
    if what != "segmentation" and np.ptp(data) == 0:
        raise CaseError(path, f"{what} is constant (every voxel is {data.flat[0]})")


def _normalise_labels(path: Path, data: np.ndarray, layout: str) -> np.ndarray:
    if np.issubdtype(data.dtype, np.floating) and not np.array_equal(data, np.round(data)):
        raise CaseError(path, "segmentation holds non-integer values")
    values = set(np.unique(data).astype(int).tolist())
    mapping = _LABEL_MAPS[layout]
    unknown = values - set(mapping)
    if unknown:
        raise CaseError(
            path,
            f"segmentation holds labels {sorted(unknown)} that the {layout} layout does not use "
            f"(expected {sorted(mapping)})",
        )
    lut = np.zeros(max(mapping) + 1, dtype=np.uint8)
    for raw, norm in mapping.items():
        lut[raw] = norm
    return lut[data.astype(np.int64)]


def file_geometry(path: Path, image: nib.Nifti1Image, shape: tuple[int, ...]) -> Geometry:
    """The :class:`Geometry` of a read file; a missing or singular affine is refused."""
    affine = image.affine
    if (
        affine is None
        or not np.all(np.isfinite(affine))
        or abs(np.linalg.det(affine[:3, :3])) < 1e-9
    ):
        raise CaseError(path, "the file's affine is missing or singular")
    return Geometry(affine.copy(), image.header.copy(), tuple(int(s) for s in shape[:3]), path)


def _same_geometry(path: Path, geometry: Geometry, reference: Geometry) -> None:
    if geometry.file_shape != reference.file_shape:
        raise CaseError(
            path,
            f"shape {geometry.file_shape} differs from {reference.source.name} "
            f"{reference.file_shape}",
        )
    if not np.allclose(geometry.affine, reference.affine, atol=_AFFINE_TOL_MM):
        raise CaseError(
            path,
            f"affine differs from {reference.source.name}: the modalities are not co-registered",
        )


def load_case(
    case: str | os.PathLike | CaseFiles, modalities: Sequence[str] | None = None
) -> Case:
    """Load a case's modalities (and segmentation) in display orientation.

    Parameters
    ----------
    case
        A case folder, one of its files, or a :class:`CaseFiles`.
    modalities
        The modalities to load; default all of :data:`MODALITIES` that the case has.
        A missing modality gives a :class:`CaseWarning`; none at all is an error.

    Returns
    -------
    Case

    Raises
    ------
    CaseError
        For any bad file: unreadable, not 3-D (4-D with 4 channels for the Decathlon layout),
        NaN/Inf, empty, mismatched shapes or affines, unknown segmentation labels.
    """
    files = case if isinstance(case, CaseFiles) else find_case(case)
    wanted = tuple(modalities) if modalities is not None else MODALITIES
    unknown = [m for m in wanted if m not in MODALITIES]
    if unknown:
        raise ValueError(f"unknown modalities {unknown}; known: {list(MODALITIES)}")
    notes = []
    missing = [m for m in wanted if m not in files.images]
    present = [m for m in wanted if m in files.images]
    if not present:
        raise CaseError(files.folder, f"case {files.case_id} has none of {list(wanted)}")
    if missing:
        notes.append(
            f"{files.folder}: case {files.case_id} has no {', '.join(missing)} file; "
            f"loading {', '.join(present)}"
        )

    raw: dict[str, np.ndarray] = {}
    reference: Geometry | None = None
    if files.layout == "decathlon":
        path = files.images[present[0]]
        data, image = read_nifti(path)
        if data.ndim != 4 or data.shape[3] != len(_DECATHLON_CHANNELS):
            raise CaseError(
                path,
                f"Decathlon image must be 4-D with {len(_DECATHLON_CHANNELS)} channels "
                f"({', '.join(_DECATHLON_CHANNELS)}), found shape {data.shape}",
            )
        reference = file_geometry(path, image, data.shape)
        for m in present:
            volume = _as_float32(path, data[..., _DECATHLON_CHANNELS.index(m)], f"channel {m}")
            _check_volume(path, volume, f"channel {m}")
            raw[m] = volume
    else:
        for m in present:
            path = files.images[m]
            data, image = read_nifti(path)
            if data.ndim == 4 and data.shape[3] == 1:
                data = data[..., 0]
            data = _as_float32(path, data, m)
            _check_volume(path, data, m)
            geometry = file_geometry(path, image, data.shape)
            if reference is None:
                reference = geometry
            else:
                _same_geometry(path, geometry, reference)
            raw[m] = data

    assert reference is not None
    if reference.is_oblique:
        notes.append(
            f"{reference.source}: oblique orientation; shown in the nearest axis-aligned "
            "orientation, results are saved in the file's own geometry"
        )
    seg = None
    if files.seg is not None:
        data, image = read_nifti(files.seg)
        if data.ndim == 4 and data.shape[3] == 1:
            data = data[..., 0]
        _check_volume(files.seg, data, "segmentation")
        if np.issubdtype(data.dtype, np.floating) and not np.all(np.isfinite(data)):
            raise CaseError(files.seg, "segmentation holds NaN or infinite voxels")
        _same_geometry(files.seg, file_geometry(files.seg, image, data.shape), reference)
        seg = np.ascontiguousarray(
            reference.to_display(_normalise_labels(files.seg, data, files.layout))
        )
    images = {
        m: np.ascontiguousarray(reference.to_display(v), dtype=np.float32) for m, v in raw.items()
    }
    for note in notes:
        warnings.warn(note, CaseWarning, stacklevel=2)
    return Case(files.case_id, files, images, seg, reference, notes)


def save_volume(
    array: np.ndarray,
    geometry: Geometry,
    path: str | os.PathLike,
    *,
    dtype: str = "uint8",
    protect: Iterable[str | os.PathLike] = (),
    replace: bool = False,
    description: str | None = None,
) -> Path:
    """Write a display-ordered array as NIfTI in the source scan's geometry, safely.

    Parameters
    ----------
    array
        ``(Z, Y, X)`` array in display order (as in :class:`Case`).
    geometry
        The geometry of the scan it belongs to; its affine and header are written.
    path
        Target ``.nii`` or ``.nii.gz`` file.
    dtype
        Stored data type: ``uint8`` for masks, ``float32`` for maps.
    protect
        Files that must never be overwritten (the case's input scans).
    replace
        Replace an existing file of that name; by default an existing file is kept and the
        save refused. Files named like a BraTS scan or segmentation are never written.
    description
        Written to the header's ``descrip`` field (ASCII, cut at its 79 characters): what
        made the volume; default the scan's own description.

    Returns
    -------
    Path
        The written file.

    Raises
    ------
    CaseError
        When the name is not a NIfTI name or the shape does not match the geometry.
    equicam.core.atomic.SaveError
        When the target is refused (a scan's name, an existing file) or the write fails.
        Nothing is left half-written (see :mod:`equicam.core.atomic`).
    """
    path = Path(path)
    parts = _split_nifti(path)
    if parts is None:
        raise CaseError(path, "output name must end in .nii or .nii.gz")
    if tuple(array.shape) != geometry.display_shape:
        raise CaseError(
            path, f"array shape {array.shape} does not match the scan {geometry.display_shape}"
        )
    header = geometry.header.copy()
    header.set_data_dtype(np.dtype(dtype))
    header.set_slope_inter(1.0, 0.0)
    if description is not None:
        header["descrip"] = description.encode("ascii", "replace")[:79]
    image_class = nib.Nifti2Image if isinstance(header, nib.Nifti2Header) else nib.Nifti1Image
    image = image_class(geometry.to_file(np.asarray(array).astype(dtype)), geometry.affine, header)

    def serialise(handle) -> None:
        if parts[1] == ".nii.gz":
            with gzip.GzipFile(fileobj=handle, mode="wb", compresslevel=1, mtime=0) as packed:
                packed.write(image.to_bytes())
        else:
            handle.write(image.to_bytes())

    return write_file(path, serialise, replace=replace, protect=protect)
