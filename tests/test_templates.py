import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sparsepack.errors import SparsepackError
from sparsepack.templates import TEMPLATES, list_templates, render
from sparsepack.templates.versions import FEATURES, parse_version

VERSIONS = ["2.11", "2.15", "2.19", "3.0", "3.3", "3.8"]
GOLDEN = Path(__file__).parent / "golden"

# A fixed manifest: golden files must not change when the fixture models do.
MANIFEST = {
    "name": "demo",
    "mode": "inference-free",
    "vocab_size": 225,
    "compatible_opensearch": ["2.x", "3.x"],
    "artifacts": [
        {
            "role": "document",
            "file": "demo-sparse-encoding.zip",
            "function_name": "SPARSE_ENCODING",
            "model_format": "TORCH_SCRIPT",
            "sha256": "a" * 64,
            "size_bytes": 25_000_001,
        },
        {
            "role": "query",
            "file": "demo-sparse-tokenize.zip",
            "function_name": "SPARSE_TOKENIZE",
            "model_format": "TORCH_SCRIPT",
            "sha256": "b" * 64,
            "size_bytes": 5024,
        },
    ],
}


def minimal_values(name: str, version: str) -> dict:
    return {
        "ingest-pipeline": {"model_id": "M"},
        "search-pipeline": {"model_id": "M", "two_phase": parse_version(version) >= (2, 15)},
        "query": {"model_id": "M", "query_text": "q"},
        "register-url": {"url": "https://x/model.zip"},
    }.get(name, {})


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("name", list(TEMPLATES))
def test_every_template_renders_valid_json_for_every_version(name, version):
    if name == "search-pipeline" and parse_version(version) < (2, 13):
        with pytest.raises(SparsepackError, match="neural_query_enricher search processor needs OpenSearch 2.13"):
            render(name, MANIFEST, version, **minimal_values(name, version))
        return
    body = render(name, MANIFEST, version, **minimal_values(name, version))
    assert isinstance(body, dict) and body


@pytest.mark.parametrize("version", VERSIONS)
def test_register_meta_fields(version):
    body = render("register-meta", MANIFEST, version)
    assert body["function_name"] == "SPARSE_ENCODING"
    assert body["model_content_hash_value"] == "a" * 64
    assert body["model_content_size_in_bytes"] == 25_000_001
    assert body["total_chunks"] == 3  # 10,000,000-byte chunks
    assert body["model_format"] == "TORCH_SCRIPT"
    assert "model_config" not in body
    query = render("register-meta", MANIFEST, version, role="query", model_group_id="G")
    assert query["function_name"] == "SPARSE_TOKENIZE" and query["model_group_id"] == "G" and query["total_chunks"] == 1


def test_model_config_stub_only_for_2_11():
    body = render("register-meta", MANIFEST, "2.11.1", model_config_stub=True)
    assert body["model_config"]["framework_type"] == "huggingface_transformers"
    with pytest.raises(SparsepackError, match="only up to OpenSearch 2.11"):
        render("register-meta", MANIFEST, "2.15", model_config_stub=True)


@pytest.mark.parametrize("version", VERSIONS)
def test_ingest_pipeline_gated_fields(version):
    v = parse_version(version)
    values = {"model_id": "M"}
    if v >= (2, 16):
        values["batch_size"] = 8
    if v >= (2, 19):
        values.update(prune_type="max_ratio", prune_ratio=0.1)
    if v >= (3, 0):
        values["skip_existing"] = True
    proc = render("ingest-pipeline", MANIFEST, version, **values)["processors"][-1]["sparse_encoding"]
    assert proc["model_id"] == "M" and proc["field_map"] == {"text": "text_sparse"}
    assert ("batch_size" in proc) == (v >= (2, 16))
    assert ("prune_type" in proc) == (v >= (2, 19))
    assert ("skip_existing" in proc) == (v >= (3, 0))


@pytest.mark.parametrize(
    "option, value, version, since",
    [
        ("batch_size", 4, "2.15", "2.16"),
        ("prune_type", "max_ratio", "2.18", "2.19"),
        ("skip_existing", True, "2.19", "3.0"),
        ("chunking", True, "2.11", "2.13"),
    ],
)
def test_ingest_options_refused_before_their_version(option, value, version, since):
    with pytest.raises(SparsepackError, match=f"needs OpenSearch {since}\\+"):
        render("ingest-pipeline", MANIFEST, version, model_id="M", **{option: value})


