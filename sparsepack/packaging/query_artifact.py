"""The query side of a package: an inference-free model's SPARSE_TOKENIZE zip (tokenizer + idf.json, proven against
encode_query), or a bi-encoder's query-weight record checked before any trace."""

from __future__ import annotations

from ..contract.limits import ML_COMMONS_MAX_LENGTH
from . import batteries, parity
from .archive import artifact_entry, write_artifact_zip
from .artifact_zip import query_side
from .query_weights import apply_idf_rule, bi_encoder_record, lowest_weight_query, reference_token_map
from .tokenizer_export import dumps, idf_json, server_token_strings, tokenizer_json


def query_tokenize_artifact(spec, staging, length, license_bytes, name, artifacts, result, log):
    """The SPARSE_TOKENIZE zip, proven; returns the manifest's query-weight record and the IDF table idf.json holds."""
    q_length = min(int(spec.query_tokenizer.model_max_length or length), ML_COMMONS_MAX_LENGTH)
    q_tok = tokenizer_json(spec.query_tokenizer, q_length)
    names = server_token_strings(q_tok, spec.vocab_size)
    weights, query_weights = apply_idf_rule(spec.query_module.weight, names)
    if query_weights["floored_tokens"] or query_weights["scale"] != 1.0:
        log(
            f"query weights: {query_weights['floored_tokens']} zero-IDF tokens raised to {query_weights['floor']:.3g}, "
            f"scale {query_weights['scale']:g} (neural-search accepts (0, 64] only)"
        )
    idf = idf_json(weights, names)
    q_zip = staging / f"{name}-sparse-tokenize.zip"
    write_artifact_zip(q_zip, {"tokenizer.json": dumps(q_tok), "idf.json": dumps(idf)}, license_bytes)
    log("validating the query tokenizer artifact against encode_query")
    unpacked_q_tok, unpacked_idf = query_side(q_zip)
    probe_text, _ = lowest_weight_query(unpacked_q_tok, unpacked_idf)
    result["query"] = parity.validate_query_tokenize(
        spec,
        unpacked_q_tok,
        unpacked_idf,
        batteries.QUERY_BATTERY + ([probe_text] if probe_text else []),
        rule_weights=weights,
        rule=query_weights,
    )
    parity.require(result["query"], "query")
    artifacts.append(artifact_entry(q_zip, "query", "SPARSE_TOKENIZE", "TORCH_SCRIPT"))
    return query_weights, weights


def bi_encoder_query_weights(spec, doc_tok: dict, prune_ratio: float, references: dict) -> dict:
    """The query battery's weights against neural-search's (0, 64] (refused above 64), from the model's own
    ``encode_query`` pruned as the graph prunes: the reference the artifact's query proof is then held to at 1e-5
    (cached, so computed once). Checked before any trace, so the refusal neither waits for one nor hides behind a parity
    failure (float32 sums of weights above 64 differ by more than 1e-5)."""
    vectors, _ = parity.prune_reference(
        parity.cached_reference(spec, doc_tok, batteries.QUERY_BATTERY, spec.encoder.encode_query, references),
        prune_ratio,
        0.0,
    )
    names = server_token_strings(doc_tok, spec.vocab_size)
    return bi_encoder_record([reference_token_map(v, names) for v in vectors], batteries.QUERY_BATTERY)
