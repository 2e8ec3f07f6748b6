"""Prove the artifacts compute what the source model computes, calling them exactly as ML Commons does.

Validation is its own step (as in optimum's ``validate_model_outputs``): it reads only the written files and the
source model, never the in-memory objects the exporter used.
"""
from __future__ import annotations

import json
from typing import Callable

import torch

from ..errors import ParityError
from .tokenizer_export import server_token_strings

DOCUMENT_TOLERANCE = 1e-5

# Fixed battery: short, long past any max length, unicode, punctuation only, repeated words, mixed case.
DOCUMENT_BATTERY = [
    "hello world",
    "The weather in New York is rainy today.",
    " ".join(["OpenSearch indexes sparse vectors as rank features and finds them with a neural sparse query."] * 60),
    "Café naïve façade über straße 日本 ünïcödé",
    "!!! ??? ... ,,, ;;; --- ((( )))",
    "rain rain rain rain rain rain rain rain",
    "MiXeD CaSe Tokens AND numbers 12345 67890",
    "a",
]
QUERY_BATTERY = [
    "what's the weather in ny now?",
    "rainy city",
    "sparse vector search engine",
    "café über",
    "!!!",
    "rain rain rain",
]


class DjlStyleTokenizer:
    """Tokenize one text the way ML Commons' DJL translator does: specials added, truncation from the json, no padding."""

    def __init__(self, tokenizer_data: dict):
        from tokenizers import Tokenizer

        self.tok = Tokenizer.from_str(json.dumps(tokenizer_data))
        self.tok.no_padding()

    def ids(self, text: str) -> list[int]:
        return self.tok.encode(text, add_special_tokens=True).ids

    def batch(self, texts: list[str]) -> dict[str, torch.Tensor]:
        encodings = [self.ids(t) for t in texts]
        width = max(len(e) for e in encodings)
        ids = torch.zeros(len(texts), width, dtype=torch.long)
        mask = torch.zeros(len(texts), width, dtype=torch.long)
        for row, enc in enumerate(encodings):
            ids[row, : len(enc)] = torch.tensor(enc, dtype=torch.long)
            mask[row, : len(enc)] = 1
        return {"input_ids": ids, "attention_mask": mask}


def run_artifact(artifact: Callable, tokenizer: DjlStyleTokenizer, texts: list[str], batch_size: int = 1) -> torch.Tensor:
    rows = []
    with torch.no_grad():
        for start in range(0, len(texts), batch_size):
            rows.append(artifact(tokenizer.batch(texts[start : start + batch_size]))["output"])
    return torch.cat(rows)


def _dense(t) -> torch.Tensor:
    t = t if isinstance(t, torch.Tensor) else torch.as_tensor(t)
    return (t.to_dense() if t.is_sparse else t).float()


def compare_vectors(got: torch.Tensor, want: torch.Tensor, tolerance: float) -> dict:
    same_sets = [bool(torch.equal(g.ne(0), w.ne(0))) for g, w in zip(got, want)]
    max_diff = float((got - want).abs().max()) if got.numel() else 0.0
    return {"texts": len(same_sets), "identical_token_sets": sum(same_sets), "max_abs_diff": max_diff,
            "tolerance": tolerance, "passed": all(same_sets) and max_diff <= tolerance}


