"""Hostile scans and case paths: damaged headers and data, odd files, odd folders."""

from __future__ import annotations

import gzip
import os
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np

from tests.conftest import BRATS_LPS, modality_volume, raw_labels, write_case
from tests.hostile.common import SHAPE, Run, cam_argv, flair_of, write_test_case


def _raw_nifti(header: nib.Nifti1Header, payload: bytes) -> bytes:
    return header.binaryblock + b"\0" * 4 + payload


def _header(dtype=np.int16) -> nib.Nifti1Header:
    image = nib.Nifti1Image(modality_volume("flair", SHAPE).astype(dtype), BRATS_LPS)
    image.header.set_data_dtype(dtype)
    header = image.header.copy()
    header["vox_offset"] = 352
    return header


def _scan(damage: Callable[[Path], None], phrase: str) -> Callable[[Path], Run]:
    """A kind where the case's FLAIR file is damaged by ``damage(path)``."""

    def build(root: Path) -> Run:
        case = write_test_case(root)
        damage(flair_of(case))
        return Run(cam_argv(root, case), phrase, flair_of(case))

    return build


def _save(volume, header=None, affine=BRATS_LPS) -> Callable[[Path], None]:
    return lambda path: nib.save(nib.Nifti1Image(volume, affine, header), path)


def _bytes(data: bytes) -> Callable[[Path], None]:
    return lambda path: path.write_bytes(data)


def _gz_header(edit: Callable[[nib.Nifti1Header], None], payload: bytes = b"\0" * 64):
    def damage(path: Path) -> None:
        header = _header()
        edit(header)
        path.write_bytes(gzip.compress(_raw_nifti(header, payload)))

    return damage


def _set(field_name: str, value):
    def edit(header):
        header[field_name] = value

    return edit


def _dims(*dims: int):
    def edit(header):
        header["dim"][: len(dims) + 1] = [len(dims), *dims]

    return edit


def _singular(path: Path) -> None:
    raw = bytearray(gzip.decompress(path.read_bytes()))
    raw[252:256] = np.int16([0, 2]).tobytes()  # qform unused, sform used...
    raw[312:328] = bytes(16)  # ...and srow_z maps every voxel to z = 0
    path.write_bytes(gzip.compress(bytes(raw)))


def _scaled(slope: float) -> Callable[[Path], None]:
    def damage(path: Path) -> None:
        image = nib.Nifti1Image(modality_volume("flair", SHAPE), BRATS_LPS)
        image.to_filename(path)
        raw = bytearray(gzip.decompress(path.read_bytes()))
        raw[112:116] = np.float32(slope).tobytes()  # nibabel would not store it as given
        path.write_bytes(gzip.compress(bytes(raw)))

    return damage


def _replace_with(make: Callable[[Path], None]) -> Callable[[Path], None]:
    def damage(path: Path) -> None:
        path.unlink()
        make(path)

    return damage


def _complex_nan(path: Path) -> None:
    volume = modality_volume("flair", SHAPE).astype(np.complex64)
    volume[0, 0, 0] = np.nan
    nib.save(nib.Nifti1Image(volume, BRATS_LPS), path)


def _rgb(kind: str) -> Callable[[Path], None]:
    def damage(path: Path) -> None:
        fields = "RGBA" if kind == "RGBA" else "RGB"
        dtype = np.dtype([(c, "u1") for c in fields])
        volume = np.zeros(SHAPE, dtype)
        volume["R"] = modality_volume("flair", SHAPE) % 255
        nib.save(nib.Nifti1Image(volume, BRATS_LPS), path)

    return damage


def _nifti2_huge(path: Path) -> None:
    header = nib.Nifti2Header()
    header.set_data_dtype(np.int16)
    header.set_data_shape((100_000, 100_000, 100_000))
    header["vox_offset"] = 544
    path.write_bytes(gzip.compress(header.binaryblock + b"\0" * 4 + b"\0" * 64))


def _two_flairs(root: Path) -> Run:
    case = write_test_case(root)
    nib.save(nib.load(flair_of(case)), case / "BraTS2021_00001_flair.nii")
    return Run(cam_argv(root, case), "2 files for flair", case)


def _seg(volume, phrase: str = "segmentation") -> Callable[[Path], Run]:
    def build(root: Path) -> Run:
        case = write_test_case(root)
        seg = case / "BraTS2021_00001_seg.nii.gz"
        nib.save(nib.Nifti1Image(volume, BRATS_LPS), seg)
        return Run(["prepare", str(root), "--out", str(root / "cache")], phrase, seg)

    return build


def _nan_volume(value=np.nan):
    volume = modality_volume("flair", SHAPE).astype(np.float32)
    volume[1, 1, 1] = value
    return volume


def _fifo(path: Path) -> None:
    os.mkfifo(path)


def _loop(path: Path) -> None:
    path.symlink_to(path.name)