@pytest.mark.parametrize("version", VERSIONS)
def test_search_pipeline(version):
    v = parse_version(version)
    if v < (2, 13):
        with pytest.raises(SparsepackError, match="2.13"):
            render("search-pipeline", MANIFEST, version, model_id="M", two_phase=False)
        return
    if v < (2, 15):
        with pytest.raises(SparsepackError, match="2.15"):
            render("search-pipeline", MANIFEST, version, model_id="M")
        body = render("search-pipeline", MANIFEST, version, model_id="M", two_phase=False)
        assert [list(p) for p in body["request_processors"]] == [["neural_query_enricher"]]
        return
    body = render("search-pipeline", MANIFEST, version, model_id="M", expansion_rate=4.0)
    enricher, two_phase = body["request_processors"]
    assert enricher["neural_query_enricher"]["default_model_id"] == "M"
    params = two_phase["neural_sparse_two_phase_processor"]["two_phase_parameter"]
    assert params == {"prune_ratio": 0.4, "expansion_rate": 4.0, "max_window_size": 10000}
    if v >= (2, 19):
        typed = render("search-pipeline", MANIFEST, version, model_id="M", prune_type="max_ratio")
        assert (
            typed["request_processors"][1]["neural_sparse_two_phase_processor"]["two_phase_parameter"]["prune_type"]
            == "max_ratio"
        )
    else:
        with pytest.raises(SparsepackError, match="2.19"):
            render("search-pipeline", MANIFEST, version, model_id="M", prune_type="max_ratio")


@pytest.mark.parametrize("version", VERSIONS)
def test_index_mapping(version):
    body = render("index-mapping", MANIFEST, version, ingest_pipeline="P")
    assert body["mappings"]["properties"]["text_sparse"] == {"type": "rank_features"}
    assert body["settings"]["index"]["default_pipeline"] == "P"
    assert "sparse" not in body["settings"]["index"]
    if parse_version(version) >= (3, 3):
        sv = render("index-mapping", MANIFEST, version, field_type="sparse_vector")
        assert sv["settings"]["index"]["sparse"] is True
        assert sv["mappings"]["properties"]["text_sparse"]["method"]["name"] == "seismic"
    else:
        with pytest.raises(SparsepackError, match="3.3"):
            render("index-mapping", MANIFEST, version, field_type="sparse_vector")


def test_sparse_vector_refuses_large_vocabularies():
    big = {**MANIFEST, "vocab_size": 105879}
    with pytest.raises(SparsepackError, match="32768"):
        render("index-mapping", big, "3.3", field_type="sparse_vector")


@pytest.mark.parametrize("version", VERSIONS)
def test_query_variants(version):
    v = parse_version(version)
    body = render("query", MANIFEST, version, model_id="M", query_text="rain")
    assert body["query"]["neural_sparse"]["text_sparse"] == {"query_text": "rain", "model_id": "M"}
    tokens = render("query", MANIFEST, version, query_tokens={"rain": 1.5}) if v >= (2, 14) else None
    if tokens:
        assert tokens["query"]["neural_sparse"]["text_sparse"] == {"query_tokens": {"rain": 1.5}}
    if v >= (3, 1):
        bert_vocab = {**MANIFEST, "vocab_size": 30522}
        ana = render("query", bert_vocab, version, analyzer="bert-uncased", query_text="rain")
        assert ana["query"]["neural_sparse"]["text_sparse"]["analyzer"] == "bert-uncased"
        with pytest.raises(SparsepackError, match="own 30522-token vocabulary, the model has 225"):
            render("query", MANIFEST, version, analyzer="bert-uncased", query_text="rain")
    else:
        with pytest.raises(SparsepackError, match="3.1"):
            render("query", MANIFEST, version, analyzer="bert-uncased", query_text="rain")


def test_query_refuses_both_model_and_analyzer():
    with pytest.raises(SparsepackError, match="one of"):
        render("query", MANIFEST, "3.3", analyzer="bert-uncased", model_id="M", query_text="x")


