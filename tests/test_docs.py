"""The documentation cannot drift silently: the site builds strictly (no broken link, anchor or nav entry), and the
README stays short and names every exit code and every SPARSEPACK_ variable the code reads."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
MAX_README_LINES = 250
# The CLI's contract: 0 ok, 1 unexpected, 2 bad input, 3 parity/gate, 4 cluster/step, 5 local environment, 130 Ctrl-C
DOCUMENTED_EXIT_CODES = {0, 1, 2, 3, 4, 5, 130}


def _python_sources(*folders: str) -> list[Path]:
    return [p for f in folders for p in (ROOT / f).rglob("*.py") if "__pycache__" not in p.parts]


def _exit_code_rows(markdown: str) -> set[int]:
    return {int(m) for m in re.findall(r"^\|\s*(\d+)\s*\|", markdown, flags=re.M)}


def test_mkdocs_build_strict(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "mkdocs",
            "build",
            "--strict",
            "--config-file",
            str(ROOT / "mkdocs.yml"),
            "--site-dir",
            str(tmp_path / "site"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    pages = sorted(p.stem for p in (ROOT / "docs").glob("*.md"))
    built = sorted(
        p.parent.name if p.parent != tmp_path / "site" else "index"
        for p in (tmp_path / "site").glob("**/index.html")
        if "assets" not in p.parts and p.parent.name != "404"
    )
    assert set(pages) <= set(built), f"pages not built: {set(pages) - set(built)}"


def test_readme_is_short():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= MAX_README_LINES, (
        f"README.md has {len(lines)} lines; move detail to docs/ (limit {MAX_README_LINES})"
    )


def test_readme_names_every_exit_code():
    text = README.read_text(encoding="utf-8")
    in_code = {
        int(n)
        for p in _python_sources("sparsepack")
        for n in re.findall(r"\bexit_code\s*=\s*(\d+)", p.read_text(encoding="utf-8"))
    }
    assert in_code, "no exit_code found in sparsepack/: has the error module moved?"
    rows = _exit_code_rows(text[text.index("## Exit codes") :])
    missing = (DOCUMENTED_EXIT_CODES | in_code) - rows
    assert not missing, f"README's exit-code table lacks {sorted(missing)}"
    troubleshooting = (ROOT / "docs" / "troubleshooting.md").read_text(encoding="utf-8")
    assert (DOCUMENTED_EXIT_CODES | in_code) <= _exit_code_rows(troubleshooting)


def test_readme_names_every_environment_variable():
    found = set()
    for path in _python_sources("sparsepack"):
        found |= set(re.findall(r"\bSPARSEPACK_[A-Z0-9_]+\b", path.read_text(encoding="utf-8")))
    for path in (ROOT / "scripts").glob("*.sh"):
        found |= set(re.findall(r"\bSPARSEPACK_[A-Z0-9_]+\b", path.read_text(encoding="utf-8")))
    # OPENSEARCH_* variables the code reads (it also sets a few for the node's own launcher, which users never set)
    for path in _python_sources("sparsepack"):
        found |= set(
            re.findall(r"environ(?:\.get\(|\[)\s*[\"'](OPENSEARCH_[A-Z0-9_]+)", path.read_text(encoding="utf-8"))
        )
    assert len(found) >= 5, found
    readme = README.read_text(encoding="utf-8")
    missing = sorted(v for v in found if not re.search(rf"`{v}`|{v}\b", readme))
    assert not missing, f"README does not document {missing}"


def test_compatibility_table_is_the_same_in_readme_and_site():
    def table(text: str) -> str:
        section = text[text.index("## Compatibility") :].split("\n## ", 1)[0]
        return "\n".join(line for line in section.splitlines() if line.startswith("|"))

    readme = table(README.read_text(encoding="utf-8"))
    assert readme.count("\n") >= 5
    assert table((ROOT / "docs" / "index.md").read_text(encoding="utf-8")) == readme


def test_readme_links_resolve():
    text = README.read_text(encoding="utf-8")
    targets = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text)
    local = [t for t in targets if "://" not in t]
    assert any(t.startswith("docs/") for t in local)
    missing = [t for t in local if not (ROOT / t).exists()]
    assert not missing, f"README links to missing files: {missing}"


def test_scripts_named_in_readme_exist():
    text = README.read_text(encoding="utf-8")
    for script in ("./scripts/demo.sh", "./scripts/test.sh"):
        assert script in text and (ROOT / script).is_file() and shutil.which("bash")
    assert (ROOT / ".ci" / "run").read_text().strip().endswith("exec ./scripts/test.sh")


def test_secured_clusters_page_role_is_the_one_the_node_gets():
    """The paste-ready roles.yml block on the Secured clusters page is exactly sparsepack.node.secure.release_role()."""
    import yaml

    from sparsepack.node import secure

    page = (ROOT / "docs" / "secured-clusters.md").read_text(encoding="utf-8")
    block = page.split("```yaml\nsparsepack-release:", 1)[1].split("```", 1)[0]
    assert yaml.safe_load("sparsepack-release:" + block)["sparsepack-release"] == secure.release_role()
