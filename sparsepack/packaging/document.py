"""What building one document artifact yields, whatever its format (TorchScript, ONNX)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from . import batteries, parity


@dataclass
class DocumentArtifact:
    entry: dict  # the manifest's artifact record
    loaded: Any  # the artifact reloaded from its zip, callable as ML Commons calls it
    tokenizer_data: dict  # the tokenizer.json read back from the zip
    operators: set[str]
    compatibility: dict  # per OpenSearch line
    proof: dict  # parity with encode_document


def example_batch(tokenizer_data: dict) -> dict:
    # Padding in the example makes the trace record the attention-mask path batches need.
    return parity.DjlStyleTokenizer(tokenizer_data).batch(["hello world", batteries.DOCUMENT_BATTERY[1]])
