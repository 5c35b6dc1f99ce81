"""Checkpoints: one ``.safetensors`` file, JSON config in its metadata, never unpickled.

The metadata key ``equicam`` holds a JSON object with at least ``format`` (an integer),
``model`` (:meth:`ModelConfig.to_dict`), ``preprocessing`` and ``threshold``; training adds
the method, loss weights, data and metrics.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path

from equicam.core.atomic import write_file
from equicam.core.errors import EquicamError
from equicam.core.preprocess import NORMALISATION

FORMAT = 1
# Bounds of the metadata schema (see :func:`validate_metadata`): a checkpoint is refused
# before any network is built when its settings would need more than this.
MAX_METADATA_BYTES = 1_000_000
MAX_PARAMETERS = 200_000_000
MAX_INPUT_SIZE = 1024
MAX_WIDTH = 2048
_KNOWN_MODALITIES = ("t1", "t1ce", "t2", "flair")
_FLOAT_DTYPES = ("F16", "BF16", "F32", "F64")
BUNDLED = ("equivariant", "baseline", "second-stage")
BUNDLED_DIR = Path(__file__).resolve().parent.parent / "sample_data" / "checkpoints"
SECOND_STAGE = "segnet"  # the metadata ``kind`` of a second stage (:mod:`equicam.core.segnet`)


class CheckpointError(EquicamError):
    """A checkpoint that cannot be used; the message names the file and the problem."""


def resolve_checkpoint(spec: str | os.PathLike) -> Path:
    """A path, or the file of a bundled checkpoint name (``equivariant``, ``baseline``,
    ``second-stage``)."""
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
    if not path.exists():
        raise CheckpointError(path, "no such checkpoint file")
    if not path.is_file():
        raise CheckpointError(path, "not a regular file (a folder, pipe or device)")
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
    from safetensors.torch import save

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
    payload = save(tensors, metadata={"equicam": json.dumps(info)})
    return write_file(path, payload, replace=True)
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
    if len(raw) > MAX_METADATA_BYTES:
        raise CheckpointError(path, f"equicam metadata is {len(raw)} bytes, too large")
    try:
        meta = json.loads(raw)
    except (json.JSONDecodeError, RecursionError) as error:
        raise CheckpointError(path, f"equicam metadata is not valid JSON ({error})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or "model" not in meta:
        found = meta.get("format") if isinstance(meta, dict) else None
        raise CheckpointError(path, f"unsupported checkpoint format {found!r}")
    validate_metadata(path, meta)
    return meta


def _is_int(value, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def _are_ints(values, most: int, low: int, high: int) -> bool:
    """``values`` is a list of 1 to ``most`` integers in ``low..high``."""
    return (
        isinstance(values, list | tuple)
        and 1 <= len(values) <= most
        and all(_is_int(v, low, high) for v in values)
    )


def _is_fraction(value) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and 0 < value < 1
    )


def _estimated_parameters(model: dict) -> int:
    """An upper estimate of the networks' parameter count from their widths."""
    widths = [1, *model.get("widths", (64, 128, 256, 256))]
    per_net = sum(9 * (a * b + b * b) for a, b in zip(widths, widths[1:], strict=False))
    return 2 * per_net * len(model.get("modalities", _KNOWN_MODALITIES))


