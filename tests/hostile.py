"""A catalogue of hostile inputs and faults for the command line, each built for real on disk.

Each kind builds its files under a fresh folder and returns the ``equicam`` arguments to run,
what the one-line error must say (or None when the run must succeed) and the file it must
name. ``tests/test_hostile.py`` asserts each; ``bench/hostile_inputs.py`` counts them.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import os
import pickle
import re
import stat
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np

from equicam.core.atomic import TEMP_SUFFIX
from tests.conftest import BRATS_LPS, modality_volume, raw_labels, write_case

SHAPE = (12, 10, 8)


@dataclass
class Run:
    """One command to run: its arguments, the expected error phrase (None: must succeed),
    the file or folder the error must name, and commands to run first (must succeed)."""

    argv: list[str]
    phrase: str | None
    names: Path | None = None
    before: list[list[str]] = field(default_factory=list)


def tiny_checkpoint(path: Path, meta: dict | None = None, tensors: dict | None = None) -> Path:
    """A small real checkpoint; ``meta`` replaces the ``equicam`` metadata, ``tensors`` the
    weights (written with safetensors directly, as a hostile file would be)."""
    import torch
    from safetensors.torch import save_file

    from equicam.core.checkpoint import save_checkpoint
    from equicam.core.model import ModelConfig, MultiModalCAM

    torch.manual_seed(0)
    model = MultiModalCAM(ModelConfig(widths=(4, 8, 8, 8), input_size=32))
    save_checkpoint(path, model, {"threshold": 0.4})
    if meta is None and tensors is None:
        return path
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        good_meta = json.loads(handle.metadata()["equicam"])
        good = {k: handle.get_tensor(k) for k in handle.keys()}  # noqa: SIM118
    path.unlink()
    raw = meta if isinstance(meta, str) else json.dumps({**good_meta, **(meta or {})})
    save_file(tensors if tensors is not None else good, str(path), metadata={"equicam": raw})
    return path


def _case(root: Path) -> Path:
    return write_case(root / "BraTS2021_00001", case_id="BraTS2021_00001")


def _flair(case: Path) -> Path:
    return case / "BraTS2021_00001_flair.nii.gz"


def _cam(root: Path, case: Path | str, checkpoint: Path | None = None, *extra: str) -> list[str]:
    checkpoint = checkpoint or tiny_checkpoint(root / "tiny.safetensors")
    return ["cam", str(case), "--checkpoint", str(checkpoint), "--out", str(root / "out"),
            "--device", "cpu", *extra]  # fmt: skip


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
        case = _case(root)
        damage(_flair(case))
        return Run(_cam(root, case), phrase, _flair(case))

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
    case = _case(root)
    nib.save(nib.load(_flair(case)), case / "BraTS2021_00001_flair.nii")
    return Run(_cam(root, case), "2 files for flair", case)


def _seg(volume, phrase: str = "segmentation") -> Callable[[Path], Run]:
    def build(root: Path) -> Run:
        case = _case(root)
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


def _seg_kinds() -> dict[str, Callable[[Path], Run]]:
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
        return Run(_cam(root, target), phrase, target)

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


def _ckpt(meta=None, tensors=None, phrase="", raw: bytes | None = None):
    def build(root: Path) -> Run:
        case = _case(root)
        path = root / "bad.safetensors"
        if raw is not None:
            path.write_bytes(raw)
        else:
            tiny_checkpoint(path, meta, tensors() if callable(tensors) else tensors)
        return Run(_cam(root, case, path), phrase, path)

    return build


def _good_tensors():
    from safetensors.torch import load_file

    path = Path(os.environ.get("TMPDIR", "/tmp")) / f"equicam-good-{os.getpid()}.safetensors"
    tiny_checkpoint(path)
    tensors = load_file(str(path))
    path.unlink()
    return tensors


def _int_weights():
    return {k: v.to(int) if v.is_floating_point() else v for k, v in _good_tensors().items()}


def _nan_weights():
    tensors = _good_tensors()
    first = next(k for k, v in tensors.items() if v.is_floating_point())
    tensors[first] = tensors[first].clone()
    tensors[first].view(-1)[0] = float("nan")
    return tensors


def _first_weight(tensors: dict) -> str:
    return next(k for k, v in tensors.items() if k.endswith("weight") and v.ndim > 1)


def _wrong_shape():
    tensors = _good_tensors()
    first = _first_weight(tensors)
    tensors[first] = tensors[first][:1].clone()
    return tensors


def _missing_weight():
    tensors = _good_tensors()
    tensors.pop(_first_weight(tensors))
    return tensors


class _Payload:
    def __reduce__(self):
        return (os.system, ("echo pwned > /tmp/equicam-pwned",))


def _truncated_checkpoint(root: Path) -> Run:
    case = _case(root)
    path = tiny_checkpoint(root / "cut.safetensors")
    path.write_bytes(path.read_bytes()[:-500])
    return Run(_cam(root, case, path), "weights cannot be read|not a readable", path)


def _folder_checkpoint(root: Path) -> Run:
    (root / "ckpt.safetensors").mkdir()
    return Run(_cam(root, _case(root), root / "ckpt.safetensors"), "not a regular file",
               root / "ckpt.safetensors")  # fmt: skip


def _model(**settings):
    model = {"modalities": ["t1", "t1ce", "t2", "flair"], "widths": [4, 8, 8, 8]}
    return {"model": {**model, "input_size": 32, "n_classes": 2, "input_norm": "case", **settings}}


CHECKPOINT_KINDS = {
    "checkpoint missing": lambda r: Run(
        _cam(r, _case(r), r / "no.safetensors"), "no such", r / "no.safetensors"
    ),  # fmt: skip
    "checkpoint is a folder": _folder_checkpoint,
    "pickle .pt with a payload": _ckpt(raw=pickle.dumps(_Payload()), phrase="never unpickled"),
    "random bytes checkpoint": _ckpt(raw=os.urandom(5000), phrase="not a readable"),
    "truncated checkpoint": _truncated_checkpoint,
    "metadata not JSON": _ckpt(meta="{not json", phrase="not valid JSON"),
    "metadata nested 200,000 deep": _ckpt(meta="[" * 200_000 + "]" * 200_000, phrase="JSON"),
    "metadata 2 MB": _ckpt(meta=json.dumps({"x": "y" * 2_000_000}), phrase="too large"),
    "metadata format 2": _ckpt(meta={"format": 2}, phrase="unsupported checkpoint format"),
    "metadata without model": _ckpt(meta=json.dumps({"format": 1}), phrase="unsupported"),
    "model not an object": _ckpt(meta={"model": [1, 2]}, phrase="model must be an object"),
    "widths [200000]*4": _ckpt(meta=_model(widths=[200_000] * 4), phrase="model.widths"),
    "widths 'abcd'": _ckpt(meta=_model(widths="abcd"), phrase="model.widths"),
    "widths -1": _ckpt(meta=_model(widths=[-1, 8, 8, 8]), phrase="model.widths"),
    "widths 10 levels": _ckpt(meta=_model(widths=[4] * 10), phrase="model.widths"),
    "widths as floats": _ckpt(meta=_model(widths=[4.5, 8, 8, 8]), phrase="model.widths"),
    "input_size 40000": _ckpt(meta=_model(input_size=40_000), phrase="model.input_size"),
    "input_size 'big'": _ckpt(meta=_model(input_size="big"), phrase="model.input_size"),
    "modalities unknown": _ckpt(meta=_model(modalities=["pd"]), phrase="model.modalities"),
    "modalities repeated": _ckpt(meta=_model(modalities=["t1", "t1"]), phrase="modalities"),
    "n_classes 3": _ckpt(meta=_model(n_classes=3), phrase="n_classes"),
    "input_norm unknown": _ckpt(meta=_model(input_norm="zzz"), phrase="input_norm"),
    "unknown model key": _ckpt(meta=_model(depth=3), phrase="unknown model settings"),
    "thresholds a list": _ckpt(meta={"thresholds": [0.5]}, phrase="thresholds"),
    "threshold 'abc'": _ckpt(meta={"threshold": "abc"}, phrase="threshold"),
    "threshold 1.5": _ckpt(meta={"threshold": 1.5}, phrase="threshold"),
    "threshold NaN": _ckpt(meta={"threshold": float("nan")}, phrase="threshold"),
    "other preprocessing": _ckpt(meta={"preprocessing": "minmax"}, phrase="trained on"),
    "fusion_weights bad": _ckpt(meta={"fusion_weights": {"t1": -1}}, phrase="fusion_weights"),
    "integer weights": _ckpt(tensors=_int_weights, phrase="not floating point"),
    "NaN weight": _ckpt(tensors=_nan_weights, phrase="non-finite"),
    "weights of another shape": _ckpt(tensors=_wrong_shape, phrase="another architecture"),
    "a weight missing": _ckpt(tensors=_missing_weight, phrase="do not fit"),
}


def _out_is_file(root: Path) -> Run:
    (root / "out").write_text("a file")
    return Run(_cam(root, _case(root)), "cannot create|not a folder|is a file", root / "out")


def _out_in_case(root: Path) -> Run:
    case = _case(root)
    argv = _cam(root, case)
    argv[argv.index("--out") + 1] = str(case)
    return Run(argv, None)


def _two_cases_one_out(root: Path) -> Run:
    first = _case(root)
    second = write_case(root / "BraTS2021_00002", case_id="BraTS2021_00002")
    return Run(_cam(root, second), None, before=[_cam(root, first)])


def _edited_mask_rerun(root: Path) -> Run:
    """The second run must keep the folder of the first, whose mask the user relabels."""
    from equicam.core.cam_output import cam_case

    case = _case(root)
    argv = _cam(root, case)
    cam_case(case, argv[3], root / "out", device="cpu")
    mask = root / "out" / "BraTS2021_00001" / "mask-fused_mean.nii.gz"
    image = nib.load(mask)
    data = np.asarray(image.dataobj).copy()
    data[data == 1] = 2
    data[0, 0, 0] = 3
    nib.save(nib.Nifti1Image(data, image.affine, image.header), mask)
    return Run(argv, None)


def _prepare_into_cache(root: Path) -> Run:
    write_case(root / "data" / "A", case_id="BraTS2021_00001")
    out = root / "cache"
    out.mkdir()
    (out / "images.npy").write_bytes(b"somebody's cache")
    (out / "meta.json").write_text("{}")
    return Run(["prepare", str(root / "data"), "--out", str(out)], "already holds files", out)


def _prepare_size(size: str) -> Callable[[Path], Run]:
    def build(root: Path) -> Run:
        write_case(root / "data" / "A", case_id="BraTS2021_00001")
        argv = ["prepare", str(root / "data"), "--out", str(root / "c"), "--size", size]
        return Run(argv, "--size: must be an integer", Path("--size"))

    return build


def _threshold(value: str) -> Callable[[Path], Run]:
    return lambda r: Run(_cam(r, _case(r), None, "--threshold", value), "threshold")


OUTPUT_KINDS = {
    "--out is a file": _out_is_file,
    "--out is the case folder": _out_in_case,
    "two cases into one --out": _two_cases_one_out,
    "rerun over a relabelled mask": _edited_mask_rerun,
    "prepare into an existing cache": _prepare_into_cache,
    "prepare --size 0": _prepare_size("0"),
    "prepare --size -5": _prepare_size("-5"),
    "prepare --size 100000": _prepare_size("100000"),
    "prepare of a missing folder": lambda r: Run(
        ["prepare", str(r / "nothing"), "--out", str(r / "c")], "not a folder", r / "nothing"
    ),
    "--threshold 1.5": _threshold("1.5"),
    "--threshold nan": _threshold("nan"),
}

KINDS: dict[str, Callable[[Path], Run]] = {
    **SCAN_KINDS,
    **_seg_kinds(),
    **PATH_KINDS,
    **CHECKPOINT_KINDS,
    **OUTPUT_KINDS,
}


@dataclass
class Outcome:
    """What one kind did: exit status, stderr, files changed or lost, temporaries left."""

    run: Run
    status: int
    stderr: str
    lost: list[str]
    litter: list[str]

    @property
    def traceback(self) -> bool:
        return "Traceback" in self.stderr or self.status not in (0, 2)

    @property
    def clear(self) -> bool:
        """The expected outcome: success, or one error line with the phrase and the file."""
        errors = [line for line in self.stderr.splitlines() if ": error: " in line]
        if self.run.phrase is None:
            return self.status == 0 and not errors
        named = self.run.names is None or str(self.run.names) in self.stderr
        return (
            self.status == 2
            and len(errors) == 1
            and re.search(self.run.phrase, errors[0]) is not None
            and named
        )


def _snapshot(root: Path) -> dict[str, bytes]:
    return {
        str(p): p.read_bytes()
        for p in root.rglob("*")
        if p.is_file() and not p.is_symlink() and stat.S_ISREG(p.stat().st_mode)
    }


def run_kind(name: str, root: Path) -> Outcome:
    """Build kind ``name`` under ``root``, run it through ``equicam``'s entry point and
    report what happened (stderr captured; the exit status of ``main``)."""
    from equicam.cli import main

    run = KINDS[name](root)
    for argv in run.before:
        with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
            if main(argv) != 0:
                raise RuntimeError(f"{name}: the run before failed: {argv}")
    before = _snapshot(root)
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
            status = main(run.argv)
    except BaseException:  # noqa: BLE001 - an escaped exception is what is being counted
        status, text = -1, "Traceback (escaped main)\n" + traceback.format_exc()
        stderr.write(text)
    after = _snapshot(root)
    lost = sorted(p for p, data in before.items() if after.get(p) != data)
    litter = sorted(str(p) for p in root.rglob(f"*{TEMP_SUFFIX}"))
    return Outcome(run, status, stderr.getvalue(), lost, litter)
