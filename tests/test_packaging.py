import hashlib
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch
from conftest import FIXTURE_SPECS

from sparsepack.contract.package_dir import load_package, verify_package_files
from sparsepack.errors import ParityError, SparsepackError
from sparsepack.packaging import opcheck
from sparsepack.packaging.package import package
from sparsepack.packaging.parity import DjlStyleTokenizer, emulate_sparse_tokenize
from sparsepack.packaging.wrapper import SparseDocumentEncoder, splade_activation

QUIET = {"log": lambda m: None}


@pytest.mark.parametrize("name", list(FIXTURE_SPECS))
def test_every_fixture_packages_with_parity(package_factory, name):
    manifest, out = package_factory(name)
    spec = FIXTURE_SPECS[name]
    assert manifest["mode"] == spec.mode
    assert manifest["activation"] == spec.activation
    assert manifest["max_length"] == spec.max_length
    doc = manifest["parity"]["document"]
    assert doc["passed"] and doc["identical_token_sets"]
    assert doc["max_abs_diff"] <= 1e-5
    assert set(doc["by_batch_size"]) >= {"batch_1", "batch_3"}
    assert manifest["parity"]["query"]["passed"]
    assert manifest["compatible_opensearch"] == ["2.x", "3.x"]
    assert "aten::scaled_dot_product_attention" not in manifest["operators"]
    roles = {a["role"]: a for a in manifest["artifacts"]}
    assert roles["document"]["function_name"] == "SPARSE_ENCODING"
    if spec.mode == "inference-free":
        assert roles["query"]["function_name"] == "SPARSE_TOKENIZE"
    else:
        assert set(roles) == {"document"}
    for art in manifest["artifacts"]:
        path = out / art["file"]
        assert hashlib.sha256(path.read_bytes()).hexdigest() == art["sha256"]
        assert path.stat().st_size == art["size_bytes"]
        assert (out / art["bodies"]["register-meta"]).exists()
    assert set(manifest["libraries"]) == {"torch", "transformers", "sentence-transformers", "tokenizers"}
    assert (out / "README.md").read_text().startswith(f"# {manifest['name']}")


def test_document_zip_layout_and_tokenizer_block(package_factory):
    manifest, out = package_factory("bert-if-log1p")
    doc = next(a for a in manifest["artifacts"] if a["role"] == "document")
    with zipfile.ZipFile(out / doc["file"]) as zf:
        names = sorted(zf.namelist())
        assert len([n for n in names if n.endswith(".pt")]) == 1
        assert "tokenizer.json" in names and "LICENSE" in names
        assert all("/" not in n for n in names)
        assert all(i.date_time == (1980, 1, 1, 0, 0, 0) for i in zf.infolist())
        tok = json.loads(zf.read("tokenizer.json"))
    assert tok["truncation"] == {"direction": "Right", "max_length": 64, "strategy": "LongestFirst", "stride": 0}
    assert tok["padding"] is None


