"""The typed manifest: every manifest sparsepack writes (and the oldest it wrote) reads back unchanged; a manifest
lacking a key some command reads is refused at load, in one line, before anything uses it."""

import copy
import json
import subprocess
import sys

import pytest
from conftest import FIXTURE_SPECS

from sparsepack.contract.manifest import Manifest, persisted_keys
from sparsepack.contract.package_dir import load_package, verify_package_files
from sparsepack.errors import SparsepackError
from sparsepack.packaging.model_card import model_card

# What the first `sparsepack package` wrote (git history of packaging/package.py): no formats, precision, query
# weights or device fields at the top, artifacts without format or parity.
OLDEST = {
    "sparsepack_version": "0.1.0",
    "name": "old",
    "source": {"model": "org/old", "revision": None},
    "mode": "inference-free",
    "activation": "log1p_relu",
    "pooling": "max",
    "max_length": 512,
    "model_max_length": 512,
    "vocab_size": 225,
    "special_token_ids": [0, 2, 3],
    "pruning": {"enabled": False},
    "libraries": {"torch": "2.4.0"},
    "attention": "eager",
    "operators": ["aten::relu"],
    "compatible_opensearch": ["2.x", "3.x"],
    "opensearch_compatibility": {"2.x": {"libtorch": "1.13.1", "compatible": True, "missing_ops": []}},
    "parity": {
        "document": {
            "texts": 7,
            "by_batch_size": {"batch_1": {}, "batch_7": {}},
            "identical_token_sets": True,
            "max_abs_diff": 1e-6,
            "tolerance": 1e-5,
            "passed": True,
            "special_tokens": "zeroed",
        },
        "query": {"texts": 5, "reference": "SparseEncoder.encode_query", "passed": True},
    },
    "artifacts": [
        {
            "role": "document",
            "file": "old-sparse-encoding.zip",
            "function_name": "SPARSE_ENCODING",
            "model_format": "TORCH_SCRIPT",
            "sha256": "a" * 64,
            "size_bytes": 1000,
        },
        {
            "role": "query",
            "file": "old-sparse-tokenize.zip",
            "function_name": "SPARSE_TOKENIZE",
            "model_format": "TORCH_SCRIPT",
            "sha256": "b" * 64,
            "size_bytes": 100,
        },
    ],
}


@pytest.mark.parametrize("name", sorted(FIXTURE_SPECS))
def test_every_fixture_manifest_reads_back_unchanged(package_factory, name):
    written, out = package_factory(name)
    on_disk = json.loads((out / "manifest.json").read_text())
    manifest = load_package(out)
    verify_package_files(manifest)
    assert manifest.to_dict() == on_disk == written
    assert list(manifest.to_dict()) == list(on_disk)  # the order too: re-writing it changes no byte
    assert [k for k in Manifest.KEYS if k in on_disk] == list(on_disk)  # the persisted list is the written order
    assert manifest.document_formats == on_disk["formats"] and manifest.pruning.ratio == on_disk["pruning"].get(
        "ratio", 0.0
    )
    for fmt in manifest.document_formats:
        view = manifest.for_format(fmt)
        assert view.document_formats == [fmt] and [
            a.document_format for a in view.artifacts if a.role == "document"
        ] == [fmt]


def test_the_oldest_manifest_gets_its_defaults_in_one_place():
    manifest = Manifest.from_dict(copy.deepcopy(OLDEST))
    assert manifest.document_formats == ["torchscript"] and manifest.precision == "fp32" and not manifest.requires_gpu
    assert manifest.query_weights is None and manifest.pruning.ratio == 0.0 and manifest.verified_devices == ["cpu"]
    assert [a.document_format for a in manifest.artifacts if a.role == "document"] == ["torchscript"]
    assert manifest.artifacts[0].runtime_options is None and manifest.parity.document.devices == ["cpu"]
    assert manifest.to_dict() == OLDEST  # defaults are for reading: nothing is added to what was written
    view = manifest.for_format(None)
    assert view.formats == ["torchscript"] and len(view.artifacts) == 2
    card = model_card(manifest)
    assert "Built by sparsepack 0.1.0 from `org/old`" in card and "proven on cpu" in card


@pytest.mark.parametrize(
    "path",
    [
        ("vocab_size",),
        ("pruning",),
        ("source",),
        ("parity",),
        ("parity", "query"),
        ("parity", "document", "tolerance"),
        ("source", "model"),
        ("pruning", "enabled"),
        ("artifacts", 0, "sha256"),
        ("artifacts", 1, "function_name"),
    ],
)
def test_a_manifest_missing_a_key_a_command_reads_is_refused_at_load(path):
    data = copy.deepcopy(OLDEST)
    holder = data
    for step in path[:-1]:
        holder = holder[step]
    del holder[path[-1]]
    with pytest.raises(SparsepackError) as err:
        Manifest.from_dict(data)
    message = str(err.value)
    assert f"lacks {path[-1]!r}" in message and "re-run `sparsepack package" in message and "\n" not in message


def test_a_wrongly_typed_key_is_refused_at_load():
    data = {**copy.deepcopy(OLDEST), "vocab_size": "225"}
    with pytest.raises(SparsepackError, match="'vocab_size' must be int, not str"):
        Manifest.from_dict(data)
    data = copy.deepcopy(OLDEST)
    data["artifacts"][0]["size_bytes"] = True
    with pytest.raises(SparsepackError, match=r"artifacts\[0\]: 'size_bytes' must be int"):
        Manifest.from_dict(data)


def test_the_cli_refuses_such_a_manifest_in_one_line_before_rendering(tmp_path):
    data = copy.deepcopy(OLDEST)
    del data["pruning"]  # verify reads it; a manifest that passed the old 4-key check failed there with KeyError
    (tmp_path / "manifest.json").write_text(json.dumps(data))
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "sparsepack.cli",
            "render",
            "register-meta",
            "--manifest",
            str(tmp_path / "manifest.json"),
            "--set",
            "model_group_id=G",
        ],
        capture_output=True,
        text=True,
    )
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and "lacks 'pruning'" in lines[0] and not proc.stdout


def test_persisted_keys_name_every_record():
    keys = persisted_keys()
    assert keys["Manifest"][:2] == ("sparsepack_version", "name") and "formats" in keys["Manifest"]
    assert keys["Artifact"][:6] == ("role", "file", "function_name", "model_format", "sha256", "size_bytes")
    assert set(keys) == {
        "Manifest",
        "Source",
        "Pruning",
        "Parity",
        "DocumentProof",
        "QueryProof",
        "Artifact",
        "RuntimeOptions",
        "WeightStats",
        "WeightFigures",
    }
