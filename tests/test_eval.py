"""`sparsepack eval`: ranking agreement of two encoders (nDCG@10, recall@100, qrels), its corpus inputs and the gate."""

import json

import pytest
import torch

from sparsepack.cli import main
from sparsepack.errors import SparsepackError
from sparsepack.metrics.gate import Gate
from sparsepack.metrics.ranking import qrels_ndcg, ranking_agreement
from sparsepack.packaging.evaluation import Corpus, load_corpus, read_jsonl, read_qrels, resolve_encoder


def test_identical_rankings_agree_fully():
    scores = torch.rand(5, 40, dtype=torch.float64)
    out = ranking_agreement(scores, scores.clone())
    assert out == {"ndcg_at_10": 1.0, "recall_at_100": 1.0, "queries_scored": 5, "queries_without_matches": 0}


def test_ndcg_and_recall_figures_on_known_rankings():
    # one query, 200 documents: the truth scores documents 0..149 positively, descending
    truth = torch.zeros(1, 200, dtype=torch.float64)
    truth[0, :150] = torch.arange(150, 0, -1, dtype=torch.float64)
    # candidate ranks 50..149 on top: only 50 of the truth's top 100 (ids 0..99) are in its top 100
    cand = torch.zeros(1, 200, dtype=torch.float64)
    cand[0, 50:150] = torch.arange(100, 0, -1, dtype=torch.float64)
    out = ranking_agreement(truth, cand)
    assert out["recall_at_100"] == pytest.approx(0.5)
    dcg = lambda gains: sum(g / torch.log2(torch.tensor(i + 2.0)).item() for i, g in enumerate(gains))  # noqa: E731
    assert out["ndcg_at_10"] == pytest.approx(dcg(range(100, 90, -1)) / dcg(range(150, 140, -1)), abs=1e-6)
    swapped = truth.clone()
    swapped[0, [0, 1]] = swapped[0, [1, 0]]  # the two best swapped
    gains, disc = [150, 149], [1.0, 1 / torch.log2(torch.tensor(3.0)).item()]
    ideal = sum(g / torch.log2(torch.tensor(i + 2.0)).item() for i, g in enumerate(range(150, 140, -1)))
    expected = (ideal - gains[0] * disc[0] - gains[1] * disc[1] + gains[1] * disc[0] + gains[0] * disc[1]) / ideal
    assert ranking_agreement(truth, swapped)["ndcg_at_10"] == pytest.approx(expected, abs=1e-6)


def test_queries_the_truth_matches_nothing_are_counted_not_scored():
    truth = torch.tensor([[0.0, 0.0, 0.0], [1.0, 2.0, 0.0]], dtype=torch.float64)
    out = ranking_agreement(truth, truth)
    assert out["queries_scored"] == 1 and out["queries_without_matches"] == 1


def test_qrels_ndcg():
    corpus = Corpus("t", ["a", "b", "c"], ["", "", ""], ["q1", "q2"], ["", ""], {"q1": {"b": 1.0}, "q2": {"zzz": 1}})
    perfect = torch.tensor([[0.1, 0.9, 0.0], [1.0, 0.0, 0.0]], dtype=torch.float64)
    second = torch.tensor([[0.9, 0.5, 0.0], [1.0, 0.0, 0.0]], dtype=torch.float64)
    assert (
        qrels_ndcg(perfect, corpus.doc_ids, corpus.query_ids, corpus.qrels) == 1.0
    )  # q2 judges no document of the corpus: left out
    assert qrels_ndcg(second, corpus.doc_ids, corpus.query_ids, corpus.qrels) == pytest.approx(
        1 / torch.log2(torch.tensor(3.0)).item(), abs=1e-6
    )


def test_jsonl_and_qrels_inputs(tmp_path):
    docs = tmp_path / "docs.jsonl"
    docs.write_text('{"id": 1, "text": "rain"}\n\n{"id": "2", "text": "river"}\n')
    assert read_jsonl(docs, "documents") == (["1", "2"], ["rain", "river"])
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": 1, "text": "rain"}\n{"text": "no id"}\n')
    with pytest.raises(SparsepackError, match='line 2 .*"id" and "text"'):
        read_jsonl(bad, "documents")
    qrels = tmp_path / "qrels"
    qrels.write_text('q1 0 1 2\nq1 2 1\n{"query_id": "q2", "doc_id": "2", "relevance": 1}\n')
    assert read_qrels(qrels) == {"q1": {"1": 2.0, "2": 1.0}, "q2": {"2": 1.0}}
    with pytest.raises(SparsepackError, match="both --corpus and --queries"):
        load_corpus(str(docs), None, None, [])
    synthetic = load_corpus(None, None, None, ["rain", "river", "city", "cloud"], n_docs=20, n_queries=7)
    assert synthetic.source == "synthetic" and len(synthetic.docs) == 20 and len(synthetic.queries) == 7
    assert (
        synthetic.docs == load_corpus(None, None, None, ["rain", "river", "city", "cloud"], n_docs=20, n_queries=7).docs
    )


