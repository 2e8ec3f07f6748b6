"""GPU artifacts: which devices the proof covers, and the fp16 variant's ranking gate."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import SparsepackError
from ..metrics.corpus import synthetic_corpus
from ..metrics.gate import HALF_PRECISION_GATE, Gate
from ..metrics.ranking import ranking_agreement
from . import parity
from .devices import cuda_available, device_facts, resolve_verify_devices, strict_fp32

PRECISIONS = ("fp32", "fp16")


@dataclass(frozen=True)
class GpuOptions:
    devices: tuple[str, ...] = ("cpu",)
    precision: str = "fp32"
    fp16_device: str = "cuda"

    @classmethod
    def resolve(cls, precision: str, verify_devices: str, fp16_device: str, artifact_format: str) -> GpuOptions:
        if precision not in PRECISIONS:
            raise SparsepackError(f"--precision {precision!r}: use fp32 or fp16")
        devices = resolve_verify_devices(verify_devices)
        if "cpu" not in devices:  # CPU parity is the baseline every artifact keeps
            devices.insert(0, "cpu")
        if precision == "fp16":
            if artifact_format != "torchscript":
                raise SparsepackError(
                    "--precision fp16 makes a TorchScript artifact for GPU nodes; use --format torchscript"
                )
            if fp16_device == "cuda" and not cuda_available():
                raise SparsepackError(
                    "--precision fp16 needs a CUDA device to trace and prove the artifact, and none is "
                    "visible here; package fp16 on a GPU machine, or use fp32"
                )
        return cls(tuple(devices), precision, fp16_device)


class PlacedArtifact(dict):
    """``{device: the artifact loaded onto it}``; called directly, it runs the CPU copy."""

    def __call__(self, inputs):
        return self["cpu"](inputs)


def _vocabulary(tokenizer_data: dict) -> list[str]:
    vocab = tokenizer_data["model"].get("vocab", {})
    return (
        [tok for tok, _ in sorted(vocab.items(), key=lambda kv: kv[1])]
        if isinstance(vocab, dict)
        else [v[0] for v in vocab]
    )


def half_precision_gate(
    spec, fp32_artifact, fp16_artifact, tokenizer_data: dict, device: str, gate: Gate = HALF_PRECISION_GATE
) -> dict:
    """Rank a synthetic corpus (>= 200 documents, >= 50 queries) with both artifacts on ``device``; the fp32 ranking is
    the truth. Bi-encoders encode queries with the artifact too; inference-free queries come from ``encode_query``."""
    docs, queries = synthetic_corpus(_vocabulary(tokenizer_data))
    tokenizer = parity.DjlStyleTokenizer(tokenizer_data)
    with strict_fp32(), torch.no_grad():
        ref_docs = parity.run_artifact(fp32_artifact, tokenizer, docs, 16, device)
        cand_docs = parity.run_artifact(fp16_artifact, tokenizer, docs, 16, device)
        if spec.mode == "bi-encoder":
            ref_queries = parity.run_artifact(fp32_artifact, tokenizer, queries, 16, device)
            cand_queries = parity.run_artifact(fp16_artifact, tokenizer, queries, 16, device)
        else:
            encoded = spec.encoder.encode_query(queries, convert_to_tensor=True, show_progress_bar=False)
            ref_queries = cand_queries = (encoded.to_dense() if encoded.is_sparse else encoded).float().cpu()
    return {**gate_encoded_corpus(ref_docs, ref_queries, cand_docs, cand_queries, gate), **device_facts(device)}


def _jaccard(a: torch.Tensor, b: torch.Tensor, min_fraction: float) -> float:
    keep_a = a >= a.max() * min_fraction if a.max() > 0 else a > 0
    keep_b = b >= b.max() * min_fraction if b.max() > 0 else b > 0
    keep_a, keep_b = keep_a & (a > 0), keep_b & (b > 0)
    union = int((keep_a | keep_b).sum())
    return 1.0 if union == 0 else int((keep_a & keep_b).sum()) / union


def gate_encoded_corpus(
    ref_docs: torch.Tensor,
    ref_queries: torch.Tensor,
    cand_docs: torch.Tensor,
    cand_queries: torch.Tensor,
    gate: Gate = HALF_PRECISION_GATE,
) -> dict:
    """Reference vs candidate ``[n, vocab]`` vectors of one corpus: the candidate's ranking agreement (nDCG@10,
    recall@100, the reference ranking as truth), the documents' mean token-set Jaccard, and the gate's verdict.
    Token-set equality is the wrong test for a lower-precision artifact: tiny weights near zero flip in and out while
    the ranking, which is what users see, does not move."""
    ranks = ranking_agreement(ref_queries.double() @ ref_docs.double().T, cand_queries.double() @ cand_docs.double().T)
    ndcg = 1.0 if ranks["ndcg_at_10"] is None else ranks["ndcg_at_10"]
    jaccard = sum(_jaccard(a, b, gate.jaccard_min_weight) for a, b in zip(ref_docs, cand_docs, strict=True)) / len(
        ref_docs
    )
    return {
        "documents": len(ref_docs),
        "queries": len(ref_queries),
        "queries_with_matches": ranks["queries_scored"],
        "ndcg_at_10": ndcg,
        "recall_at_100": ranks["recall_at_100"],
        "jaccard": round(jaccard, 6),
        "max_abs_diff": float((ref_docs - cand_docs).abs().max()),
        "thresholds": gate.thresholds(),
        "passed": gate.passes(ndcg, jaccard=jaccard, documents=len(ref_docs), queries=len(ref_queries)),
    }