@pytest.mark.parametrize("version", VERSIONS)
def test_cluster_settings(version):
    body = render("cluster-settings", MANIFEST, version)["persistent"]
    assert body["plugins.ml_commons.allow_registering_model_via_local_file"] is True
    assert ("plugins.ml_commons.disk_free_space_threshold" in body) == (parse_version(version) >= (2, 16))


def test_incompatible_manifest_refused_for_register_bodies():
    only3 = {**MANIFEST, "compatible_opensearch": ["3.x"]}
    with pytest.raises(SparsepackError, match="does not load on OpenSearch 2.x"):
        render("register-meta", only3, "2.19")
    assert render("register-meta", only3, "3.0")


@pytest.mark.parametrize("bad", ["2.10", "1.3", "4.0", "latest"])
def test_bad_versions_refused(bad):
    with pytest.raises(SparsepackError):
        render("model-group", MANIFEST, bad)


def test_feature_table_is_ordered_and_complete():
    from sparsepack.templates.versions import NEWEST_KNOWN, OLDEST, features_for

    assert FEATURES["two_phase"].since == (2, 15)
    assert FEATURES["sparse_vector"].since == (3, 3)
    since = [f.since for f in FEATURES.values()]
    assert since == sorted(since), "the table lists features oldest first"
    for name, f in FEATURES.items():
        assert OLDEST <= f.since <= NEWEST_KNOWN and f.what and f.variants, name
        assert f.until is None or f.since <= f.until, name
    # complete: every version of the range answers for every feature, and a feature is on exactly from its `since`
    # to its `until`
    for version in [(2, minor) for minor in range(11, 20)] + [(3, minor) for minor in range(0, NEWEST_KNOWN[1] + 1)]:
        allowed = features_for(version)
        assert set(allowed) == set(FEATURES), version
        for name, f in FEATURES.items():
            assert allowed[name] == (f.since <= version and (f.until is None or version <= f.until)), (name, version)


def test_unknown_template_and_missing_variable():
    with pytest.raises(SparsepackError, match="unknown template"):
        render("nope", MANIFEST, "3.0")
    with pytest.raises(SparsepackError, match="model_id"):
        render("ingest-pipeline", MANIFEST, "3.0")


def test_user_override_and_strict_undefined(tmp_path):
    (tmp_path / "model-group.json.j2").write_text('{"name": {{ group_name | tojson }}, "owner": {{ owner | tojson }}}')
    with pytest.raises(SparsepackError, match="owner"):
        render("model-group", MANIFEST, "3.0", template_dir=tmp_path)
    body = render("model-group", MANIFEST, "3.0", template_dir=tmp_path, owner="search-team")
    assert body == {"name": "demo-sparsepack", "owner": "search-team"}


def test_template_rendering_invalid_json_is_caught(tmp_path):
    (tmp_path / "model-group.json.j2").write_text('{"name": {{ group_name | tojson }},}')
    with pytest.raises(SparsepackError, match="invalid JSON"):
        render("model-group", MANIFEST, "3.0", template_dir=tmp_path)


@pytest.mark.parametrize(
    "name, version, values",
    [
        ("register-meta", "3.8", {"model_group_id": "G"}),
        ("ingest-pipeline", "3.8", {"model_id": "M", "batch_size": 8}),
        ("search-pipeline", "2.19", {"model_id": "M"}),
        ("index-mapping", "3.3", {"field_type": "sparse_vector"}),
        ("query", "2.11", {"model_id": "M", "query_text": "weather in ny"}),
    ],
)
def test_golden(name, version, values):
    body = render(name, MANIFEST, version, **values)
    golden = GOLDEN / f"{name}-{version}.json"
    if os.environ.get("SPARSEPACK_UPDATE_GOLDEN"):
        golden.write_text(json.dumps(body, indent=2) + "\n")
    assert body == json.loads(golden.read_text())


def test_list_names_every_template_with_variables():
    listed = {t["name"]: t for t in list_templates()}
    assert set(listed) == set(TEMPLATES)
    assert "model_id" in listed["ingest-pipeline"]["variables"]


