"""``sparsepack eval``: do two encoders rank a corpus the same way? nDCG@10 and recall@100 with the first as truth.

An encoder is a source model (``SparseEncoder``), a package's artifact run locally as ML Commons runs it, or a model
deployed on a cluster (``_predict``). Every encoder yields ``{token string: weight}`` maps, the form the server returns,
so all three compare directly. The corpus is JSONL ``{"id", "text"}`` or a built-in synthetic one drawn from the
model's own vocabulary (no download).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..contract.package_dir import is_package
from ..errors import SparsepackError
from ..metrics.corpus import synthetic_corpus
from ..metrics.gate import MIN_DOCUMENTS, MIN_QUERIES
from ..metrics.ranking import qrels_ndcg, ranking_agreement

Vectors = list[dict[str, float]]
BATCH = 4  # [batch, 512, vocab] float32 logits: 4 x 512 x 30,522 is 250 MB


@dataclass
class Encoder:
    name: str
    documents: Callable[[list[str]], Vectors]
    queries: Callable[[list[str]], Vectors]
    vocab: list[str] = field(default_factory=list)  # whole-word vocabulary for the synthetic corpus (empty: unknown)


@dataclass
class Corpus:
    source: str
    doc_ids: list[str]
    docs: list[str]
    query_ids: list[str]
    queries: list[str]
    qrels: dict[str, dict[str, float]] | None = None


# --- encoders -------------------------------------------------------------------------------------------------------


def vocabulary(tokenizer_data: dict) -> list[str]:
    return sorted(tokenizer_data.get("model", {}).get("vocab", {}))


def model_encoder(model: str, max_length: int | None = None, spec=None) -> Encoder:
    """The source model, truncating documents where a package of it does (min(model max, 512), or ``max_length``)."""
    from ..contract.limits import document_max_length
    from .introspect import load_model
    from .parity import reference_vectors
    from .query_weights import reference_token_map
    from .tokenizer_export import server_token_strings, tokenizer_json

    spec = spec or load_model(model)
    length = document_max_length(spec.max_length, max_length)
    tok = tokenizer_json(spec.tokenizer, length)
    names = server_token_strings(tok, spec.vocab_size)

    def run(encode, texts):
        return [reference_token_map(v, names) for v in reference_vectors(spec, encode, texts, length, BATCH)]

    return Encoder(
        f"model:{model}",
        lambda t: run(spec.encoder.encode_document, t),
        lambda t: run(spec.encoder.encode_query, t),
        vocabulary(tok),
    )


def artifact_encoder(
    name: str,
    artifact,
    tokenizer_data: dict,
    vocab_size: int,
    query_tokenizer_data: dict | None = None,
    idf: dict | None = None,
) -> Encoder:
    """A document artifact called as ML Commons calls it; queries through the same artifact (bi-encoder) or the
    emulated SPARSE_TOKENIZE (inference-free)."""
    from .parity import DjlStyleTokenizer, emulate_sparse_tokenize, run_artifact
    from .query_weights import reference_token_map
    from .tokenizer_export import server_token_strings

    tokenizer = DjlStyleTokenizer(tokenizer_data)
    names = server_token_strings(tokenizer_data, vocab_size)

    def documents(texts):
        return [reference_token_map(v, names) for v in run_artifact(artifact, tokenizer, texts, batch_size=BATCH)]

    def queries(texts):
        if query_tokenizer_data is None:
            return documents(texts)
        return [
            {k: v for k, v in emulate_sparse_tokenize(query_tokenizer_data, idf, t).items() if v != 0.0} for t in texts
        ]

    return Encoder(name, documents, queries, vocabulary(tokenizer_data))


def package_encoder(path: str, fmt: str | None = None) -> Encoder:
    from ..contract.package_dir import load_package
    from .artifact_zip import load_from_zip, query_side

    view = load_package(path).for_format(fmt)
    document = view.artifact("document")
    if document is None:
        raise SparsepackError(f"{path}: the package has no document artifact; re-package it")
    artifact, tokenizer_data = load_from_zip(view.path_of(document))
    query = view.artifact("query")
    query_tokenizer_data, idf = query_side(view.path_of(query)) if query else (None, None)
    return artifact_encoder(
        f"package:{path} ({view.document_formats[0]})",
        artifact,
        tokenizer_data,
        view.vocab_size,
        query_tokenizer_data,
        idf,
    )


def cluster_encoder(
    predict: Callable[[str, list[str]], Vectors], document_model: str, query_model: str | None = None
) -> Encoder:
    """A deployed model; ``predict(model_id, texts)`` asks the cluster (the registry layer supplies it)."""

    def run(model_id, texts):
        out: Vectors = []
        for start in range(0, len(texts), 32):
            out.extend(predict(model_id, texts[start : start + 32]))
        return out

    return Encoder(
        f"deployed:{document_model}", lambda t: run(document_model, t), lambda t: run(query_model or document_model, t)
    )


def resolve_encoder(ref: str, fmt: str | None = None, predictor_factory: Callable | None = None) -> Encoder:
    """``ref``: a package directory, a model (path or hub id), or ``deployed:DOC_ID[,QUERY_ID]`` (predicted through
    ``predictor_factory()``, a ``predict(model_id, texts)`` of a connected cluster)."""
    if ref.startswith("deployed:"):
        if predictor_factory is None:
            raise SparsepackError(f"{ref} needs a cluster; pass --url (or set OPENSEARCH_URL)")
        ids = [i for i in ref.removeprefix("deployed:").split(",") if i]
        if not ids:
            raise SparsepackError("deployed: needs a model id, e.g. deployed:DOC_ID or deployed:DOC_ID,QUERY_ID")
        return cluster_encoder(predictor_factory(), ids[0], ids[1] if len(ids) > 1 else None)
    if is_package(ref):
        return package_encoder(ref, fmt)
    return model_encoder(ref)


# --- corpus ---------------------------------------------------------------------------------------------------------


def read_jsonl(path: str | Path, what: str) -> tuple[list[str], list[str]]:
    ids, texts = [], []
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise SparsepackError(
            f'cannot read {what} file {path}: {exc.strerror}; give a JSONL file of {{"id", "text"}}'
        ) from exc
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            ids.append(str(row["id"]))
            texts.append(str(row["text"]))
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise SparsepackError(f'{path} line {n} is not a JSON object with "id" and "text"; fix that line') from exc
    if not texts:
        raise SparsepackError(f'{path} holds no {what}; give one JSON object {{"id", "text"}} per line')
    return ids, texts


def read_user_texts(corpus: str | None, queries: str | None) -> dict[str, tuple[str, list[str]]]:
    """JSONL ``{"id", "text"}`` files of documents and of queries, read (and refused) before any packaging work."""
    out = {}
    for side, path in (("documents", corpus), ("queries", queries)):
        if path:
            texts = read_jsonl(path, side)[1]
            out[side] = (f"{side} of {path} ({len(texts)})", texts)
    return out


def read_qrels(path: str | Path) -> dict[str, dict[str, float]]:
    """JSONL ``{"query_id", "doc_id", "relevance"}``, or TREC lines ``qid 0 docid rel`` / ``qid docid rel``."""
    qrels: dict[str, dict[str, float]] = {}
    for n, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            if line.lstrip().startswith("{"):
                row = json.loads(line)
                qid, did, rel = str(row["query_id"]), str(row["doc_id"]), float(row.get("relevance", 1))
            else:
                parts = line.split()
                qid, did, rel = parts[0], parts[-2], float(parts[-1])
        except (json.JSONDecodeError, KeyError, ValueError, IndexError) as exc:
            raise SparsepackError(
                f'{path} line {n} is not a qrel; use {{"query_id", "doc_id", "relevance"}} or \'qid 0 docid rel\''
            ) from exc
        qrels.setdefault(qid, {})[did] = rel
    return qrels


def load_corpus(
    corpus: str | None,
    queries: str | None,
    qrels: str | None,
    vocab: list[str],
    n_docs: int = MIN_DOCUMENTS,
    n_queries: int = MIN_QUERIES,
) -> Corpus:
    if bool(corpus) != bool(queries):
        raise SparsepackError(
            'give both --corpus and --queries (JSONL {"id", "text"}), or neither for the built-in corpus'
        )
    if corpus and queries:  # both or neither, checked above
        doc_ids, docs = read_jsonl(corpus, "documents")
        query_ids, query_texts = read_jsonl(queries, "queries")
        return Corpus(str(corpus), doc_ids, docs, query_ids, query_texts, read_qrels(qrels) if qrels else None)
    if qrels:
        raise SparsepackError("--qrels refers to ids of --corpus/--queries; give those too")
    if not vocab:
        raise SparsepackError(
            "the built-in corpus is drawn from a local model's vocabulary; compare with a package or "
            "model first, or give --corpus and --queries"
        )
    docs, query_texts = synthetic_corpus(vocab, n_docs=n_docs, n_queries=n_queries)
    return Corpus(
        "synthetic", [str(i) for i in range(len(docs))], docs, [f"q{i}" for i in range(len(query_texts))], query_texts
    )


# --- comparison -----------------------------------------------------------------------------------------------------


def _scores(queries: Vectors, docs: Vectors):
    import torch

    index: dict[str, int] = {}
    for vec in (*queries, *docs):
        for token in vec:
            index.setdefault(token, len(index))

    def matrix(vectors):
        m = torch.zeros(len(vectors), max(len(index), 1), dtype=torch.float64)
        for row, vec in enumerate(vectors):
            for token, weight in vec.items():
                m[row, index[token]] = weight
        return m

    return matrix(queries) @ matrix(docs).T


def evaluate(a: Encoder, b: Encoder, corpus: Corpus) -> dict:
    from .weight_stats import token_map_figures

    t0 = time.perf_counter()
    truth_vectors = a.queries(corpus.queries), a.documents(corpus.docs)
    t1 = time.perf_counter()
    cand_vectors = b.queries(corpus.queries), b.documents(corpus.docs)
    t2 = time.perf_counter()
    truth, cand = _scores(*truth_vectors), _scores(*cand_vectors)
    where = f"{corpus.source} ({len(corpus.docs)} documents, {len(corpus.queries)} queries)"
    result = {
        "truth": a.name,
        "candidate": b.name,
        "corpus": {"source": corpus.source, "documents": len(corpus.docs), "queries": len(corpus.queries)},
        **ranking_agreement(truth, cand),
        # the output weights on this corpus: what the SEISMIC quantization ceilings should sit just above
        "weight_stats": {
            role: {
                "documents": token_map_figures(docs, where, "documents"),
                "queries": token_map_figures(queries, where, "queries"),
            }
            for role, (queries, docs) in (("truth", truth_vectors), ("candidate", cand_vectors))
        },
        "seconds": {"truth": round(t1 - t0, 2), "candidate": round(t2 - t1, 2)},
    }
    if corpus.qrels is not None:
        result["qrels"] = {
            "judged_queries": sum(1 for q in corpus.query_ids if q in corpus.qrels),
            "truth_ndcg_at_10": qrels_ndcg(truth, *_judged(corpus)),
            "candidate_ndcg_at_10": qrels_ndcg(cand, *_judged(corpus)),
        }
    return result


def _judged(corpus: Corpus) -> tuple:
    return corpus.doc_ids, corpus.query_ids, corpus.qrels
