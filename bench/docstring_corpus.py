"""Real English text without a download: the docstrings of the Python packages installed beside sparsepack.

A document is one docstring's body (its paragraphs after the first, cut to ``MAX_WORDS`` words); a query is that
docstring's first sentence, the way a one-line summary asks for the text that explains it. The docstrings are read
with ``ast`` (nothing is imported), deduplicated, and drawn with a fixed seed, so the same environment gives the same
corpus. The benchmarks use it where the random-word ``synthetic_corpus`` would hide what real text does to a ranking:
topics, repeated phrasing, rare and frequent words.
"""

from __future__ import annotations

import ast
import random
import re
import sysconfig
from pathlib import Path

PACKAGES = ("numpy", "scipy", "torch", "transformers", "sklearn", "pandas", "sympy", "matplotlib", "botocore")
MAX_WORDS = 300
MIN_BODY_WORDS = 20
MIN_QUERY_WORDS = 4


def _docstrings(root: Path):
    for path in sorted(root.rglob("*.py")):
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                text = ast.get_docstring(node)
                if text:
                    yield text


def _split(text: str) -> tuple[str, str] | None:
    """(query, document): the first sentence of the first paragraph, and the paragraphs after it."""
    paragraphs = [" ".join(p.split()) for p in re.split(r"\n\s*\n", text.strip())]
    first = re.split(r"(?<=[.!?])\s", paragraphs[0], maxsplit=1)[0]
    body = " ".join(paragraphs[1:]).split()
    if len(first.split()) < MIN_QUERY_WORDS or len(body) < MIN_BODY_WORDS:
        return None
    return first, " ".join(body[:MAX_WORDS])


def docstring_corpus(n_docs: int, n_queries: int, seed: int) -> tuple[list[str], list[str]]:
    """``n_docs`` documents and ``n_queries`` queries; query i's own document is among the documents."""
    site = Path(sysconfig.get_paths()["purelib"])
    pairs: dict[str, str] = {}  # query -> document; a repeated query or document keeps its first pair
    bodies: set[str] = set()
    for name in PACKAGES:
        if (site / name).is_dir():
            for text in _docstrings(site / name):
                split = _split(text)
                if split and split[0] not in pairs and split[1] not in bodies:
                    pairs[split[0]] = split[1]
                    bodies.add(split[1])
    if len(pairs) < n_docs:
        raise ValueError(f"only {len(pairs):,} usable docstrings in {site}; ask for at most that many documents")
    chosen = random.Random(seed).sample(sorted(pairs), n_docs)
    return [pairs[q] for q in chosen], chosen[:n_queries]
