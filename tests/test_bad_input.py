"""Bad input: each case is one line naming the problem and the fix, exit 2, and nothing written, extracted or
registered. No cluster: release commands point at a closed port, so getting past the checks would be exit 4."""

import json
import shutil
import stat
import subprocess
import sys
import zipfile

import pytest
from conftest import PORT_BASE

from sparsepack.packaging.archive import sha256_file

CLOSED_URL = f"http://127.0.0.1:{PORT_BASE + 149}"  # nothing listens there: reaching the cluster step would be exit 4


def cli(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "sparsepack.cli", *map(str, args)], capture_output=True, text=True, cwd=cwd
    )


def refused(proc, *words):
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    lines = [l for l in proc.stderr.splitlines() if l.startswith(("sparsepack: error", "sparsepack: release failed"))]
    assert len(lines) == 1, proc.stderr[-2000:]
    for w in words:
        assert w in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def pkg(package_factory, tmp_path):
    """A writable copy of a real package."""
    out = tmp_path / "pkg"
    shutil.copytree(package_factory("bert-if-log1p")[1], out)
    return out


def manifest_of(pkg):
    return json.loads((pkg / "manifest.json").read_text())


def save(pkg, manifest):
    (pkg / "manifest.json").write_text(json.dumps(manifest))


def rewrite_zip(pkg, role, entries, link=None):
    """Replace an artifact zip and record its new sha256 and size in the manifest, as a tool that 'fixes' hashes would:
    only the content checks can catch what is inside."""
    manifest = manifest_of(pkg)
    art = next(a for a in manifest["artifacts"] if a["role"] == role)
    path = pkg / art["file"]
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
        if link:
            info = zipfile.ZipInfo(link[0])
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, link[1])
    art["sha256"], art["size_bytes"] = sha256_file(path), path.stat().st_size
    save(pkg, manifest)


def release(pkg):
    return cli("release", pkg, "--url", CLOSED_URL)


def test_manifest_not_json(pkg):
    (pkg / "manifest.json").write_text('{"name": "x", "artifacts": [')
    refused(release(pkg), "manifest.json is not valid JSON", "re-run `sparsepack package")


@pytest.mark.parametrize("where", ["parent", "absolute"])
def test_manifest_file_outside_the_package(pkg, tmp_path, where):
    outside = tmp_path / "x.zip"
    shutil.copy(pkg / manifest_of(pkg)["artifacts"][0]["file"], outside)  # it exists, with the right hash
    manifest = manifest_of(pkg)
    manifest["artifacts"][0]["file"] = "../x.zip" if where == "parent" else str(outside)
    save(pkg, manifest)
    refused(release(pkg), "not a plain file name inside the package folder")


@pytest.mark.parametrize("entry", ["../evil.txt", "/etc/evil.txt", "sub/../../evil.txt"])
def test_zip_entry_escaping_its_folder(pkg, entry):
    rewrite_zip(pkg, "query", {"tokenizer.json": "{}", entry: "x"})
    refused(release(pkg), "a path outside the folder")
    assert not (pkg.parent / "evil.txt").exists()


def test_zip_with_a_symlink_entry(pkg):
    rewrite_zip(pkg, "query", {"tokenizer.json": "{}"}, link=("idf.json", "/etc/passwd"))
    refused(release(pkg), "symbolic link 'idf.json'")


def test_zip_larger_than_the_manifest_says(pkg):
    art = manifest_of(pkg)["artifacts"][0]
    with open(pkg / art["file"], "ab") as fh:
        fh.write(b"\0" * 4096)
    refused(release(pkg), "larger than the", "the manifest says")


def test_tokenizer_json_not_json(pkg):
    rewrite_zip(pkg, "query", {"tokenizer.json": "{not json", "idf.json": "{}"})
    refused(release(pkg), "tokenizer.json is not valid JSON")


@pytest.mark.parametrize("weight", [0.0, -1.0, 65.0])
def test_idf_json_with_a_weight_the_cluster_refuses(pkg, weight):
    """A package from before the (0, 64] rule, or an edited idf.json: refused before upload, not at query time."""
    zf = zipfile.ZipFile(pkg / next(a["file"] for a in manifest_of(pkg)["artifacts"] if a["role"] == "query"))
    entries = {name: zf.read(name) for name in zf.namelist()}
    idf = json.loads(entries["idf.json"])
    idf["the"] = weight
    rewrite_zip(pkg, "query", {**entries, "idf.json": json.dumps(idf)})
    refused(release(pkg), "idf.json weight of 'the'", "(0, 64]")


def test_model_whose_tokenizer_json_is_not_json(model_factory, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(model_factory("bert-if-log1p"), model)
    for found in model.rglob("tokenizer.json"):
        found.write_text("{not json")
    refused(cli("package", model, "-o", tmp_path / "out"), "tokenizer.json is not valid JSON", "restore")
    assert not (tmp_path / "out").exists()
    refused(
        cli("release", model, "--url", CLOSED_URL, "--package-dir", tmp_path / "out"),
        "tokenizer.json is not valid JSON",
    )
    assert not (tmp_path / "out").exists()


def test_set_of_an_unknown_variable(pkg, tmp_path):
    proc = cli(
        "render",
        "ingest-pipeline",
        "--manifest",
        pkg / "manifest.json",
        "--set",
        "model_id=abc",
        "--set",
        "modle_id=abc",
        "-o",
        tmp_path / "body.json",
    )
    refused(proc, "--set modle_id", "no such variable", "model_id")
    assert not (tmp_path / "body.json").exists()


@pytest.mark.parametrize(
    "url, words",
    [
        ("127.0.0.1:9200", "needs a scheme and a host"),
        ("http://127.0.0.1:99999", "port is out of range"),
        ("ftp://127.0.0.1:9200", "needs a scheme"),
    ],
)
def test_bad_url(pkg, url, words):
    refused(cli("release", pkg, "--url", url), words)


def test_release_of_a_missing_path_fails_before_loading_libraries(tmp_path):
    code = (
        "import sys; from sparsepack.cli import main; rc = main(['release', '/no/such/path', '--url', "
        f"'{CLOSED_URL}']); print(rc, 'torch' in sys.modules, 'sentence_transformers' in sys.modules)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.stdout.split() == ["2", "False", "False"], proc.stdout + proc.stderr
    refused(cli("release", "/no/such/path", "--url", CLOSED_URL), "no package or model at /no/such/path")


def test_package_given_a_package_folder(pkg, tmp_path):
    line = refused(cli("package", pkg, "-o", tmp_path / "out"), "is a sparsepack package", "sparsepack release")
    assert str(pkg) in line
    assert not (tmp_path / "out").exists()


def test_restricted_access_without_backend_roles(pkg):
    refused(cli("release", pkg, "--url", CLOSED_URL, "--access-mode", "restricted"), "needs backend_roles")
    refused(cli("release", pkg, "--url", CLOSED_URL, "--backend-roles", "a"), "need access_mode=restricted")
