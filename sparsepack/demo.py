"""Tiny neural sparse models built offline: the embedded default of the demo, and the test fixtures.

Random-weight BERT / DistilBERT masked LMs over a fixed WordPiece vocabulary (built from sorted lists, so ids are the
same on every run), saved as real sentence-transformers ``SparseEncoder`` directories that load through the same
``SparseEncoder(path)`` call users make with a Hugging Face id.
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from pathlib import Path

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
WORDS = sorted(
    set(
        """
a about after all also an and are as at be because been but by can city cloud data day do document does engine
find first for from go good has have he how i if in index into is it its know language like long make many model
more most new news night no not now of on one open opensearch or other out over people query rain rainy river
said search see she so some sparse such text than that the their them then there these they this time to token
two up use vector very was water way we weather were what when which who will with word world would year york you
""".split()
    )
)
PIECES = ["##s", "##ing", "##ed", "##er", "##ly", "##y", "##es", "##ion", "##al", "##e"]
CHARS = sorted(set(string.ascii_lowercase + string.digits + string.punctuation)) + ["é", "ü", "ß", "日", "本"]


def demo_vocab(extra_size: int = 0) -> list[str]:
    vocab = SPECIALS + CHARS + ["##" + c for c in string.ascii_lowercase] + PIECES + WORDS
    vocab += [f"tok{i}" for i in range(extra_size)]
    seen: set[str] = set()
    return [t for t in vocab if not (t in seen or seen.add(t))]


@dataclass(frozen=True)
class DemoSpec:
    arch: str = "bert"  # bert | distilbert
    mode: str = "inference-free"  # inference-free | bi-encoder
    activation: str = "log1p_relu"  # relu | log1p_relu
    hidden: int = 32
    layers: int = 2
    heads: int = 2
    max_length: int = 64
    vocab_extra: int = 0
    seed: int = 0
    pooling: str = "max"
    vocab_file: str | None = None  # a real vocab.txt instead of the generated one
    zero_idf: tuple[str, ...] = ()  # inference-free: these tokens get IDF 0 (stopwords found in every document)
    idf_scale: float = 1.0  # inference-free: IDF multiplied by this (IDF is 0.5-5 before)
    logit_scale: float = 1.0  # masked-LM logits multiplied by this (sum pooling of huge logits: weights above 64)


def build_demo_model(out_dir: str | Path, spec: DemoSpec = DemoSpec()) -> Path:
    """Write a SparseEncoder for ``spec`` to ``out_dir`` and return the path."""
    import torch
    from transformers import (
        BertConfig,
        BertForMaskedLM,
        BertTokenizerFast,
        DistilBertConfig,
        DistilBertForMaskedLM,
        DistilBertTokenizerFast,
    )

    from ._st_compat import sparse_encoder_class, sparse_module

    out_dir = Path(out_dir)
    backbone_dir = out_dir / "_backbone"
    backbone_dir.mkdir(parents=True, exist_ok=True)
    vocab_path = backbone_dir / "vocab.txt"
    if spec.vocab_file:
        vocab_path.write_text(Path(spec.vocab_file).read_text(encoding="utf-8"), encoding="utf-8")
    else:
        vocab_path.write_text("\n".join(demo_vocab(spec.vocab_extra)) + "\n", encoding="utf-8")
    # from_pretrained on a folder holding only vocab.txt works in transformers 4.x and 5.x alike
    tokenizer_cls = (
        DistilBertTokenizerFast if spec.arch == "distilbert" else BertTokenizerFast
    )  # DistilBERT: no token_type_ids
    tokenizer = tokenizer_cls.from_pretrained(str(backbone_dir), do_lower_case=True, model_max_length=spec.max_length)
    vocab_size = len(tokenizer.get_vocab())

    torch.manual_seed(spec.seed)
    if spec.arch == "bert":
        config = BertConfig(
            vocab_size=vocab_size,
            hidden_size=spec.hidden,
            num_hidden_layers=spec.layers,
            num_attention_heads=spec.heads,
            intermediate_size=spec.hidden * 4,
            max_position_embeddings=max(spec.max_length, 16),
            pad_token_id=0,
        )
        model = BertForMaskedLM(config)
        bias = model.cls.predictions.bias
    elif spec.arch == "distilbert":
        config = DistilBertConfig(
            vocab_size=vocab_size,
            dim=spec.hidden,
            n_layers=spec.layers,
            n_heads=spec.heads,
            hidden_dim=spec.hidden * 4,
            max_position_embeddings=max(spec.max_length, 16),
            pad_token_id=0,
        )
        model = DistilBertForMaskedLM(config)
        bias = model.vocab_projector.bias
    else:
        raise ValueError(f"unknown demo arch {spec.arch!r}; use bert or distilbert")
    model.eval()
    _sparsify(model, bias, tokenizer)
    if spec.logit_scale != 1.0:
        _scale_logits(model, bias, spec.logit_scale)
    model.save_pretrained(backbone_dir)
    tokenizer.save_pretrained(backbone_dir)

    SpladePooling = sparse_module("SpladePooling")
    SparseEncoder = sparse_encoder_class()
    doc_modules = [
        _mlm_module(str(backbone_dir), spec.max_length),
        SpladePooling(pooling_strategy=spec.pooling, activation_function=spec.activation),
    ]
    if spec.mode == "inference-free":
        SparseStaticEmbedding = sparse_module("SparseStaticEmbedding")
        Router = sparse_module("Router")
        gen = torch.Generator().manual_seed(spec.seed + 1)
        weight = (torch.rand(vocab_size, generator=gen) * 4.5 + 0.5) * spec.idf_scale
        for tid in tokenizer.all_special_ids:
            weight[tid] = 0.0
        for token in spec.zero_idf:
            weight[tokenizer.convert_tokens_to_ids(token)] = 0.0
        query = SparseStaticEmbedding(tokenizer=doc_modules[0].tokenizer, weight=weight, frozen=True)
        modules = [Router.for_query_document(query_modules=[query], document_modules=doc_modules)]
    elif spec.mode == "bi-encoder":
        modules = doc_modules
    else:
        raise ValueError(f"unknown demo mode {spec.mode!r}; use inference-free or bi-encoder")
    encoder = SparseEncoder(modules=modules, similarity_fn_name="dot", device="cpu")
    encoder.save(str(out_dir))
    (out_dir / "LICENSE").write_text("Apache-2.0 (sparsepack demo model, random weights)\n")
    return out_dir


def _mlm_module(path: str, max_length: int):
    """sentence-transformers 6 spells a masked-LM module Transformer(transformer_task="fill-mask"); 5.x MLMTransformer."""
    import inspect

    from ._st_compat import sparse_module

    transformer = sparse_module("Transformer")
    if "transformer_task" in inspect.signature(transformer.__init__).parameters:
        return transformer(path, max_seq_length=max_length, transformer_task="fill-mask")
    return sparse_module("MLMTransformer")(path, max_seq_length=max_length)


def _sparsify(model, bias, tokenizer) -> None:
    """Random MLM heads activate nearly every vocabulary entry; shift the output bias so ~4% stay positive."""
    import torch

    texts = ["the weather in new york is rainy", "open search finds sparse vectors", "a b c d e f g 1 2 3"]
    enc = tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        logits = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).logits
        pooled = logits.masked_fill(enc["attention_mask"].unsqueeze(-1) == 0, float("-inf")).amax(dim=1)
        bias.data -= torch.quantile(pooled.flatten(), 0.96)


def _scale_logits(model, bias, factor: float) -> None:
    """Logits x ``factor`` without touching the embeddings the decoder shares: scale what feeds the decoder and its bias."""
    norm = model.cls.predictions.transform.LayerNorm if hasattr(model, "cls") else model.vocab_layer_norm
    norm.weight.data *= factor
    norm.bias.data *= factor
    bias.data *= factor


def summary_lines(report: dict, package_dir: str | Path, url: str, started_port: int | None) -> list[str]:
    """What the demo proved, readably: one smoke-test query with its top hit and score, the parity figures, and the
    next three commands (package your own model, release it to your cluster, stop the local node)."""
    import json

    from .registry.smoke_corpus import CORPUS

    lines = [""]
    queries = report.get("steps", {}).get("smoke_retrieval", {}).get("queries", [])
    sample = next((q for q in queries if q.get("checkable") and q.get("passed")), None)
    if sample is not None:
        got = sample.get("got")
        hit = CORPUS[got] if isinstance(got, int) and 0 <= got < len(CORPUS) else f"document {got}"
        lines.append(f'sample query "{sample["query"]}" -> top hit "{hit}"')
        lines.append(
            f"  score {sample['score']:.4f} on the cluster, {sample['local_score']:.4f} computed locally "
            f"(relative difference {sample['relative_diff']:.1e})"
        )
    manifest_path = Path(package_dir) / "manifest.json"
    parity = json.loads(manifest_path.read_text()).get("parity", {}) if manifest_path.exists() else {}
    doc, query = parity.get("document", {}), parity.get("query", {})
    if doc:
        lines.append(
            f"parity (package): documents max |d| {doc['max_abs_diff']:.1e} (<= {doc['tolerance']:.0e}), queries "
            f"{'identical' if query.get('passed') else 'DIFFER'}"
        )
    served = report.get("steps", {}).get("smoke_predict", {}).get("document", {})
    if served:
        lines.append(
            f"parity (cluster _predict vs the artifact): max |d| {served['max_abs_diff']:.1e} "
            f"(<= {served['tolerance']:.0e}), token sets identical on {served['identical_token_sets']}/{served['texts']} texts"
        )
    lines += ["", "next:"]
    lines.append(
        "  sparsepack package YOUR-MODEL -o my-package/    # a Hugging Face id or a local SparseEncoder folder"
    )
    lines.append(
        "  sparsepack release my-package/ --url https://YOUR-CLUSTER:9200 --username admin    "
        "# password from OPENSEARCH_PASSWORD"
    )
    if started_port is not None:
        lines.append(f"  sparsepack node stop --port {started_port}    # stop the local node ({url})")
    return lines
