"""The module ML Commons runs for SPARSE_ENCODING: dict in, ``{"output": float32[batch, vocab]}`` out."""

from __future__ import annotations

import torch
from torch import Tensor, nn

ACTIVATIONS = ("relu", "log1p_relu")
POOLINGS = ("max", "sum")


def splade_activation(x: Tensor, activation: str) -> Tensor:
    """sentence-transformers' naming: ``relu`` is log1p(relu(x)), ``log1p_relu`` is log1p(log1p(relu(x)))."""
    x = torch.log1p(torch.relu(x))
    if activation == "log1p_relu":
        x = torch.log1p(x)
    return x


class SparseDocumentEncoder(nn.Module):
    """Masked-LM logits -> pooled over the sequence -> SPLADE activation -> special tokens zeroed.

    For max pooling the logits are pooled first and only the ``[batch, vocab]`` result is activated: the activation is
    monotonic and maps 0 to 0, so this equals activating ``[batch, seq, vocab]`` first, at a fraction of the cost.
    Sum pooling has no such shortcut and activates every position.
    """

    keep: Tensor  # registered as a buffer in __init__

    def __init__(
        self,
        mlm: nn.Module,
        activation: str,
        pooling: str,
        special_ids: list[int],
        vocab_size: int,
        prune_ratio: float = 0.0,
    ):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation {activation!r} is not one of {ACTIVATIONS}")
        if pooling not in POOLINGS:
            raise ValueError(f"pooling {pooling!r} is not one of {POOLINGS}")
        self.mlm = mlm
        self.activation = activation
        self.pooling = pooling
        self.prune_ratio = float(prune_ratio)
        keep = torch.ones(vocab_size, dtype=torch.float32)
        keep[torch.tensor(sorted(set(special_ids)), dtype=torch.long)] = 0.0
        self.register_buffer("keep", keep, persistent=True)

    def forward(self, inputs: dict[str, Tensor]) -> dict[str, Tensor]:
        input_ids = inputs["input_ids"]
        attention_mask = inputs["attention_mask"]
        logits = self.mlm(input_ids=input_ids, attention_mask=attention_mask, return_dict=False)[0].float()
        mask = attention_mask.unsqueeze(-1).to(logits.dtype)
        if self.pooling == "max":
            # Padded positions contribute 0, exactly as SpladePooling's logits * mask does.
            values = splade_activation(torch.amax(logits * mask, dim=1), self.activation)
        else:
            values = torch.sum(splade_activation(logits * mask, self.activation), dim=1)
        values = values * self.keep
        if self.prune_ratio > 0.0:
            threshold = torch.amax(values, dim=1, keepdim=True) * self.prune_ratio
            values = values * (values > threshold).to(values.dtype)
        return {"output": values}
