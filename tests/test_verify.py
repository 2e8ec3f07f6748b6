"""`sparsepack verify`: a package re-proven from its saved zips against its source model, on this machine's devices,
as the admin of the node that will run it does (the CUDA case is in test_gpu.py)."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile

import pytest


def _verify(*args, timeout=300):
    return subprocess.run(
        [sys.executable, "-m", "sparsepack.cli", "verify", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_package_verifies_against_its_model_in_a_fresh_process(package_factory, model_factory):
    manifest, pkg = package_factory("distil-bi-log1p")
    proc = _verify(pkg, "--model", model_factory("distil-bi-log1p"), "--devices", "cpu", "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["passed"] and report["devices"] == ["cpu"]
    (art,) = report["artifacts"]
    assert art["format"] == "torchscript" and art["device_portable"] and art["max_abs_diff"] <= 1e-5
    assert set(art["by_device"]["cpu"]["by_batch_size"]) == set(manifest["parity"]["document"]["by_batch_size"])


def test_another_model_of_the_same_shape_fails_with_figures_and_exit_3(package_factory, tmp_path):
    from dataclasses import replace

    from conftest import FIXTURE_SPECS

    from sparsepack.demo import build_demo_model

    _, pkg = package_factory("bert-bi-relu")
    other = build_demo_model(tmp_path / "retrained", replace(FIXTURE_SPECS["bert-bi-relu"], seed=99))  # other weights
    proc = _verify(pkg, "--model", other, "--json")
    assert proc.returncode == 3
    assert "fails on cpu" in proc.stderr and "max |d|" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    report = json.loads(proc.stdout)  # the figures still go out for CI
    assert not report["passed"] and report["artifacts"][0]["failed_on"] == "cpu"


def test_a_model_of_another_vocabulary_or_mode_is_named_not_compared(package_factory, model_factory, tmp_path):
    from sparsepack.demo import DemoSpec, build_demo_model

    _, pkg = package_factory("bert-if-log1p")
    wider = build_demo_model(tmp_path / "wide", DemoSpec(vocab_extra=500, seed=11))
    proc = _verify(pkg, "--model", wider)
    assert proc.returncode == 2 and "has vocab_size" in proc.stderr and "not the package's source model" in proc.stderr
    proc = _verify(pkg, "--model", model_factory("bert-bi-relu"))  # same vocabulary, a bi-encoder
    assert proc.returncode == 2 and "has mode bi-encoder, the package inference-free" in proc.stderr


def test_a_bi_encoder_package_is_also_held_to_encode_query(package_factory, model_factory):
    _, pkg = package_factory("distil-bi-log1p")
    proc = _verify(pkg, "--model", model_factory("distil-bi-log1p"), "--json")
    query = json.loads(proc.stdout)["artifacts"][0]["query"]
    assert proc.returncode == 0 and query["passed"] and query["identical_token_sets"] and query["max_abs_diff"] <= 1e-5


def test_a_tampered_zip_is_refused_before_any_model_is_loaded(package_factory, model_factory, tmp_path):
    import shutil

    manifest, pkg = package_factory("bert-bi-relu")
    copy = tmp_path / "pkg"
    shutil.copytree(pkg, copy)
    doc = copy / manifest["artifacts"][0]["file"]
    with zipfile.ZipFile(doc, "a") as zf:
        zf.writestr("extra.txt", "x")
    proc = _verify(copy, "--model", model_factory("bert-bi-relu"))
    assert proc.returncode == 2 and doc.name in proc.stderr and ("sha256" in proc.stderr or "bytes" in proc.stderr)


@pytest.mark.parametrize(
    "args, message",
    [
        (["/no/such/pkg"], "not a sparsepack package (no such path)"),
        (["{model}"], "not a sparsepack package (no manifest.json there)"),
        (["{pkg}", "--devices", "tpu"], "--devices 'tpu': use auto, cpu or cpu,cuda"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args, message, package_factory, model_factory):
    _, pkg = package_factory("bert-bi-relu")
    args = [a.format(pkg=pkg, model=model_factory("bert-bi-relu")) for a in args]
    proc = _verify(*args)
    assert proc.returncode == 2 and message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_cuda_asked_where_none_is_visible_exits_2(package_factory):
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA is visible here; test_gpu.py verifies on it")
    _, pkg = package_factory("bert-bi-relu")
    proc = _verify(pkg, "--devices", "cpu,cuda")
    assert proc.returncode == 2 and "--devices cuda: no CUDA device is visible" in proc.stderr


def test_a_pruned_package_is_held_to_the_pruned_reference(model_factory, tmp_path):
    """Pruning is inside the graph: verify prunes the reference the same way and keeps the usual tolerance, so a
    pruned artifact is checked, not waved through."""
    from sparsepack.packaging.package import package

    model = model_factory("bert-bi-relu")
    package(str(model), tmp_path / "pkg", prune_ratio=0.2, log=lambda m: None)
    proc = _verify(tmp_path / "pkg", "--model", model, "--json")
    assert proc.returncode == 0, proc.stderr
    art = json.loads(proc.stdout)["artifacts"][0]
    assert art["passed"] and art["max_abs_diff"] <= 1e-5 and art["by_device"]["cpu"]["identical_token_sets"]
