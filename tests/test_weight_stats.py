"""The output weights a package records, and the SEISMIC quantization ceilings fitted to them: the rule on given
figures, the record's defaults for older manifests, the rendered mapping, and what a 3.6 node keeps of it."""

import copy
import json
import math
import uuid

import pytest
import torch
from conftest import cluster_for

from sparsepack.contract.limits import CEILING_MARGIN, SEISMIC_DEFAULT_CEILINGS, fitted_ceiling
from sparsepack.contract.manifest import Manifest, WeightStats
from sparsepack.errors import SparsepackError
from sparsepack.packaging.model_card import model_card
from sparsepack.packaging.weight_stats import STATS_DOCUMENTS, STATS_QUERIES, weight_figures
from sparsepack.templates import render


def _figures(measured_on: str, top: float, share: float | None = None) -> dict:
    return {
        "measured_on": measured_on,
        "texts": 10,
        "weights": 100,
        "max": top,
        "p99_9": top,
        "p99": top / 2,
        "default_ceiling": 3.0,
        "above_default_ceiling": share,
    }


@pytest.mark.parametrize("top", [1e-4, 0.0437, 0.2302, 0.8734, 0.999, 2.5, 3.7, 12.0, 63.9])
def test_the_ceiling_sits_just_above_the_maximum_within_the_margin(top):
    ceiling = fitted_ceiling(top)
    assert top < ceiling, "no measured weight may be clipped"
    assert ceiling >= top * (1 + CEILING_MARGIN) - 1e-12  # the headroom for heavier texts is kept
    digits = 10 ** (math.floor(math.log10(top * (1 + CEILING_MARGIN))) - 1)
    assert ceiling <= top * (1 + CEILING_MARGIN) + digits + 1e-12  # ...and no more than one step of rounding above
    assert float(f"{ceiling:.2g}") == ceiling  # two significant digits


@pytest.mark.parametrize("top", [0.0, -1.0, float("nan"), float("inf")])
def test_no_ceiling_without_a_positive_finite_maximum(top):
    assert fitted_ceiling(top) is None


def test_stats_fit_each_side_to_its_largest_measured_set():
    stats = WeightStats.from_dict(
        {
            "documents": [_figures("battery + synthetic", 0.8), _figures("user corpus", 3.7, 0.02)],
            "queries": [_figures("battery + synthetic", 4.98)],
        }
    )
    assert stats.maximum("documents") == 3.7 and stats.maximum("queries") == 4.98
    assert stats.fitted_ceilings() == {
        "quantization_ceiling_ingest": fitted_ceiling(3.7),
        "quantization_ceiling_search": fitted_ceiling(4.98),
    }
    assert stats.clipped_by_default("documents") == 0.02 and stats.clipped_by_default("queries") is None
    assert stats.to_dict()["documents"][1]["measured_on"] == "user corpus"  # read back as written
    empty = WeightStats.from_dict({"documents": [], "queries": [_figures("battery", 0.0)]})
    assert empty.fitted_ceilings() == {}  # unmeasured or all-zero: the server's defaults stay


def test_a_malformed_record_is_refused_naming_the_key():
    with pytest.raises(SparsepackError, match="'max' must be number"):
        WeightStats.from_dict({"documents": [{**_figures("x", 1.0), "max": "big"}], "queries": []})


def test_figures_are_nearest_rank_percentiles_of_the_positive_weights():
    weights = torch.cat([torch.zeros(50), torch.arange(1, 1001, dtype=torch.float32) / 100])  # 0.01 .. 10.0
    figures = weight_figures(weights, "given", 7, "documents")
    assert figures["weights"] == 1000 and figures["texts"] == 7 and figures["measured_on"] == "given"
    assert (figures["max"], figures["p99_9"], figures["p99"]) == (10.0, 9.99, 9.9)
    assert figures["default_ceiling"] == SEISMIC_DEFAULT_CEILINGS["documents"] == 3.0
    assert figures["above_default_ceiling"] == 0.7  # 3.01 .. 10.0 are clipped at the default ceiling
    assert weight_figures(torch.zeros(3), "none", 1, "queries")["max"] == 0.0


def _manifest_with(stats: dict | None) -> dict:
    from test_templates import MANIFEST

    manifest = copy.deepcopy(MANIFEST)
    if stats is not None:
        manifest["weight_stats"] = stats
    return manifest


STATS = {"documents": [_figures("battery + synthetic", 0.2302)], "queries": [_figures("battery + synthetic", 4.98)]}


def _seismic_parameters(body: dict) -> dict:
    return body["mappings"]["properties"]["text_sparse"]["method"]["parameters"]


def test_sparse_vector_mapping_renders_the_fitted_ceilings_unless_set():
    fitted = _seismic_parameters(render("index-mapping", _manifest_with(STATS), "3.6", field_type="sparse_vector"))
    assert fitted == {"quantization_ceiling_ingest": 0.26, "quantization_ceiling_search": 5.5}
    explicit = render(
        "index-mapping", _manifest_with(STATS), "3.6", field_type="sparse_vector", quantization_ceiling_search=16.0
    )
    assert _seismic_parameters(explicit) == {"quantization_ceiling_ingest": 0.26, "quantization_ceiling_search": 16.0}
    nested = render("index-mapping", _manifest_with(STATS), "3.6", field_type="sparse_vector", chunking=True)
    leaf = nested["mappings"]["properties"]["text_sparse"]["properties"]["sparse_encoding"]
    assert leaf["method"]["parameters"] == fitted
    # without measurements (no manifest, or one older than them) the server's defaults apply: nothing is rendered
    for manifest in (None, _manifest_with(None)):
        assert _seismic_parameters(render("index-mapping", manifest, "3.6", field_type="sparse_vector")) == {}
    # rank_features has no ceilings: the figures must not leak into it
    plain = render("index-mapping", _manifest_with(STATS), "3.6")
    assert plain["mappings"]["properties"]["text_sparse"] == {"type": "rank_features"}


