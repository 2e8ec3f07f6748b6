"""Modules that fix a device inside forward, for the portability tests (importable by the trace worker)."""

from __future__ import annotations

import torch
from torch import nn


class BuildsOnCpu(nn.Module):
    """A forward that builds a tensor with device="cpu", as transformers' mask code does."""

    def forward(self, inputs: dict) -> dict:
        ids = inputs["input_ids"]
        positions = torch.arange(ids.shape[1], device="cpu").float()
        return {"output": ids.float() + positions + torch.zeros(ids.shape, device=torch.device("cpu"))}


class NoTensorInput(nn.Module):
    def forward(self) -> torch.Tensor:
        return torch.ones(3, device="cpu")


class UsesDeviceWithoutInput(nn.Module):
    def __init__(self):
        super().__init__()
        self.inner = NoTensorInput()

    def forward(self, inputs: dict) -> dict:
        return {"output": inputs["input_ids"].float()[:, :3] + self.inner()}
