"""The ``tokenizer.json`` and ``idf.json`` ML Commons reads."""

from __future__ import annotations

import json

from ..errors import SparsepackError


def tokenizer_json(tokenizer, max_length: int) -> dict:
    """The backend tokenizer's JSON with an explicit truncation block and no padding.

    A saved ``tokenizer.json`` keeps whatever truncation the backend last used (a model trained at length 64 ships
    ``max_length: 64``); it is rebuilt here from the packaging decision instead.
    """
    backend = getattr(tokenizer, "backend_tokenizer", None) or getattr(tokenizer, "_tokenizer", None)
    if backend is None:
        raise SparsepackError(
            f"{type(tokenizer).__name__} is a slow tokenizer with no tokenizer.json; ML Commons needs a fast "
            f"(Rust) tokenizer: re-save the model with use_fast=True"
        )
    data = json.loads(backend.to_str())
    data["truncation"] = {"direction": "Right", "max_length": int(max_length), "strategy": "LongestFirst", "stride": 0}
    data["padding"] = None
    return data


def dumps(data) -> bytes:
    """Stable JSON bytes: the same input always gives the same file."""
    return (json.dumps(data, ensure_ascii=False, indent=2, sort_keys=False) + "\n").encode("utf-8")


def server_token_strings(tokenizer_data: dict, vocab_size: int) -> dict[int, str]:
    """How ML Commons names each id in WORD format: a single-id decode with specials skipped; empty names dropped."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_str(json.dumps(tokenizer_data))
    names = {}
    for tid in range(vocab_size):
        text = tok.decode([tid], skip_special_tokens=True)
        if text:
            names[tid] = text
    return names


def idf_json(weights, token_names: dict[int, str]) -> dict[str, float]:
    """``{token string: weight}`` over the whole vocabulary, zeros included.

    ML Commons gives a token missing from idf.json the weight 1.0, sentence-transformers gives it 0; writing every
    entry makes the two agree. Where two ids decode to the same string the later id wins, as on the server.
    """
    out: dict[str, float] = {}
    for tid, name in token_names.items():
        out[name] = float(weights[tid])
    return out