def test_query_zip_has_idf_for_every_token(package_factory, model_factory):
    manifest, out = package_factory("distil-if-relu")
    query = next(a for a in manifest["artifacts"] if a["role"] == "query")
    with zipfile.ZipFile(out / query["file"]) as zf:
        assert sorted(zf.namelist()) == ["LICENSE", "idf.json", "tokenizer.json"]
        idf = json.loads(zf.read("idf.json"))
        tok = json.loads(zf.read("tokenizer.json"))
    vocab = tok["model"]["vocab"]
    specials = {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"}
    assert set(idf) == set(vocab) - specials  # full vocabulary, so ML Commons' default 1.0 never applies
    assert emulate_sparse_tokenize(tok, idf, "rain rain") == {"rain": idf["rain"]}  # de-duplicated, no specials


def test_artifact_runs_like_ml_commons_dict_input(package_factory):
    manifest, out = package_factory("bert-bi-relu")
    doc = next(a for a in manifest["artifacts"] if a["role"] == "document")
    with zipfile.ZipFile(out / doc["file"]) as zf:
        pt = next(n for n in zf.namelist() if n.endswith(".pt"))
        (out / "x.pt").write_bytes(zf.read(pt))
        tok = DjlStyleTokenizer(json.loads(zf.read("tokenizer.json")))
    module = torch.jit.load(str(out / "x.pt"))
    (out / "x.pt").unlink()
    result = module(tok.batch(["hello world"]))
    assert list(result) == ["output"]
    out_t = result["output"]
    assert out_t.dtype == torch.float32 and out_t.shape == (1, manifest["vocab_size"])
    assert float(out_t.min()) >= 0.0
    assert float(out_t[0, manifest["special_token_ids"]].abs().sum()) == 0.0


def test_packaging_twice_gives_identical_bytes(model_factory, tmp_path):
    m1 = package(str(model_factory("distil-bi-log1p")), tmp_path / "a", **QUIET)
    m2 = package(str(model_factory("distil-bi-log1p")), tmp_path / "b", **QUIET)
    for a1, a2 in zip(m1["artifacts"], m2["artifacts"]):
        assert (tmp_path / "a" / a1["file"]).read_bytes() == (tmp_path / "b" / a2["file"]).read_bytes()
    assert (tmp_path / "a" / "manifest.json").read_bytes() == (tmp_path / "b" / "manifest.json").read_bytes()


def test_max_length_override_truncates_and_keeps_parity(model_factory, tmp_path):
    manifest = package(str(model_factory("bert-if-log1p")), tmp_path / "p", max_length=16, **QUIET)
    assert manifest["max_length"] == 16
    assert manifest["parity"]["document"]["passed"]
    with zipfile.ZipFile(tmp_path / "p" / manifest["artifacts"][0]["file"]) as zf:
        assert json.loads(zf.read("tokenizer.json"))["truncation"]["max_length"] == 16


def test_saved_truncation_state_is_not_copied(model_factory, tmp_path):
    """A tokenizer.json saved with a short truncation must not leak into the package."""
    import shutil

    src = tmp_path / "model"
    shutil.copytree(model_factory("bert-bi-relu"), src)
    for tj in src.rglob("tokenizer.json"):
        data = json.loads(tj.read_text())
        data["truncation"] = {"direction": "Right", "max_length": 7, "strategy": "LongestFirst", "stride": 0}
        tj.write_text(json.dumps(data))
    manifest = package(str(src), tmp_path / "p", **QUIET)
    with zipfile.ZipFile(tmp_path / "p" / manifest["artifacts"][0]["file"]) as zf:
        assert json.loads(zf.read("tokenizer.json"))["truncation"]["max_length"] == 64


def test_prune_ratio_is_recorded_and_prunes(model_factory, tmp_path):
    from sparsepack.registry.local_package import LocalPackage
    from sparsepack.registry.smoke_corpus import CORPUS

    manifest = package(str(model_factory("bert-bi-relu")), tmp_path / "p", prune_ratio=0.5, **QUIET)
    assert manifest["pruning"] == {"enabled": True, "type": "max_ratio", "ratio": 0.5}
    unpruned = package(str(model_factory("bert-bi-relu")), tmp_path / "q", **QUIET)
    assert unpruned["pruning"] == {"enabled": False}
    # The artifacts themselves: the pruned one keeps exactly the unpruned output's tokens of weight >= 0.5 x max.
    pruned_out = LocalPackage(manifest, tmp_path / "p").encode_documents(CORPUS)
    full_out = LocalPackage(unpruned, tmp_path / "q").encode_documents(CORPUS)
    for pruned, full in zip(pruned_out, full_out):
        kept = {t for t, w in full.items() if w >= 0.5 * max(full.values())}
        assert set(pruned) == kept and len(kept) < len(full), (sorted(pruned), len(full))
        assert all(abs(pruned[t] - full[t]) <= 1e-5 for t in kept)


@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_a_pruned_package_is_proven_against_the_pruned_reference(model_factory, tmp_path, fmt):
    """Pruning happens inside the graph, so the proof prunes encode_document (and, for a bi-encoder's query side,
    encode_query) the same way and holds the artifact to the usual 1e-5."""
    manifest = package(
        str(model_factory("bert-bi-relu")), tmp_path / "p", prune_ratio=0.3, artifact_format=fmt, **QUIET
    )
    doc, query = manifest["parity"]["document"], manifest["parity"]["query"]
    assert doc["reference"] == "SparseEncoder.encode_document pruned at max x 0.3"
    assert query["reference"] == "SparseEncoder.encode_query pruned at max x 0.3"
    for proof in (doc, query):
        assert proof["passed"] and proof["identical_token_sets"] and proof["max_abs_diff"] <= 1e-5


def test_a_pruned_artifact_that_misses_the_reference_is_refused(model_factory, tmp_path, monkeypatch):
    """Fault injection: a reference that does not prune stands for an artifact that prunes wrongly. Before, a pruned
    package skipped the parity requirement and was written anyway."""
    from sparsepack.errors import ParityError
    from sparsepack.packaging import parity

    monkeypatch.setattr(parity, "prune_reference", lambda want, ratio, tolerance: (want, None))
    with pytest.raises(ParityError, match="document parity failed"):
        package(str(model_factory("bert-bi-relu")), tmp_path / "p", prune_ratio=0.3, **QUIET)
    assert not (tmp_path / "p").exists()


def test_pruned_comparison_leaves_out_only_weights_at_the_threshold():
    """A weight within float error of max x ratio may be kept by the artifact and dropped by the reference (or the
    reverse): such a weight is left out, any other disagreement still fails."""
    from sparsepack.packaging.parity import compare_vectors, prune_reference

    reference = torch.tensor([[2.0, 0.6 + 4e-6, 0.9, 0.5]])  # threshold 2.0 x 0.3 = 0.6
    want, boundary = prune_reference(reference, 0.3, 1e-5)
    assert torch.equal(want, torch.tensor([[2.0, 0.6 + 4e-6, 0.9, 0.0]]))
    assert boundary.tolist() == [[False, True, False, False]]
    dropped_at_the_line = torch.tensor([[2.0 + 1e-6, 0.0, 0.9, 0.0]])
    assert not compare_vectors(dropped_at_the_line, want, 1e-5)["passed"]
    assert compare_vectors(dropped_at_the_line, want, 1e-5, boundary)["passed"]
    dropped_above_it = torch.tensor([[2.0, 0.6 + 4e-6, 0.0, 0.0]])
    kept_below_it = torch.tensor([[2.0, 0.6 + 4e-6, 0.9, 0.5]])
    assert not compare_vectors(dropped_above_it, want, 1e-5, boundary)["passed"]
    assert not compare_vectors(kept_below_it, want, 1e-5, boundary)["passed"]
    assert prune_reference(reference, 0.0, 1e-5) == (reference, None)


def test_activation_shortcut_matches_splade_pooling():
    """Max-pooling logits first, then activating, equals activating every position first."""
    torch.manual_seed(0)
    logits = torch.randn(3, 7, 50)
    mask = torch.ones(3, 7)
    mask[1, 5:] = 0
    for act in ("relu", "log1p_relu"):
        slow = splade_activation(logits * mask.unsqueeze(-1), act).amax(dim=1)
        fast = splade_activation((logits * mask.unsqueeze(-1)).amax(dim=1), act)
        assert torch.equal(slow, fast)


def test_sum_pooling_is_supported():
    class FakeMLM(torch.nn.Module):
        def forward(self, input_ids, attention_mask, return_dict=False):
            return (torch.nn.functional.one_hot(input_ids, 10).float() * 2.0,)

    enc = SparseDocumentEncoder(FakeMLM(), "relu", "sum", special_ids=[0], vocab_size=10)
    out = enc({"input_ids": torch.tensor([[0, 3, 3, 4]]), "attention_mask": torch.ones(1, 4, dtype=torch.long)})[
        "output"
    ]
    expected = torch.log1p(torch.tensor(2.0))
    assert torch.allclose(out[0, 3], 2 * expected) and torch.allclose(out[0, 4], expected) and out[0, 0] == 0


def test_op_check_names_sdpa_for_libtorch_1_13():
    assert opcheck.missing_ops({"aten::scaled_dot_product_attention", "aten::linear"}, "1.13.1") == [
        "aten::scaled_dot_product_attention"
    ]
    report = opcheck.compatibility({"aten::scaled_dot_product_attention"})
    assert report["2.x"]["compatible"] is False and report["3.x"]["compatible"] is True


def test_package_refuses_graph_with_op_missing_on_target(model_factory, tmp_path, monkeypatch):
    from sparsepack.packaging import exporter

    real = exporter.TorchScriptExporter.operators
    monkeypatch.setattr(
        exporter.TorchScriptExporter,
        "operators",
        lambda self, path: real(self, path) | {"aten::scaled_dot_product_attention"},
    )
    with pytest.raises(SparsepackError, match=r"aten::scaled_dot_product_attention.*libtorch 1\.13\.1"):
        package(str(model_factory("bert-bi-relu")), tmp_path / "p", **QUIET)
    assert not (tmp_path / "p").exists() and list(tmp_path.iterdir()) == []
    manifest = package(str(model_factory("bert-bi-relu")), tmp_path / "p3", targets=("3.x",), **QUIET)
    assert manifest["compatible_opensearch"] == ["3.x"]


def test_parity_failure_leaves_nothing_behind(model_factory, tmp_path, monkeypatch):
    """Fault injection: a tolerance no float can meet makes the proof fail; nothing may be left on disk."""
    from sparsepack.packaging import parity

    real = parity.validate_document
    monkeypatch.setattr(parity, "validate_document", lambda *a, **k: real(*a, **{**k, "tolerance": -1.0}))
    with pytest.raises(ParityError, match="document parity failed"):
        package(str(model_factory("bert-bi-relu")), tmp_path / "p", **QUIET)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"max_length": 1024}, "exceeds 512"),
        ({"max_length": 100}, "exceeds the model's max_seq_length 64"),
        ({"prune_ratio": 1.5}, "outside"),
        ({"targets": ("4.x",)}, "unknown OpenSearch line"),
    ],
)
def test_bad_options_refused(model_factory, tmp_path, kwargs, message):
    with pytest.raises(SparsepackError, match=message):
        package(str(model_factory("bert-bi-relu")), tmp_path / "p", **kwargs, **QUIET)
    assert not (tmp_path / "p").exists()