SCAN_KINDS: dict[str, tuple[Callable[[Path], Run]]] = {
    "2-D scan": _scan(_save(np.ones((12, 10), np.int16)), "3-D volume, found 2-D"),
    "4-D scan, 2 volumes": _scan(_save(np.ones((*SHAPE, 2), np.int16)), "found 4-D"),
    "5-D scan": _scan(_save(np.ones((*SHAPE, 1, 2), np.int16)), "found 5-D"),
    "NaN voxel": _scan(_save(_nan_volume()), "NaN or infinite"),
    "Inf voxel": _scan(_save(_nan_volume(np.inf)), "NaN or infinite"),
    "empty scan": _scan(_save(np.zeros(SHAPE, np.int16)), "empty"),
    "constant scan": _scan(_save(np.full(SHAPE, 5, np.int16)), "constant"),
    "other shape": _scan(_save(modality_volume("flair", (12, 10, 9))), "differs from"),
    "other affine": _scan(
        _save(modality_volume("flair", SHAPE), affine=BRATS_LPS + np.eye(4, 4, 3) * 2),
        "affine differs|not co-registered",
    ),
    "singular affine": _scan(_singular, "affine is missing or singular"),
    "truncated .nii.gz": _scan(
        lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]), "truncated"
    ),
    "random bytes": _scan(_bytes(os.urandom(3000)), "truncated or corrupt"),
    "gzip of garbage": _scan(_bytes(gzip.compress(b"garbage" * 300)), "truncated or corrupt"),
    "zero-byte file": _scan(_bytes(b""), "truncated or corrupt"),
    "header claims 1024x1024x512": _scan(_gz_header(_dims(1024, 1024, 512)), "beyond the limits"),
    "header claims 2**40 voxels": _scan(_gz_header(_dims(32767, 32767, 32767)), "beyond"),
    "header dim 0": _scan(_gz_header(_dims(0, 10, 8)), "empty shape"),
    "header dim negative": _scan(_gz_header(_dims(-5, 10, 8)), "empty shape"),
    "header 7 dims": _scan(_gz_header(_dims(2, 2, 2, 2, 2, 2, 2), b"\0" * 256), "3-D volume"),
    "unknown datatype code": _scan(_gz_header(_set("datatype", 9999)), "unknown data type"),
    "vox_offset 1e9": _scan(_gz_header(_set("vox_offset", 1e9)), "offset"),
    "vox_offset inside header": _scan(_gz_header(_set("vox_offset", 10)), "offset"),
    "data shorter than header says": _scan(_gz_header(lambda h: None, b"\0" * 10), "truncated"),
    "bad magic": _scan(_gz_header(_set("magic", b"xyz")), "truncated or corrupt"),
    "NIfTI-2 huge dims": _scan(_nifti2_huge, "beyond the limits"),
    "scl_slope 1e38 on int16": _scan(_scaled(1e38), "NaN or infinite voxels"),
    "scl_slope NaN (means no scaling)": _scan(_scaled(float("nan")), None),
    "float64 x 1e305": _scan(_save(modality_volume("flair", SHAPE) * 1e305), "NaN or infinite"),
    "complex64 with a NaN": _scan(_complex_nan, "complex data"),
    "RGB24 scan": _scan(_rgb("RGB"), "RGB"),
    "RGBA32 scan": _scan(_rgb("RGBA"), "RGB"),
    "FIFO as the FLAIR file": _scan(_replace_with(_fifo), "not a readable file"),
    "symbolic link loop as FLAIR": _scan(_replace_with(_loop), "not a readable file"),
    "broken link as FLAIR": _scan(
        _replace_with(lambda p: p.symlink_to("/nonexistent/x")), "not a readable file"
    ),
    "folder named like a FLAIR file": _scan(_replace_with(lambda p: p.mkdir()), None),
    "FLAIR both .nii and .nii.gz": _two_flairs,
}


def seg_kinds() -> dict[str, Callable[[Path], Run]]:
    return {
        "seg label 5": _seg(np.full(SHAPE, 5, np.uint8)),
        "seg non-integer": _seg(np.full(SHAPE, 0.5, np.float32)),
        "seg NaN": _seg(np.full(SHAPE, np.nan, np.float32)),
        "seg other shape": _seg(np.zeros((12, 10, 7), np.uint8), "shape .* differs"),
        "seg 2023 labels in 2021 layout": _seg(raw_labels(SHAPE, "brats2023")),
    }


def _path_kind(make: Callable[[Path], Path], phrase: str) -> Callable[[Path], Run]:
    def build(root: Path) -> Run:
        target = make(root)
        return Run(cam_argv(root, target), phrase, target)

    return build


def _two_cases(root: Path) -> Path:
    write_case(root / "data", case_id="BraTS2021_00001")
    write_case(root / "data", case_id="BraTS2021_00002")
    return root / "data"


def _fifo_case(root: Path) -> Path:
    os.mkfifo(root / "pipe")
    return root / "pipe"


def _text(root: Path) -> Path:
    (root / "notes.txt").write_text("not a scan")
    return root / "notes.txt"


def _other_name(root: Path) -> Path:
    path = root / "brain.nii.gz"
    nib.save(nib.Nifti1Image(modality_volume("t1", SHAPE), BRATS_LPS), path)
    return path


def _hidden_only(root: Path) -> Path:
    folder = root / "case"
    folder.mkdir()
    (folder / "._BraTS2021_00001_flair.nii.gz").write_bytes(b"\0\5\26\7")
    return folder


PATH_KINDS = {
    "case does not exist": _path_kind(lambda r: r / "missing", "no such file"),
    "empty folder as case": _path_kind(lambda r: (r / "e").mkdir() or r / "e", "no BraTS"),
    "folder of two cases": _path_kind(_two_cases, "holds 2 cases"),
    "FIFO as the case": _path_kind(_fifo_case, "not a regular file or folder"),
    "/dev/zero as the case": _path_kind(lambda r: Path("/dev/zero"), "not a regular file"),
    "text file as the case": _path_kind(_text, "not a NIfTI file"),
    "NIfTI not named like BraTS": _path_kind(_other_name, "does not follow a BraTS layout"),
    "only a macOS ._ copy": _path_kind(_hidden_only, "no BraTS"),
}