def test_a_package_records_its_weights_and_the_card_shows_the_clipping(package_factory):
    for name in ("bert-bi-sum", "bert-if-log1p"):
        written, root = package_factory(name)
        on_disk = json.loads((root / "manifest.json").read_text())
        stats = Manifest.from_dict(on_disk).weight_stats
        assert stats is not None and on_disk["weight_stats"] == written["weight_stats"]
        for side, least in (("documents", STATS_DOCUMENTS), ("queries", STATS_QUERIES)):
            (figures,) = getattr(stats, side)
            assert figures.texts > least and "proof battery" in figures.measured_on
            assert "synthetic corpus" in figures.measured_on
            assert 0 < figures.p99 <= figures.p99_9 <= figures.max
        fitted = stats.fitted_ceilings()
        assert fitted["quantization_ceiling_ingest"] > stats.maximum("documents")
        assert fitted["quantization_ceiling_search"] > stats.maximum("queries")
        card = (root / "README.md").read_text()
        assert f"**{fitted['quantization_ceiling_ingest']:g}**" in card and "above the server default" in card


def test_weights_above_the_default_ceiling_get_a_ceiling_above_them(tmp_path):
    """Sum pooling, logits x 10: document weights far above the server's 3.0, which would clip a share the card states."""
    from sparsepack.demo import DemoSpec, build_demo_model
    from sparsepack.packaging.package import package

    spec = DemoSpec(arch="bert", mode="inference-free", activation="relu", pooling="sum", logit_scale=10.0, seed=7)
    manifest = Manifest.from_dict(package(str(build_demo_model(tmp_path / "m", spec)), tmp_path / "p", log=print))
    stats = manifest.weight_stats
    assert stats.maximum("documents") > SEISMIC_DEFAULT_CEILINGS["documents"]
    clipped = stats.clipped_by_default("documents")
    assert clipped > 0
    ceiling = render("index-mapping", manifest, "3.6", field_type="sparse_vector")
    assert _seismic_parameters(ceiling)["quantization_ceiling_ingest"] > stats.maximum("documents")
    assert f"{clipped:.2%} above the server default 3 (clipped there)" in model_card(manifest)


def test_an_older_manifest_has_no_stats_and_renders_the_server_defaults():
    from test_manifest import OLDEST

    manifest = Manifest.from_dict(copy.deepcopy(OLDEST))
    assert manifest.weight_stats is None and "weight_stats" not in manifest.to_dict()
    assert "Output weights" not in model_card(manifest)


@pytest.mark.cluster
def test_the_node_keeps_the_rendered_ceilings(node_3x, package_factory):
    """PUT the rendered sparse_vector mapping on a 3.6 node, then read the ceilings back from GET _mapping."""
    manifest, _ = package_factory("bert-bi-relu")
    fitted = WeightStats.from_dict(manifest["weight_stats"]).fitted_ceilings()
    assert set(fitted) == {"quantization_ceiling_ingest", "quantization_ceiling_search"}
    cl = cluster_for(node_3x)
    index = f"t-ceilings-{uuid.uuid4().hex[:6]}"
    cl.request("PUT", f"/{index}", body=render("index-mapping", manifest, "3.6.0", field_type="sparse_vector"))
    try:
        field = cl.request("GET", f"/{index}/_mapping")[index]["mappings"]["properties"]["text_sparse"]
        assert field["type"] == "sparse_vector" and field["method"]["name"] == "seismic", field
        params = field["method"]["parameters"]
        assert {k: float(params[k]) for k in fitted} == fitted, params
    finally:
        cl.request("DELETE", f"/{index}")


def test_a_missing_stats_corpus_is_refused_before_any_work(tmp_path, capsys):
    from sparsepack.cli import main

    code = main(["package", str(tmp_path), "-o", str(tmp_path / "out"), "--stats-corpus", str(tmp_path / "no.jsonl")])
    assert code == 2 and "cannot read documents file" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_eval_reports_the_weights_on_the_corpus_it_ranked():
    from sparsepack.packaging.evaluation import Corpus, Encoder, evaluate

    weights = {"a": 4.0, "b": 0.5}
    enc = Encoder("fixed", lambda t: [dict(weights) for _ in t], lambda t: [{"a": 1.0} for _ in t])
    result = evaluate(enc, enc, Corpus("docs.jsonl", ["1", "2"], ["x", "y"], ["q"], ["x"]))
    docs = result["weight_stats"]["truth"]["documents"]
    assert docs["max"] == 4.0 and docs["weights"] == 4 and docs["above_default_ceiling"] == 0.5
    assert docs["measured_on"].startswith("docs.jsonl") and result["weight_stats"]["candidate"]["queries"]["max"] == 1.0
