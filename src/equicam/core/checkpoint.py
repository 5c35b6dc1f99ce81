"""Checkpoints: one ``.safetensors`` file, JSON config in its metadata, never unpickled.

The metadata key ``equicam`` holds a JSON object with at least ``format`` (an integer),
``model`` (:meth:`ModelConfig.to_dict`), ``preprocessing`` and ``threshold``; training adds
the method, loss weights, data and metrics.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

from equicam.core.atomic import publish
from equicam.core.preprocess import NORMALISATION

FORMAT = 1
BUNDLED = ("equivariant", "baseline")
BUNDLED_DIR = Path(__file__).resolve().parent.parent / "sample_data" / "checkpoints"


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message names the file and the problem."""

    def __init__(self, path: str | os.PathLike, problem: str) -> None:
        super().__init__(f"{path}: {problem}")


def resolve_checkpoint(spec: str | os.PathLike) -> Path:
    """A path, or the file of a bundled checkpoint name (``equivariant``, ``baseline``)."""
    if str(spec) in BUNDLED:
        path = BUNDLED_DIR / f"{spec}.safetensors"
        if not path.is_file():
            raise CheckpointError(
                path,
                f"the bundled '{spec}' checkpoint has not been trained and bundled yet "
                "(train one with python -m training.train, or pass a .safetensors file)",
            )
        return path
    path = Path(spec)
    if not path.is_file():
        raise CheckpointError(path, "no such checkpoint file")
    return path


def save_checkpoint(path: str | os.PathLike, model, meta: dict) -> Path:
    """Write ``model``'s weights and ``meta`` atomically (temporary file, then rename).

    Parameters
    ----------
    path
        Target ``.safetensors`` file.
    model
        A :class:`~equicam.core.model.MultiModalCAM`.
    meta
        JSON-able metadata; ``format`` and ``model`` are filled in, ``preprocessing``
        defaults to the one normalisation of :mod:`equicam.core.preprocess`, and the model's
        ``fusion_weights``, when it has them, are added.
    """
    from safetensors.torch import save_file

    path = Path(path)
    info = {
        "preprocessing": NORMALISATION,
        **meta,
        "format": FORMAT,
        "model": model.config.to_dict(),
    }
    if model.fusion_weights is not None:
        info["fusion_weights"] = model.fusion_weights
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    try:
        save_file(tensors, tmp, metadata={"equicam": json.dumps(info)})
        publish(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_metadata(path: str | os.PathLike) -> dict:
    """The ``equicam`` metadata of a checkpoint, without loading its weights."""
    from safetensors import safe_open

    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as handle:
            raw = (handle.metadata() or {}).get("equicam")
    except Exception as error:  # noqa: BLE001 - safetensors raises several kinds for bad files
        raise CheckpointError(
            path,
            f"not a readable safetensors checkpoint ({error}); checkpoints are never unpickled, "
            "so torch .pt/.pth files are refused",
        ) from None
    if raw is None:
        raise CheckpointError(path, "safetensors file without equicam metadata")
    try:
        meta = json.loads(raw)
    except json.JSONDecodeError as error:
        raise CheckpointError(path, f"equicam metadata is not valid JSON ({error})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or "model" not in meta:
        found = meta.get("format") if isinstance(meta, dict) else None
        raise CheckpointError(path, f"unsupported checkpoint format {found!r}")
    return meta


def load_checkpoint(
    spec: str | os.PathLike,
    *,
    modalities: Sequence[str] | None = None,
    device: str = "cpu",
):
    """Load a checkpoint for inference.

    Parameters
    ----------
    spec
        A ``.safetensors`` path, or ``equivariant`` / ``baseline`` (bundled).
    modalities
        Modalities the caller needs; each must have a network in the checkpoint.
    device
        Where to put the model.

    Returns
    -------
    (MultiModalCAM, dict)
        The model in eval mode and the checkpoint metadata.

    Raises
    ------
    CheckpointError
        Missing file, a pickle or corrupt file, foreign metadata, missing modalities, another
        preprocessing, non-finite weights, or weights that do not fit the architecture.
    """
    from safetensors.torch import load_file

    from equicam.core.model import ModelConfig, MultiModalCAM

    path = resolve_checkpoint(spec)
    meta = read_metadata(path)
    try:
        config = ModelConfig.from_dict(meta["model"])
    except (TypeError, ValueError) as error:
        raise CheckpointError(path, f"model settings not understood ({error})") from None
    missing = [m for m in modalities or () if m not in config.modalities]
    if missing:
        raise CheckpointError(
            path,
            f"has networks for {', '.join(config.modalities)}, not for {', '.join(missing)}",
        )
    preprocessing = meta.get("preprocessing", NORMALISATION)
    if preprocessing != NORMALISATION:
        raise CheckpointError(
            path,
            f"trained on '{preprocessing}' inputs; this equicam normalises with '{NORMALISATION}'",
        )
    model = MultiModalCAM(config)
    try:
        state = load_file(str(path))
    except Exception as error:  # noqa: BLE001 - header was fine, the data is not
        raise CheckpointError(path, f"weights cannot be read ({error})") from None
    bad = [k for k, v in state.items() if v.is_floating_point() and not v.isfinite().all()]
    if bad:
        raise CheckpointError(path, f"non-finite weights (NaN or Inf) in {bad[0]}")
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as error:  # tensor shapes that differ from the architecture
        first = str(error).splitlines()[1].strip() if "\n" in str(error) else str(error)
        raise CheckpointError(path, f"weights are for another architecture ({first})") from None
    if result.missing_keys or result.unexpected_keys:
        raise CheckpointError(
            path,
            "weights do not fit the architecture in its metadata "
            f"({len(result.missing_keys)} missing, {len(result.unexpected_keys)} unexpected)",
        )
    model.fusion_weights = _fusion_weights(path, meta, config.modalities)
    return model.to(device).eval(), meta


def _fusion_weights(path: Path, meta: dict, modalities: Sequence[str]) -> dict | None:
    weights = meta.get("fusion_weights")
    if weights is None:
        return None
    valid = isinstance(weights, dict) and all(
        m in modalities and isinstance(v, int | float) and math.isfinite(v) and v >= 0
        for m, v in weights.items()
    )
    if not valid:
        raise CheckpointError(
            path,
            f"fusion_weights {weights!r} are not non-negative numbers for its modalities "
            f"({', '.join(modalities)})",
        )
    return {m: float(v) for m, v in weights.items()}
