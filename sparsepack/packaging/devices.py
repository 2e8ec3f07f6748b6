"""Which devices the proof runs on, and the numeric conditions it runs them under."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any

import torch

from ..errors import SparsepackError

DEVICES = ("cpu", "cuda")


def cuda_available() -> bool:
    return torch.cuda.is_available()


def resolve_verify_devices(value: str, flag: str = "--verify-devices") -> list[str]:
    """``auto`` = every device present (CPU, plus CUDA when one is visible); else a comma list of cpu/cuda."""
    if value.strip() == "auto":
        return ["cpu", "cuda"] if cuda_available() else ["cpu"]
    devices = [d.strip() for d in value.split(",") if d.strip()]
    unknown = [d for d in devices if d not in DEVICES]
    if unknown or not devices:
        raise SparsepackError(f"{flag} {value!r}: use auto, cpu or cpu,cuda")
    if "cuda" in devices and not cuda_available():
        raise SparsepackError(f"{flag} cuda: no CUDA device is visible here; run on a GPU machine or use auto/cpu")
    return list(dict.fromkeys(devices))


@contextmanager
def strict_fp32():
    """TF32 off for the proof: it is off by default in libtorch/DJL, and with it on a DistilBERT-size model already
    changes token sets (|Δ| ~1e-3)."""
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def device_facts(device: str) -> dict:
    """What a figure was measured on."""
    facts: dict[str, Any] = {"device": device, "torch": torch.__version__}
    if device.startswith("cuda"):
        facts.update(name=torch.cuda.get_device_name(torch.device(device)), cuda=torch.version.cuda, tf32=False)
    return facts