def test_existing_output_needs_force(package_factory, model_factory, tmp_path):
    out = tmp_path / "p"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    with pytest.raises(SparsepackError, match="--force"):
        package(str(model_factory("bert-bi-relu")), out, **QUIET)
    assert (out / "keep.txt").exists()
    package(str(model_factory("bert-bi-relu")), out, force=True, **QUIET)
    assert not (out / "keep.txt").exists() and (out / "manifest.json").exists()


def test_dense_model_refused(tmp_path, model_factory):
    from sentence_transformers import SentenceTransformer, models

    backbone = model_factory("bert-bi-relu") / "_backbone"
    dense = SentenceTransformer(modules=[models.Transformer(str(backbone)), models.Pooling(32)], device="cpu")
    dense.save(str(tmp_path / "dense"))
    with pytest.raises(SparsepackError, match="supported"):
        package(str(tmp_path / "dense"), tmp_path / "p", **QUIET)


def test_sparse_autoencoder_refused(tmp_path, model_factory):
    from sparsepack._st_compat import sparse_encoder_class, sparse_module

    backbone = model_factory("bert-bi-relu") / "_backbone"
    Transformer = sparse_module("Transformer")
    from sentence_transformers import models as st_models

    enc = sparse_encoder_class()(
        modules=[
            Transformer(str(backbone)),
            st_models.Pooling(32),
            sparse_module("SparseAutoEncoder")(input_dim=32, hidden_dim=64, k=8),
        ],
        device="cpu",
    )
    enc.save(str(tmp_path / "csr"))
    with pytest.raises(SparsepackError, match="SparseAutoEncoder"):
        package(str(tmp_path / "csr"), tmp_path / "p", **QUIET)


