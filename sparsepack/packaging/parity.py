"""Prove the artifacts compute what the source model computes, calling them exactly as ML Commons does.

Validation is its own step (as in optimum's ``validate_model_outputs``): it reads only the written files and the
source model, never the in-memory objects the exporter used.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping

import torch

from ..errors import ParityError
from .batteries import DOCUMENT_BATTERY, QUERY_BATTERY
from .devices import device_facts, strict_fp32
from .query_weights import reference_token_map, undo_rule
from .tokenizer_export import server_token_strings

DOCUMENT_TOLERANCE = 1e-5
# CUDA kernels sum in other orders than CPU ones (TF32 off): a portable trace differs from the CPU reference by a few
# 1e-6 on small models and more on wide ones, never in which tokens it keeps. 1e-4 is the bound issue 8 set for GPU nodes.
CUDA_TOLERANCE = 1e-4


def tolerance_on(device: str, tolerance: float) -> float:
    return max(tolerance, CUDA_TOLERANCE) if device.startswith("cuda") else tolerance


class DjlStyleTokenizer:
    """Tokenize one text the way ML Commons' DJL translator does: specials added, truncation from the json, no padding."""

    def __init__(self, tokenizer_data: dict):
        from tokenizers import Tokenizer

        self.data = tokenizer_data
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


def reference_vectors(spec, encode: Callable, texts: list[str], max_length: int, batch_size: int = 1) -> torch.Tensor:
    """``encode`` of the texts, truncated where the artifact truncates, special-token dimensions zeroed. Batch size 1
    (the proofs'): no padding, so the reference is each text's own output and a padded batch of a long text does not
    cost the work of every text padded to its length."""
    saved_length = spec.doc_transformer.max_seq_length
    spec.doc_transformer.max_seq_length = max_length  # the reference truncates where the artifact does
    try:
        want = _dense(encode(texts, convert_to_tensor=True, batch_size=batch_size, show_progress_bar=False)).cpu()
    finally:
        spec.doc_transformer.max_seq_length = saved_length
    want[:, spec.special_ids] = 0.0
    return want


def prune_reference(want: torch.Tensor, ratio: float, tolerance: float) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The reference (special tokens already zeroed) pruned as a ``--prune-ratio`` graph prunes: weights not above
    max x ratio dropped. Also the entries within 2 x ``tolerance`` of their row's threshold: artifact and reference
    differ by up to ``tolerance`` in each weight and in the max, so such a weight may fall on either side of the line in
    either of them, and the comparison leaves it out. ``want`` itself and None when ``ratio`` is 0."""
    if not ratio:
        return want, None
    threshold = want.amax(dim=1, keepdim=True) * ratio
    return want * (want > threshold), (want - threshold).abs() <= 2 * tolerance


def cached_reference(
    spec,
    tokenizer_data: dict,
    texts: list[str] = DOCUMENT_BATTERY,
    encode: Callable | None = None,
    cache: dict | None = None,
) -> torch.Tensor:
    """:func:`reference_vectors` at the tokenizer's truncation, taken from / stored in ``cache`` when given."""
    encode = encode or spec.encoder.encode_document
    max_length = tokenizer_data["truncation"]["max_length"]
    key = (encode.__name__, tuple(texts), max_length)
    if cache is not None and key in cache:
        return cache[key]
    want = reference_vectors(spec, encode, texts, max_length)
    if cache is not None:
        cache[key] = want
    return want


def run_artifact(
    artifact: Callable, tokenizer: DjlStyleTokenizer, texts: list[str], batch_size: int = 1, device: str = "cpu"
) -> torch.Tensor:
    """The artifact's output for ``texts``, called as ML Commons calls it, with the inputs placed on ``device``."""
    rows = []
    with torch.no_grad():
        for start in range(0, len(texts), batch_size):
            batch = {k: v.to(device) for k, v in tokenizer.batch(texts[start : start + batch_size]).items()}
            rows.append(artifact(batch)["output"].float().cpu())
    return torch.cat(rows)


def _dense(t) -> torch.Tensor:
    t = t if isinstance(t, torch.Tensor) else torch.as_tensor(t)
    return (t.to_dense() if t.is_sparse else t).float()


def compare_vectors(
    got: torch.Tensor, want: torch.Tensor, tolerance: float, boundary: torch.Tensor | None = None
) -> dict:
    """``boundary``: entries left out of the comparison (a pruned reference's weights at its threshold)."""
    if boundary is not None:
        got, want = got.masked_fill(boundary, 0.0), want.masked_fill(boundary, 0.0)
    same_sets = [bool(torch.equal(g.ne(0), w.ne(0))) for g, w in zip(got, want, strict=True)]
    max_diff = float((got - want).abs().max()) if got.numel() else 0.0
    return {
        "texts": len(same_sets),
        "identical_token_sets": sum(same_sets),
        "max_abs_diff": max_diff,
        "tolerance": tolerance,
        "passed": all(same_sets) and max_diff <= tolerance,
    }


