"""sentence-transformers moved its sparse modules between 5.x (``sparse_encoder.models``, ``models.Router``) and
6.x (``sparse_encoder.modules``). Import them from wherever this installation keeps them."""

from __future__ import annotations

import importlib


def _first(names: list[str], attr: str):
    for name in names:
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        if hasattr(module, attr):
            return getattr(module, attr)
    raise ImportError(f"sentence-transformers has no {attr} in {names}; install sentence-transformers>=5.0")


def sparse_encoder_class():
    return _first(["sentence_transformers.sparse_encoder", "sentence_transformers"], "SparseEncoder")


def sparse_module(attr: str):
    return _first(
        [
            "sentence_transformers.sparse_encoder.modules",
            "sentence_transformers.sparse_encoder.models",
            "sentence_transformers.models",
        ],
        attr,
    )


def mlm_module(path: str, max_length: int):
    """sentence-transformers 6 spells a masked-LM module Transformer(transformer_task="fill-mask"); 5.x MLMTransformer."""
    import inspect

    transformer = sparse_module("Transformer")
    if "transformer_task" in inspect.signature(transformer.__init__).parameters:
        return transformer(path, max_seq_length=max_length, transformer_task="fill-mask")
    return sparse_module("MLMTransformer")(path, max_seq_length=max_length)