def test_model_without_mlm_head_refused(tmp_path, model_factory):
    from sparsepack._st_compat import sparse_encoder_class, sparse_module

    backbone = model_factory("bert-bi-relu") / "_backbone"
    enc = sparse_encoder_class()(
        modules=[sparse_module("Transformer")(str(backbone)), sparse_module("SpladePooling")()], device="cpu"
    )
    enc.save(str(tmp_path / "nohead"))
    with pytest.raises(SparsepackError, match="masked-LM head"):
        package(str(tmp_path / "nohead"), tmp_path / "p", **QUIET)


def test_unknown_model_refused_offline(tmp_path):
    with pytest.raises(SparsepackError, match="cannot load"):
        package("opensearch-project/does-not-exist-here", tmp_path / "p", **QUIET)


def test_manifest_loading_and_tamper_detection(package_factory, tmp_path):
    import shutil

    manifest, out = package_factory("bert-bi-relu")
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    m = load_package(copy)
    verify_package_files(m)
    zip_path = m.path_of(m.artifacts[0])
    zip_path.write_bytes(zip_path.read_bytes() + b"tampered")
    with pytest.raises(SparsepackError, match="modified"):
        verify_package_files(m)
    with pytest.raises(SparsepackError, match="no manifest.json"):
        load_package(tmp_path / "nowhere")