def validate_document(
    spec,
    artifact: Callable | Mapping[str, Callable],
    tokenizer_data: dict,
    texts: list[str] = DOCUMENT_BATTERY,
    batch_sizes: tuple[int, ...] = (1, 3, len(DOCUMENT_BATTERY)),
    tolerance: float = DOCUMENT_TOLERANCE,
    encode: Callable | None = None,
    reference_cache: dict | None = None,
    prune_ratio: float = 0.0,
) -> dict:
    """Artifact vs ``encode_document`` (or ``encode``) run on CPU in fp32, with the special-token dimensions removed
    from the reference, and pruned as the graph prunes when ``prune_ratio`` is set. ``artifact`` is one callable (CPU)
    or ``{device: the artifact loaded onto that device}``: each device gets the same battery and batch sizes against
    the same CPU reference. ``reference_cache``: a dict one package run shares between its formats' proofs, so the
    reference is computed once."""
    artifacts = dict(artifact) if isinstance(artifact, Mapping) else {"cpu": artifact}
    tokenizer = DjlStyleTokenizer(tokenizer_data)
    encode = encode or spec.encoder.encode_document
    want, boundary = prune_reference(
        cached_reference(spec, tokenizer_data, texts, encode, reference_cache), prune_ratio, tolerance
    )
    by_device = {}
    for device, loaded in artifacts.items():
        with strict_fp32():
            results = {
                f"batch_{bs}": compare_vectors(
                    run_artifact(loaded, tokenizer, texts, bs, device), want, tolerance_on(device, tolerance), boundary
                )
                for bs in sorted(set(batch_sizes))
            }
        by_device[device] = {
            **device_facts(device),
            "by_batch_size": results,
            "tolerance": tolerance_on(device, tolerance),
            "max_abs_diff": max(r["max_abs_diff"] for r in results.values()),
            "identical_token_sets": all(r["identical_token_sets"] == r["texts"] for r in results.values()),
            "passed": all(r["passed"] for r in results.values()),
        }
    first = next(iter(by_device.values()))
    return {
        "reference": f"SparseEncoder.{encode.__name__}" + (f" pruned at max x {prune_ratio:g}" if prune_ratio else ""),
        "special_tokens": "SpladePooling keeps special-token dimensions; the artifact zeroes them (ML Commons drops "
        "them anyway), so they were removed from the reference before comparing",
        "texts": len(texts),
        "devices": list(by_device),
        "max_abs_diff": max(d["max_abs_diff"] for d in by_device.values()),
        "tolerance": tolerance,
        "identical_token_sets": all(d["identical_token_sets"] for d in by_device.values()),
        "by_batch_size": first["by_batch_size"],
        "by_device": by_device,
        "passed": all(d["passed"] for d in by_device.values()),
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


def validate_query_tokenize(
    spec,
    tokenizer_data: dict,
    idf: dict[str, float],
    texts: list[str] = QUERY_BATTERY,
    rule_weights: torch.Tensor | None = None,
    rule: dict | None = None,
) -> dict:
    """Emulated SPARSE_TOKENIZE vs ``encode_query`` run with the weights idf.json was written from (``rule_weights``:
    the model's IDF after the query-weight rule, see query_weights.py), so the proof covers the rule; and, with the
    rule undone (floored tokens dropped, scale divided out), vs the plain ``encode_query``, so nothing else changed.
    Zero weights are dropped on both sides: the reference is sparse."""
    plain = _dense(spec.encoder.encode_query(texts, convert_to_tensor=True, show_progress_bar=False))
    ruled = plain if rule_weights is None else encode_query_with(spec, rule_weights, texts)
    names = server_token_strings(tokenizer_data, spec.vocab_size)
    mismatches = []
    for text, plain_vec, ruled_vec in zip(texts, plain, ruled, strict=True):
        expected = reference_token_map(ruled_vec, names)
        got = {k: v for k, v in emulate_sparse_tokenize(tokenizer_data, idf, text).items() if v != 0.0}
        plain_ok = undo_rule(got, rule) == reference_token_map(plain_vec, names)
        if got != expected or not plain_ok:
            mismatches.append(
                {
                    "text": text,
                    "only_server": sorted(set(got) - set(expected)),
                    "only_reference": sorted(set(expected) - set(got)),
                    "equal_to_plain_encode_query_with_rule_undone": plain_ok,
                }
            )
    return {
        "reference": "SparseEncoder.encode_query" + (" with the query-weight rule applied" if rule else ""),
        "texts": len(texts),
        "identical": not mismatches,
        "mismatches": mismatches,
        "passed": not mismatches,
    }


def encode_query_with(spec, weights: torch.Tensor, texts: list[str]) -> torch.Tensor:
    """``encode_query`` with the query module's IDF temporarily replaced by ``weights``."""
    param = spec.query_module.weight
    saved = param.detach().clone()
    with torch.no_grad():
        param.copy_(weights.to(param.dtype))
    try:
        return _dense(spec.encoder.encode_query(texts, convert_to_tensor=True, show_progress_bar=False))
    finally:
        with torch.no_grad():
            param.copy_(saved)


def validate_query_bi_encoder(
    spec, artifact: Callable, tokenizer_data: dict, texts: list[str] = QUERY_BATTERY, prune_ratio: float = 0.0
) -> dict:
    """A bi-encoder's document artifact is also its query encoder on the cluster: held to ``encode_query``."""
    return validate_document(
        spec,
        artifact,
        tokenizer_data,
        texts=texts,
        batch_sizes=(1, len(texts)),
        encode=spec.encoder.encode_query,
        prune_ratio=prune_ratio,
    )


def require(result: dict, what: str) -> None:
    if not result["passed"]:
        detail = {k: v for k, v in result.items() if k in ("max_abs_diff", "identical_token_sets", "mismatches")}
        failed = [d for d, r in result.get("by_device", {}).items() if not r["passed"]]
        if failed:
            detail["failed_on"] = {
                d: {
                    "max_abs_diff": result["by_device"][d]["max_abs_diff"],
                    "tolerance": result["by_device"][d]["tolerance"],
                }
                for d in failed
            }
        raise ParityError(
            f"{what} parity failed: {json.dumps(detail)[:300]}; the artifact does not reproduce the model"
        )