def validate_document(spec, artifact: Callable, tokenizer_data: dict, texts: list[str] = DOCUMENT_BATTERY,
                      batch_sizes: tuple[int, ...] = (1, 3, len(DOCUMENT_BATTERY)), tolerance: float = DOCUMENT_TOLERANCE,
                      encode: Callable | None = None) -> dict:
    """Artifact vs ``encode_document`` (or ``encode``) with the special-token dimensions removed from the reference."""
    tokenizer = DjlStyleTokenizer(tokenizer_data)
    encode = encode or spec.encoder.encode_document
    max_length = tokenizer_data["truncation"]["max_length"]
    saved_length = spec.doc_transformer.max_seq_length
    spec.doc_transformer.max_seq_length = max_length  # the reference truncates where the artifact does
    try:
        want = _dense(encode(texts, convert_to_tensor=True, batch_size=len(texts), show_progress_bar=False))
    finally:
        spec.doc_transformer.max_seq_length = saved_length
    want[:, spec.special_ids] = 0.0
    results = {}
    for bs in sorted(set(batch_sizes)):
        got = run_artifact(artifact, tokenizer, texts, batch_size=bs)
        results[f"batch_{bs}"] = compare_vectors(got, want, tolerance)
    passed = all(r["passed"] for r in results.values())
    return {
        "reference": "SparseEncoder.encode_document" if encode == spec.encoder.encode_document else "SparseEncoder.encode",
        "special_tokens": "SpladePooling keeps special-token dimensions; the artifact zeroes them (ML Commons drops "
                          "them anyway), so they were removed from the reference before comparing",
        "texts": len(texts),
        "max_abs_diff": max(r["max_abs_diff"] for r in results.values()),
        "tolerance": tolerance,
        "identical_token_sets": all(r["identical_token_sets"] == r["texts"] for r in results.values()),
        "by_batch_size": results,
        "passed": passed,
    }


def emulate_sparse_tokenize(tokenizer_data: dict, idf: dict[str, float] | None, text: str) -> dict[str, float]:
    """ML Commons' SPARSE_TOKENIZE: tokenize (specials added), de-duplicate ids, single-id decode skipping specials,
    drop empty strings, weight from idf.json (1.0 when missing). Term frequency is ignored."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_str(json.dumps(tokenizer_data))
    out: dict[str, float] = {}
    for tid in dict.fromkeys(tok.encode(text, add_special_tokens=True).ids):
        name = tok.decode([tid], skip_special_tokens=True)
        if name:
            out[name] = 1.0 if idf is None else float(idf.get(name, 1.0))
    return out


def reference_token_map(vector: torch.Tensor, names: dict[int, str]) -> dict[str, float]:
    """A reference vector keyed the way the server keys its output (later ids win on name collisions)."""
    out: dict[str, float] = {}
    for tid in vector.nonzero().flatten().tolist():
        if tid in names:
            out[names[tid]] = float(vector[tid])
    return out


def validate_query_tokenize(spec, tokenizer_data: dict, idf: dict[str, float], texts: list[str] = QUERY_BATTERY) -> dict:
    """Emulated SPARSE_TOKENIZE vs ``encode_query``. Zero weights are dropped on both sides: the reference is sparse,
    and a zero weight contributes nothing to a rank_features score."""
    want = _dense(spec.encoder.encode_query(texts, convert_to_tensor=True, show_progress_bar=False))
    names = server_token_strings(tokenizer_data, spec.vocab_size)
    mismatches = []
    for text, vec in zip(texts, want):
        expected = reference_token_map(vec, names)
        got = {k: v for k, v in emulate_sparse_tokenize(tokenizer_data, idf, text).items() if v != 0.0}
        if got != expected:
            mismatches.append({"text": text, "only_server": sorted(set(got) - set(expected)),
                               "only_reference": sorted(set(expected) - set(got))})
    return {"reference": "SparseEncoder.encode_query", "texts": len(texts), "identical": not mismatches,
            "mismatches": mismatches, "passed": not mismatches}


def validate_query_bi_encoder(spec, artifact: Callable, tokenizer_data: dict, texts: list[str] = QUERY_BATTERY) -> dict:
    result = validate_document(spec, artifact, tokenizer_data, texts=texts, batch_sizes=(1, len(texts)),
                               encode=spec.encoder.encode_query)
    result["reference"] = "SparseEncoder.encode_query"
    return result


def require(result: dict, what: str) -> None:
    if not result["passed"]:
        detail = {k: v for k, v in result.items() if k in ("max_abs_diff", "identical_token_sets", "mismatches")}
        raise ParityError(f"{what} parity failed: {json.dumps(detail)[:300]}; the artifact does not reproduce the model")