def validate_metadata(path: str | os.PathLike, meta: dict) -> None:
    """Check a checkpoint's metadata against the schema before anything is built from it.

    Types and ranges: ``model.modalities`` distinct known modality names, ``model.widths``
    1 to 8 integers in 1..MAX_WIDTH, ``model.input_size`` in 16..MAX_INPUT_SIZE,
    ``model.n_classes`` 2, ``threshold`` and each of ``thresholds`` in (0, 1),
    ``input_sizes`` 1 to 4 integers in 16..MAX_INPUT_SIZE, ``preprocessing`` a string,
    ``bias_correction`` true or false; and the networks it describes hold at most
    ``MAX_PARAMETERS`` parameters.

    Raises
    ------
    CheckpointError
        Naming the file, the field and what is wrong with it.
    """
    model = meta["model"]

    def bad(field: str, what: str) -> CheckpointError:
        return CheckpointError(path, f"metadata {field} {what}")

    if not isinstance(model, dict):
        raise bad("model", f"must be an object, found {type(model).__name__}")
    modalities = model.get("modalities", _KNOWN_MODALITIES)
    if (
        not isinstance(modalities, list | tuple)
        or not modalities
        or not all(isinstance(m, str) and m in _KNOWN_MODALITIES for m in modalities)
        or len(set(modalities)) != len(modalities)
    ):
        raise bad("model.modalities", f"must be distinct names of {_KNOWN_MODALITIES}")
    widths = model.get("widths", [64])
    if not _are_ints(widths, 8, 1, MAX_WIDTH):
        raise bad(
            "model.widths", f"must be 1 to 8 integers in 1..{MAX_WIDTH}, found {widths!r:.80}"
        )
    if not _is_int(model.get("input_size", 240), 16, MAX_INPUT_SIZE):
        raise bad("model.input_size", f"must be an integer in 16..{MAX_INPUT_SIZE}")
    if model.get("n_classes", 2) != 2 or isinstance(model.get("n_classes", 2), bool):
        raise bad("model.n_classes", "must be 2 (healthy, tumour)")
    if not isinstance(model.get("input_norm", "case"), str):
        raise bad("model.input_norm", "must be a string")
    if _estimated_parameters(model) > MAX_PARAMETERS:
        raise bad("model.widths", f"describe networks beyond {MAX_PARAMETERS} parameters")
    if "threshold" in meta and not _is_fraction(meta["threshold"]):
        raise bad(
            "threshold", f"must be a number between 0 and 1, found {meta['threshold']!r:.40}"
        )
    thresholds = meta.get("thresholds", {})
    if not isinstance(thresholds, dict) or not all(
        isinstance(k, str) and _is_fraction(v) for k, v in thresholds.items()
    ):
        raise bad("thresholds", "must map map names to numbers between 0 and 1")
    sizes = meta.get("input_sizes", [16])
    if not _are_ints(sizes, 4, 16, MAX_INPUT_SIZE):
        raise bad(
            "input_sizes", f"must be 1 to 4 integers in 16..{MAX_INPUT_SIZE}, found {sizes!r:.80}"
        )
    if not isinstance(meta.get("preprocessing", NORMALISATION), str):
        raise bad("preprocessing", "must be a string")
    if not isinstance(meta.get("bias_correction", False), bool):
        raise bad("bias_correction", "must be true or false")


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
    try:
        state = load_file(str(path))
    except Exception as error:  # noqa: BLE001 - header was fine, the data is not
        raise CheckpointError(path, f"weights cannot be read ({error})") from None
    model, result = model_from_weights(path, lambda: MultiModalCAM(config), state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise CheckpointError(
            path,
            "weights do not fit the architecture in its metadata "
            f"({len(result.missing_keys)} missing, {len(result.unexpected_keys)} unexpected)",
        )
    model.fusion_weights = _fusion_weights(path, meta, config.modalities)
    return model.to(device).eval(), meta


def model_from_weights(
    path: str | os.PathLike, make: Callable, state: dict, *, strict: bool = True
):
    """The module that ``make()`` builds, holding the weights of ``state`` (float32), read
    from the checkpoint ``path``.

    The module is built on torch's meta device, so no weight is drawn at random: loading takes
    nothing from torch's global random generator, which a training run in another thread (or a
    seeded test) relies on, and spends no time on weights that the file replaces.

    Returns
    -------
    (torch.nn.Module, load_state_dict's result)
        With ``strict=False``, a weight the state lacks is left on the meta device; the caller
        checks the result's missing keys.

    Raises
    ------
    CheckpointError
        Weights that are not floating point (batch-norm's step counters aside) or not finite,
        or whose names (``strict``) or shapes differ from the module's.
    """
    import torch

    for key, value in state.items():
        if key.endswith("num_batches_tracked"):  # batch-norm's step counter is an integer
            continue
        if not value.is_floating_point():
            raise CheckpointError(path, f"weight {key} is {value.dtype}, not floating point")
        if not value.isfinite().all():
            raise CheckpointError(path, f"non-finite weights (NaN or Inf) in {key}")
    with torch.device("meta"):
        model = make()
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    try:
        return model, model.load_state_dict(state, strict=strict, assign=True)
    except RuntimeError as error:  # names or shapes that differ from the architecture
        first = str(error).splitlines()[1].strip() if "\n" in str(error) else str(error)
        raise CheckpointError(path, f"weights are for another architecture ({first})") from None


def load_model(spec: str | os.PathLike, *, device: str = "cpu"):
    """A CAM model (:func:`load_checkpoint`) or a second stage
    (:func:`~equicam.core.segnet.load_segnet`), told apart by the checkpoint's metadata
    (``kind``), never by its name; returns the model and its metadata."""
    from equicam.core.segnet import load_segnet

    path = resolve_checkpoint(spec)
    if read_metadata(path).get("kind") == SECOND_STAGE:
        return load_segnet(path, device)
    return load_checkpoint(spec, device=device)


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
