"""Choose a torch device: only devices that exist, with a clear error otherwise."""

from __future__ import annotations


def available_devices() -> list[str]:
    """Devices this machine can run on: ``cpu`` and each real CUDA device (``cuda:N``)."""
    import torch

    return ["cpu"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]


def resolve_device(name: str = "auto") -> str:
    """Turn ``auto``, ``cpu``, ``cuda`` or ``cuda:N`` into a device that exists.

    ``auto`` picks the first CUDA device when there is one, else the CPU.

    Raises
    ------
    ValueError
        When the device does not exist here, naming the ones that do.
    """
    devices = available_devices()
    if name == "auto":
        return devices[1] if len(devices) > 1 else "cpu"
    if name == "cuda":
        name = "cuda:0"
    if name not in devices:
        raise ValueError(f"device {name!r} is not available here; available: {', '.join(devices)}")
    return name


def supports_bf16(device: str) -> bool:
    """Whether ``device`` computes in bfloat16 natively (CUDA since Ampere; CPUs with
    AVX512-BF16 or AMX through oneDNN). Elsewhere bf16 autocast would be emulated and slow."""
    import torch

    if device.startswith("cuda"):
        return torch.cuda.is_bf16_supported()
    return bool(
        torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()
    )