def test_cli_render_list_and_set(tmp_path):
    from test_manifest import OLDEST

    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps({**OLDEST, **MANIFEST}))  # a whole manifest: the CLI refuses one lacking a key
    run = lambda *a: subprocess.run(
        [sys.executable, "-m", "sparsepack.cli", "render", *a], capture_output=True, text=True
    )
    listed = run("--list")
    assert listed.returncode == 0 and "register-meta" in listed.stdout
    out = tmp_path / "ingest.json"
    proc = run(
        "ingest-pipeline",
        "--manifest",
        str(manifest),
        "--opensearch-version",
        "3.0",
        "--set",
        "model_id=abc",
        "--set",
        "batch_size=4",
        "-o",
        str(out),
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(out.read_text())["processors"][0]["sparse_encoding"]["batch_size"] == 4
    refused = run("ingest-pipeline", "--opensearch-version", "2.15", "--set", "model_id=a", "--set", "batch_size=4")
    assert refused.returncode == 2 and "2.16" in refused.stderr and refused.stderr.count("\n") == 1


def test_sparse_vector_default_leaves_seismic_parameters_to_the_server():
    """n_postings=-1 used to be rendered and the node refused the index; unset parameters are now omitted."""
    field = render("index-mapping", MANIFEST, "3.6", field_type="sparse_vector")["mappings"]["properties"][
        "text_sparse"
    ]
    assert field == {"type": "sparse_vector", "method": {"name": "seismic", "parameters": {}}}
    given = render(
        "index-mapping",
        MANIFEST,
        "3.6",
        field_type="sparse_vector",
        n_postings=160,
        approximate_threshold=0,
        quantization_ceiling_ingest=3.0,
    )["mappings"]["properties"]["text_sparse"]["method"]["parameters"]
    assert given == {"n_postings": 160, "approximate_threshold": 0, "quantization_ceiling_ingest": 3.0}


def test_cli_notes_that_the_server_picks_n_postings(capsys):
    from sparsepack import cli

    assert cli.main(["render", "index-mapping", "--set", "field_type=sparse_vector"]) == 0
    out, err = capsys.readouterr()
    assert "n_postings" not in out and err.count("\n") == 1 and "n_postings is left to the server" in err
    assert cli.main(["render", "index-mapping", "--set", "field_type=sparse_vector", "--set", "n_postings=2000"]) == 0
    out, err = capsys.readouterr()
    assert '"n_postings": 2000' in out and err == ""
    assert cli.main(["render", "index-mapping"]) == 0
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize(
    "name, value, rule",
    [
        ("n_postings", -1, "a positive integer"),
        ("n_postings", 0, "a positive integer"),
        ("n_postings", 1.5, "a positive integer"),
        ("cluster_ratio", 1, r"in \(0, 1\)"),
        ("cluster_ratio", 0, r"in \(0, 1\)"),
        ("summary_prune_ratio", 0, r"in \(0, 1\]"),
        ("summary_prune_ratio", 1.01, r"in \(0, 1\]"),
        ("approximate_threshold", -1, "a non-negative integer"),
        ("approximate_threshold", "many", "a non-negative integer"),
        ("quantization_ceiling_ingest", 0, "a positive number"),
        ("quantization_ceiling_search", -2.0, "a positive number"),
    ],
)
def test_invalid_seismic_values_are_refused_with_the_servers_rule(name, value, rule):
    with pytest.raises(SparsepackError, match=f"{name}={value!r} is refused by the server: it must be {rule}; omit it"):
        render("index-mapping", MANIFEST, "3.6", field_type="sparse_vector", **{name: value})


@pytest.mark.parametrize(
    "name, value",
    [
        ("n_postings", 1),
        ("cluster_ratio", 0.999),
        ("summary_prune_ratio", 1),
        ("approximate_threshold", 0),
        ("quantization_ceiling_search", 0.5),
    ],
)
def test_boundary_seismic_values_the_server_accepts(name, value):
    params = render("index-mapping", MANIFEST, "3.6", field_type="sparse_vector", **{name: value})
    assert params["mappings"]["properties"]["text_sparse"]["method"]["parameters"] == {name: value}


def test_seismic_parameters_need_a_sparse_vector_field():
    with pytest.raises(SparsepackError, match="n_postings only apply to field_type=sparse_vector"):
        render("index-mapping", MANIFEST, "3.6", n_postings=100)


def test_chunked_sparse_vector_needs_3_4():
    with pytest.raises(SparsepackError, match="nested .chunked. sparse_vector fields needs OpenSearch 3.4"):
        render("index-mapping", MANIFEST, "3.3", field_type="sparse_vector", chunking=True)
    nested = render("index-mapping", MANIFEST, "3.4", field_type="sparse_vector", chunking=True)["mappings"][
        "properties"
    ]
    assert nested["text_sparse"]["type"] == "nested"
    assert nested["text_sparse"]["properties"]["sparse_encoding"]["type"] == "sparse_vector"


def test_query_follows_a_chunked_mapping():
    body = render("query", MANIFEST, "2.19", model_id="M", query_text="rain", chunking=True)
    assert body["query"] == {
        "nested": {
            "path": "text_sparse",
            "score_mode": "max",
            "query": {"neural_sparse": {"text_sparse.sparse_encoding": {"query_text": "rain", "model_id": "M"}}},
        }
    }
    summed = render("query", MANIFEST, "2.19", model_id="M", query_text="rain", chunking=True, score_mode="sum")
    assert summed["query"]["nested"]["score_mode"] == "sum"
    with pytest.raises(SparsepackError, match="score_mode 'best' is unknown"):
        render("query", MANIFEST, "2.19", model_id="M", query_text="rain", chunking=True, score_mode="best")
    with pytest.raises(SparsepackError, match="only score_mode=max"):
        render(
            "query",
            MANIFEST,
            "3.6",
            model_id="M",
            query_text="rain",
            chunking=True,
            field_type="sparse_vector",
            score_mode="sum",
        )


def test_method_parameters_only_for_sparse_vector():
    body = render(
        "query",
        MANIFEST,
        "3.6",
        model_id="M",
        query_text="rain",
        field_type="sparse_vector",
        method_parameters={"k": 10, "top_n": 5},
    )
    assert body["query"]["neural_sparse"]["text_sparse"]["method_parameters"] == {"k": 10, "top_n": 5}
    with pytest.raises(SparsepackError, match="method_parameters apply only to field_type=sparse_vector"):
        render("query", MANIFEST, "3.6", model_id="M", query_text="rain", method_parameters={"k": 10})
    with pytest.raises(SparsepackError, match="needs OpenSearch 3.3"):
        render("query", MANIFEST, "3.2", model_id="M", query_text="rain", method_parameters={"k": 10})


@pytest.mark.parametrize(
    "values, error",
    [
        ({"access_mode": "team"}, "access_mode 'team' is unknown"),
        ({"access_mode": "restricted"}, "restricted needs backend_roles"),
        ({"access_mode": "public", "backend_roles": ["a"]}, "restricted needs backend_roles"),
        ({"backend_roles": ["a"]}, "backend_roles need access_mode=restricted"),
    ],
)
def test_model_group_access_modes_checked(values, error):
    with pytest.raises(SparsepackError, match=error):
        render("model-group", MANIFEST, "3.6", group_name="g", **values)


def test_two_phase_parameters_checked():
    with pytest.raises(SparsepackError, match="top_k needs a positive integer"):
        render("search-pipeline", MANIFEST, "2.19", model_id="M", prune_type="top_k", two_phase_prune_ratio=0.5)
    with pytest.raises(SparsepackError, match="expansion_rate >= 1 and max_window_size >= 50"):
        render("search-pipeline", MANIFEST, "2.19", model_id="M", max_window_size=10)


def test_sparse_vector_query_tokens_are_ids():
    body = render("query", MANIFEST, "3.6", query_tokens={"2023": 1.5}, field_type="sparse_vector")
    assert body["query"]["neural_sparse"]["text_sparse"] == {"query_tokens": {"2023": 1.5}}
    with pytest.raises(SparsepackError, match="query_tokens keys must be ids"):
        render("query", MANIFEST, "3.6", query_tokens={"rain": 1.5}, field_type="sparse_vector")