def test_cli_package_json_to_stdout_progress_to_stderr(model_factory, tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "sparsepack.cli",
            "package",
            str(model_factory("distil-if-relu")),
            "-o",
            str(tmp_path / "p"),
            "--json",
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads(proc.stdout)
    assert manifest["mode"] == "inference-free"
    assert "tracing the document encoder" in proc.stderr


def test_cli_bad_input_is_one_line_and_nonzero(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "sparsepack.cli", "package", str(tmp_path / "missing"), "-o", str(tmp_path / "p")],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    lines = [l for l in proc.stderr.splitlines() if l.startswith("sparsepack: error")]
    assert len(lines) == 1 and "no model at" in lines[0]
    assert not (tmp_path / "p").exists()


def _custom_code_model(root: Path) -> Path:
    """A bi-encoder whose masked LM is custom code (auto_map), in a folder whose name has a '-', as hub repos do."""
    from sparsepack.demo import DemoSpec, build_demo_model

    out = build_demo_model(root / "custom-code-model", DemoSpec(mode="bi-encoder", seed=9))
    for folder in [out, *out.iterdir()]:
        cfg_path = folder / "config.json"
        if not (folder.is_dir() and cfg_path.exists()):
            continue
        cfg = json.loads(cfg_path.read_text())
        if "model_type" not in cfg:
            continue
        cfg.update(
            model_type="custom-bert",
            architectures=["CustomBertForMaskedLM"],
            auto_map={
                "AutoConfig": "custom_bert.CustomBertConfig",
                "AutoModelForMaskedLM": "custom_bert.CustomBertForMaskedLM",
            },
        )
        cfg_path.write_text(json.dumps(cfg))
        (folder / "custom_bert.py").write_text(
            "from transformers import BertConfig, BertForMaskedLM\n"
            "class CustomBertConfig(BertConfig):\n    model_type = 'custom-bert'\n"
            "class CustomBertForMaskedLM(BertForMaskedLM):\n    config_class = CustomBertConfig\n"
        )
    return out


def test_custom_code_needs_the_flag_and_traces_loadably(tmp_path):
    model = _custom_code_model(tmp_path)
    with pytest.raises(SparsepackError, match="--trust-remote-code"):
        package(str(model), tmp_path / "p", **QUIET)
    manifest = package(str(model), tmp_path / "p", trust_remote_code=True, **QUIET)
    assert manifest["parity"]["document"]["passed"]
    with zipfile.ZipFile(tmp_path / "p" / manifest["artifacts"][0]["file"]) as zf:
        pt = next(n for n in zf.namelist() if n.endswith(".pt"))
        (tmp_path / "m.pt").write_bytes(zf.read(pt))
    with zipfile.ZipFile(tmp_path / "m.pt") as inner:
        names = " ".join(inner.namelist())
    assert "transformers_modules" in names and "-" not in names.split("transformers_modules", 1)[1].split()[0]
    torch.jit.load(str(tmp_path / "m.pt"))  # the reason for sanitising: this used to fail to parse