def test_gate_parsing_and_minimum_sample():
    assert Gate.parse("ndcg=0.95,recall=0.9") == Gate(0.95, 0.9)
    assert Gate.parse("recall=0.5") == Gate(0.98, 0.5)
    for bad in ("ndcg=2", "ndcg", "mrr=0.9", "ndcg=x"):
        with pytest.raises(SparsepackError, match="ndcg=X,recall=Y"):
            Gate.parse(bad)
    result = {"ndcg_at_10": 1.0, "recall_at_100": 1.0, "corpus": {"documents": 499, "queries": 100}}
    assert not Gate().check(result)["passed"]  # too small a sample to gate on
    result["corpus"]["documents"] = 500
    assert Gate().check(result)["passed"]
    assert not Gate().check({**result, "recall_at_100": 0.979})["passed"]


def test_cli_eval_model_vs_its_onnx_package(model_factory, tmp_path, capsys):
    from sparsepack.packaging.package import package

    model = str(model_factory("bert-bi-relu"))
    pkg = tmp_path / "pkg"
    package(model, pkg, artifact_format="onnx", log=lambda m: None)
    assert main(["eval", model, str(pkg), "--quality-gate", "ndcg=0.999,recall=0.999"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["corpus"] == {"source": "synthetic", "documents": 500, "queries": 100}
    assert out["ndcg_at_10"] >= 0.999 and out["recall_at_100"] >= 0.999 and out["gate"]["passed"]
    assert out["candidate"].endswith("(onnx)")


def test_cli_eval_jsonl_qrels_and_failing_gate(model_factory, tmp_path, capsys):
    """Files in, qrels judged, and a gate that fails on the quality figures: the sample is the gate's minimum size,
    and the same figures pass a gate set at them."""
    import random

    from sparsepack.demo import WORDS
    from sparsepack.metrics.gate import MIN_DOCUMENTS, MIN_QUERIES

    rng = random.Random(7)
    texts = [" ".join(rng.sample(WORDS, 6)) for _ in range(MIN_DOCUMENTS)]
    docs = tmp_path / "docs.jsonl"
    queries = tmp_path / "queries.jsonl"
    qrels = tmp_path / "qrels.jsonl"
    docs.write_text("".join(json.dumps({"id": f"d{i}", "text": t}) + "\n" for i, t in enumerate(texts)))
    queries.write_text(
        "".join(json.dumps({"id": f"q{i}", "text": t}) + "\n" for i, t in enumerate(texts[:MIN_QUERIES]))
    )
    qrels.write_text(
        "".join(json.dumps({"query_id": f"q{i}", "doc_id": f"d{i}", "relevance": 1}) + "\n" for i in range(5))
    )
    a, b = str(model_factory("bert-bi-relu")), str(model_factory("bert-bi-sum"))  # max vs sum pooling: other rankings
    code = main(
        [
            "eval",
            a,
            b,
            "--corpus",
            str(docs),
            "--queries",
            str(queries),
            "--qrels",
            str(qrels),
            "--quality-gate",
            "ndcg=0.99,recall=0.99",
        ]
    )
    out = json.loads(capsys.readouterr().out)
    assert out["corpus"] == {"source": str(docs), "documents": MIN_DOCUMENTS, "queries": MIN_QUERIES}
    assert code == 3 and not out["gate"]["passed"]
    assert out["ndcg_at_10"] < 0.99 or out["recall_at_100"] < 0.99, out  # the figures fail it...
    assert Gate(ndcg=out["ndcg_at_10"], recall=out["recall_at_100"]).check(out)["passed"]  # ...not the sample size
    assert out["qrels"]["judged_queries"] == 5
    assert 0.0 < out["qrels"]["truth_ndcg_at_10"] <= 1.0 and 0.0 < out["qrels"]["candidate_ndcg_at_10"] <= 1.0
    with pytest.raises(SparsepackError, match="needs a cluster"):
        resolve_encoder("deployed:abc")
    with pytest.raises(SparsepackError, match="needs a model id"):
        resolve_encoder("deployed:", predictor_factory=lambda: None)


@pytest.mark.cluster
def test_eval_against_deployed_model(node_3x, package_factory, capsys):
    from conftest import cluster_for, conn
    from test_registry import cleanup_group

    from sparsepack.registry import models
    from sparsepack.rollout.options import ReleaseOptions
    from sparsepack.rollout.run import release

    _, pkg = package_factory("bert-bi-relu")
    group, doc_id = "t-eval-deployed", None
    try:
        report = release(str(pkg), conn(node_3x), ReleaseOptions(group=group, smoke=False, progress=False, timeout=120))
        assert report["passed"], report.get("error")
        doc_id = report["model_ids"]["document"]
        code = main(
            ["eval", str(pkg), f"deployed:{doc_id}", "--url", node_3x, "--documents", "60", "--num-queries", "20"]
        )
        out = json.loads(capsys.readouterr().out)
        assert code == 0 and out["candidate"] == f"deployed:{doc_id}"
        assert out["ndcg_at_10"] >= 0.999 and out["recall_at_100"] >= 0.999 and out["queries_scored"] > 0
    finally:
        if doc_id:
            models.delete(cluster_for(node_3x), doc_id)
        cleanup_group(node_3x, group)
