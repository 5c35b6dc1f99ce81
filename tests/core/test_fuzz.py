"""Fuzzing the two readers of untrusted files: NIfTI scans and checkpoints.

Real files are damaged at random (header fields set to random values, bytes flipped,
truncations); each load must give a clean result or the project's own error, never another
exception, and stay within a memory budget.
"""

import gzip
import json
import resource
import struct
import tracemalloc

import numpy as np
import pytest

from equicam.core.brats import load_case
from equicam.core.checkpoint import load_checkpoint
from equicam.core.errors import EquicamError
from tests.conftest import write_case
from tests.hostile import tiny_checkpoint

N_NIFTI = 2000
N_CHECKPOINTS = 1000
NIFTI_BUDGET = 64 * 2**20  # bytes traced by one load (the scans are 2 KB)
CHECKPOINT_RSS_BUDGET = 512 * 2**20  # growth of the process's peak memory over the fuzz

# (offset, struct format) of NIfTI-1 header fields
FIELDS = [(0, "<i")] + [(40 + 2 * i, "<h") for i in range(8)]
FIELDS += [(70, "<h"), (72, "<h"), (108, "<f"), (112, "<f"), (116, "<f"), (252, "<h")]
FIELDS += [(254, "<h")] + [(76 + 4 * i, "<f") for i in range(8)]
FIELDS += [(280 + 4 * i, "<f") for i in range(12)] + [(256 + 4 * i, "<f") for i in range(6)]
INTS = [0, 1, -1, 2, 3, 4, 7, 8, 16, 64, 128, 255, 256, 511, 1024, 2304, 32767, -32768]
FLOATS = [0.0, -0.0, 1.0, -1.0, 1e-30, 1e30, 3e38, -3e38, float("nan"), float("inf"), 352.0]


def _random_field(rng, raw: bytearray) -> None:
    offset, fmt = FIELDS[rng.integers(len(FIELDS))]
    pool = INTS if fmt != "<f" else FLOATS + [float(v) for v in INTS]
    value = pool[rng.integers(len(pool))]
    if fmt == "<h":
        value = int(np.clip(value, -32768, 32767))
    if fmt == "<i":
        value = int(value)
    struct.pack_into(fmt, raw, offset, value)


def _damage(rng, raw: bytes) -> bytes:
    raw = bytearray(raw)
    kind = rng.integers(4)
    if kind == 0:
        for _ in range(rng.integers(1, 4)):
            _random_field(rng, raw)
    elif kind == 1:
        for position in rng.integers(0, 352, rng.integers(1, 8)):
            raw[position] = rng.integers(256)
    elif kind == 2:
        raw = raw[: rng.integers(0, len(raw))]
    else:
        _random_field(rng, raw)
        for position in rng.integers(352, len(raw), rng.integers(1, 50)):
            raw[position] = rng.integers(256)
    return bytes(raw)


@pytest.mark.filterwarnings("ignore")
def test_fuzzed_nifti_files_load_or_raise_the_projects_error(tmp_path):
    case = write_case(tmp_path / "case")
    flair = case / "Case_001_flair.nii.gz"
    good = gzip.decompress(flair.read_bytes())
    rng = np.random.default_rng(15)
    outcomes = {"loaded": 0, "refused": 0}
    tracemalloc.start()
    try:
        for index in range(N_NIFTI):
            damaged = _damage(rng, good)
            flair.write_bytes(gzip.compress(damaged, 1) if index % 4 else damaged)
            tracemalloc.reset_peak()
            try:
                load_case(case, ["flair"])
                outcomes["loaded"] += 1
            except EquicamError:
                outcomes["refused"] += 1
            except Exception as error:  # noqa: BLE001 - any other kind is the failure sought
                pytest.fail(f"case {index}: {type(error).__name__}: {error}")
            peak = tracemalloc.get_traced_memory()[1]
            assert peak < NIFTI_BUDGET, f"case {index} traced {peak} bytes"
    finally:
        tracemalloc.stop()
    assert outcomes["refused"] > N_NIFTI // 2 and outcomes["loaded"] > 0, outcomes


VALUES = [-1, 0, 1, 2, 3, 40_000, 2**31, 1e308, float("nan"), "abc", None, True, [], {},
          [200_000] * 4, [4, 8, 8, 8], ["t1"], ["pd"], [[[[1]]]], 0.5, "case"]  # fmt: skip
MODEL_KEYS = ["modalities", "widths", "input_size", "n_classes", "input_norm", "extra"]
META_KEYS = ["threshold", "thresholds", "preprocessing", "fusion_weights", "format", "model",
             "input_sizes"]  # fmt: skip
DTYPES = ["F32", "F16", "BF16", "F64", "I64", "I8", "BOOL", "U8", "XX", 7]


def _damage_checkpoint(rng, raw: bytes) -> bytes:
    size = struct.unpack("<Q", raw[:8])[0]
    header, data = json.loads(raw[8 : 8 + size]), bytearray(raw[8 + size :])
    kind = rng.integers(5)
    if kind == 0:
        meta = json.loads(header["__metadata__"]["equicam"])
        key = MODEL_KEYS[rng.integers(len(MODEL_KEYS))]
        meta["model"][key] = VALUES[rng.integers(len(VALUES))]
        header["__metadata__"]["equicam"] = json.dumps(meta)
    elif kind == 1:
        meta = json.loads(header["__metadata__"]["equicam"])
        meta[META_KEYS[rng.integers(len(META_KEYS))]] = VALUES[rng.integers(len(VALUES))]
        header["__metadata__"]["equicam"] = json.dumps(meta)
    elif kind == 2:
        names = [k for k in header if k != "__metadata__"]
        entry = header[names[rng.integers(len(names))]]
        choice = rng.integers(3)
        if choice == 0:
            entry["dtype"] = DTYPES[rng.integers(len(DTYPES))]
        elif choice == 1:
            entry["shape"] = [int(v) for v in rng.choice([0, 1, 4, 8, 2**20, 2**40], 4)]
        else:
            entry["data_offsets"] = [int(v) for v in rng.integers(0, 2**40, 2)]
    elif kind == 3:
        return raw[: rng.integers(0, len(raw))]
    else:
        for position in rng.integers(0, len(data), rng.integers(1, 20)):
            data[position] = rng.integers(256)
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + bytes(data)


def test_fuzzed_checkpoints_load_or_raise_the_projects_error(tmp_path):
    good = tiny_checkpoint(tmp_path / "good.safetensors").read_bytes()
    path = tmp_path / "fuzzed.safetensors"
    rng = np.random.default_rng(15)
    outcomes = {"loaded": 0, "refused": 0}
    start = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    for index in range(N_CHECKPOINTS):
        path.write_bytes(_damage_checkpoint(rng, good))
        try:
            load_checkpoint(path)
            outcomes["loaded"] += 1
        except EquicamError:
            outcomes["refused"] += 1
        except Exception as error:  # noqa: BLE001 - any other kind is the failure sought
            pytest.fail(f"checkpoint {index}: {type(error).__name__}: {error}")
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - start
    assert grown < CHECKPOINT_RSS_BUDGET, f"peak memory grew by {grown / 2**20:.0f} MiB"
    assert outcomes["refused"] > N_CHECKPOINTS // 2 and outcomes["loaded"] > 0, outcomes
