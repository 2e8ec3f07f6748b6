"""Load a SparseEncoder and read what it is from its own modules (never from flags)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import SparsepackError

SUPPORTED = (
    "inference-free: Router(query=SparseStaticEmbedding, document=masked-LM Transformer + SpladePooling), "
    "or bi-encoder: masked-LM Transformer + SpladePooling"
)


@dataclass
class ModelSpec:
    source: str
    revision: str | None
    mode: str  # inference-free | bi-encoder
    activation: str
    pooling: str
    max_length: int  # the model's own max_seq_length
    vocab_size: int
    special_ids: list[int]
    doc_transformer: Any = field(repr=False)
    query_module: Any = field(repr=False, default=None)  # SparseStaticEmbedding for inference-free models
    encoder: Any = field(repr=False, default=None)
    license_file: Path | None = None

    @property
    def mlm(self):
        return self.doc_transformer.auto_model

    @property
    def tokenizer(self):
        return self.doc_transformer.tokenizer

    @property
    def query_tokenizer(self):
        return self.query_module.tokenizer if self.query_module is not None else self.tokenizer


def load_encoder(model: str, revision: str | None = None, trust_remote_code: bool = False):
    """``SparseEncoder(model_id_or_path)``: the loading path users take, hub ids included."""
    from .._st_compat import sparse_encoder_class

    logging.getLogger("sentence_transformers").setLevel(logging.ERROR)
    SparseEncoder = sparse_encoder_class()
    local = Path(model).exists()
    looks_like_path = model.startswith((".", "/", "~")) or model.count("/") > 1 or "\\" in model
    if looks_like_path and not local:
        raise SparsepackError(
            f"no model at {model}; give an existing SparseEncoder directory or a Hugging Face id (org/name)"
        )
    try:
        return SparseEncoder(
            model,
            revision=revision,
            trust_remote_code=trust_remote_code,
            device="cpu",
            model_kwargs={"attn_implementation": "eager"},
        )
    except ValueError as exc:
        if "trust_remote_code" in str(exc) and not trust_remote_code:
            raise SparsepackError(f"{model} ships custom code; review it, then pass --trust-remote-code") from exc
        raise SparsepackError(f"cannot load {model} as a SparseEncoder: {_one_line(exc)}") from exc
    except OSError as exc:
        where = "the path" if local else "the Hugging Face id (or set HF_HUB_OFFLINE=0 and check the network)"
        raise SparsepackError(f"cannot load {model}: {_one_line(exc)}; check {where}") from exc
    except Exception as exc:  # noqa: BLE001 - any loader failure becomes one clear line
        if "trust_remote_code" in str(exc) and not trust_remote_code:
            raise SparsepackError(f"{model} ships custom code; review it, then pass --trust-remote-code") from exc
        raise SparsepackError(f"cannot load {model} as a SparseEncoder: {_one_line(exc)}") from exc


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _modules(seq) -> list:
    return list(seq.children()) if hasattr(seq, "children") else list(seq)


def inspect_encoder(encoder, source: str, revision: str | None = None) -> ModelSpec:
    top = _modules(encoder)
    names = [type(m).__name__ for m in top]
    query_module = None
    if len(top) == 1 and names[0] in ("Router", "Asym"):
        routes = dict(top[0].sub_modules.items())
        if set(routes) != {"query", "document"}:
            raise SparsepackError(f"{source}: Router routes {sorted(routes)} found; supported: {SUPPORTED}")
        query_mods = _modules(routes["query"])
        doc_mods = _modules(routes["document"])
        q_names = [type(m).__name__ for m in query_mods]
        if q_names != ["SparseStaticEmbedding"]:
            if _is_splade(doc_mods) and _is_splade(query_mods):
                raise SparsepackError(
                    f"{source}: a Router with separate query and document encoders found; supported: {SUPPORTED}"
                )
            raise SparsepackError(f"{source}: query route {q_names} found; supported: {SUPPORTED}")
        query_module = query_mods[0]
        mode = "inference-free"
    else:
        doc_mods = top
        mode = "bi-encoder"
    doc_names = [type(m).__name__ for m in doc_mods]
    if "SparseAutoEncoder" in doc_names:
        raise SparsepackError(
            f"{source}: a SparseAutoEncoder (CSR) model found, which ML Commons cannot serve as "
            f"SPARSE_ENCODING; supported: {SUPPORTED}"
        )
    if not _is_splade(doc_mods):
        raise SparsepackError(
            f"{source}: modules {doc_names} found (not a SPLADE sparse encoder); supported: {SUPPORTED}"
        )
    transformer, pooling = doc_mods
    mlm = getattr(transformer, "auto_model", None)
    head = mlm.get_output_embeddings() if mlm is not None and hasattr(mlm, "get_output_embeddings") else None
    if head is None:
        arch = type(mlm).__name__ if mlm is not None else "none"
        raise SparsepackError(
            f"{source}: the document transformer ({arch}) has no masked-LM head; "
            f"SPLADE needs a *ForMaskedLM model; supported: {SUPPORTED}"
        )
    _force_eager_attention(mlm)
    tokenizer = transformer.tokenizer
    vocab_size = int(head.weight.shape[0]) if hasattr(head, "weight") else len(tokenizer.get_vocab())
    if vocab_size != len(tokenizer.get_vocab()):
        raise SparsepackError(
            f"{source}: masked-LM head has {vocab_size} outputs but the tokenizer {len(tokenizer.get_vocab())} "
            f"entries; re-save the model with a matching tokenizer"
        )
    specials = sorted(set(int(i) for i in tokenizer.all_special_ids))
    if query_module is not None and int(query_module.weight.shape[0]) != vocab_size:
        raise SparsepackError(
            f"{source}: the IDF table has {query_module.weight.shape[0]} entries, the vocabulary {vocab_size}"
        )
    return ModelSpec(
        source=source,
        revision=revision,
        mode=mode,
        activation=pooling.activation_function,
        pooling=pooling.pooling_strategy,
        max_length=int(transformer.max_seq_length or tokenizer.model_max_length),
        vocab_size=vocab_size,
        special_ids=specials,
        doc_transformer=transformer,
        query_module=query_module,
        encoder=encoder,
        license_file=_license(source, revision),
    )


def _is_splade(mods) -> bool:
    names = [type(m).__name__ for m in mods]
    return len(names) == 2 and names[1] == "SpladePooling" and hasattr(mods[0], "auto_model")


def _force_eager_attention(mlm) -> None:
    """SDPA traces carry aten::scaled_dot_product_attention, unknown to libtorch 1.13.1 (OpenSearch 2.x)."""
    if hasattr(mlm, "set_attn_implementation"):
        try:
            mlm.set_attn_implementation("eager")
            return
        except Exception:  # noqa: BLE001 - older transformers: fall back to the config attribute
            pass
    mlm.config._attn_implementation = "eager"


def _license(source: str, revision: str | None) -> Path | None:
    local = Path(source)
    if local.is_dir():
        for name in ("LICENSE", "LICENSE.txt", "LICENSE.md"):
            if (local / name).is_file():
                return local / name
        return None
    try:
        from huggingface_hub import hf_hub_download

        return Path(hf_hub_download(source, "LICENSE", revision=revision))
    except Exception:  # noqa: BLE001 - a model without a LICENSE file is fine
        return None


def load_model(model: str, revision: str | None = None, trust_remote_code: bool = False) -> ModelSpec:
    return inspect_encoder(load_encoder(model, revision, trust_remote_code), model, revision)
