"""Hostile checkpoints: pickles, damaged files, metadata out of the schema, bad weights."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

from tests.hostile.common import Payload, Run, cam_argv, tiny_checkpoint, write_test_case


def _ckpt(meta=None, tensors=None, phrase="", raw: bytes | None = None):
    def build(root: Path) -> Run:
        case = write_test_case(root)
        path = root / "bad.safetensors"
        if raw is not None:
            path.write_bytes(raw)
        else:
            tiny_checkpoint(path, meta, tensors() if callable(tensors) else tensors)
        return Run(cam_argv(root, case, path), phrase, path)

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


def _bool_weights():
    return {k: v.bool() if v.is_floating_point() else v for k, v in _good_tensors().items()}


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


def _truncated_checkpoint(root: Path) -> Run:
    case = write_test_case(root)
    path = tiny_checkpoint(root / "cut.safetensors")
    path.write_bytes(path.read_bytes()[:-500])
    return Run(cam_argv(root, case, path), "weights cannot be read|not a readable", path)


def _folder_checkpoint(root: Path) -> Run:
    folder = root / "ckpt.safetensors"
    folder.mkdir()
    return Run(
        cam_argv(root, write_test_case(root), folder),
        "neither a bundled model|not a regular file",
        folder,
    )


def _model(**settings):
    model = {"modalities": ["t1", "t1ce", "t2", "flair"], "widths": [4, 8, 8, 8]}
    return {"model": {**model, "input_size": 32, "n_classes": 2, "input_norm": "case", **settings}}


CHECKPOINT_KINDS = {
    "checkpoint missing": lambda r: Run(
        cam_argv(r, write_test_case(r), r / "no.safetensors"),
        "neither a bundled model|no such",
        r / "no.safetensors",
    ),
    "checkpoint is a folder": _folder_checkpoint,
    "pickle .pt with a payload": _ckpt(raw=pickle.dumps(Payload()), phrase="never unpickled"),
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
    "modality named t1.x": _ckpt(
        meta=_model(modalities=["t1.x", "t1ce", "t2", "flair"]), phrase="model.modalities"
    ),
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
    "boolean weights": _ckpt(tensors=_bool_weights, phrase="not floating point"),
    "NaN weight": _ckpt(tensors=_nan_weights, phrase="non-finite"),
    "weights of another shape": _ckpt(tensors=_wrong_shape, phrase="another architecture"),
    "a weight missing": _ckpt(tensors=_missing_weight, phrase="do not fit"),
}
