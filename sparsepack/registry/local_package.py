"""A package's artifacts run on this machine, keyed the way the server keys its output."""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import SparsepackError
from ..packaging.archive import read_zip
from ..packaging.artifact_zip import load_from_zip
from ..packaging.query_weights import lowest_weight_query, reference_token_map
from ..packaging.tokenizer_export import server_token_strings


class LocalPackage:
    """The packaged artifacts run locally, keyed the way the server keys its output."""

    def __init__(self, manifest: dict, root: Path):
        # torch loads here, not at import: smoke and migrate import this module without ever running a package
        from ..packaging.parity import DjlStyleTokenizer, emulate_sparse_tokenize, run_artifact

        self._run_artifact, self._emulate = run_artifact, emulate_sparse_tokenize
        self.manifest = manifest
        doc = next(a for a in manifest["artifacts"] if a["role"] == "document")
        self.artifact, self.doc_tokenizer_data = load_from_zip(root / doc["file"])
        self.tokenizer = DjlStyleTokenizer(self.doc_tokenizer_data)
        self.names = server_token_strings(self.doc_tokenizer_data, manifest["vocab_size"])
        query = next((a for a in manifest["artifacts"] if a["role"] == "query"), None)
        self.query_tokenizer_data: dict | None = None
        self.idf: dict[str, float] | None = None
        if query is not None:
            q_entries = read_zip(root / query["file"])
            self.query_tokenizer_data = json.loads(q_entries["tokenizer.json"])
            self.idf = json.loads(q_entries["idf.json"]) if "idf.json" in q_entries else None

    def encode_documents(self, texts: list[str]) -> list[dict[str, float]]:
        vectors = self._run_artifact(self.artifact, self.tokenizer, texts, batch_size=1)
        return [reference_token_map(v, self.names) for v in vectors]

    def low_weight_query(self) -> tuple[str, dict[str, float]]:
        """The query made of idf.json's lowest-weight tokens (inference-free packages only)."""
        if self.query_tokenizer_data is None or self.idf is None:
            raise SparsepackError("the lowest-weight query needs an inference-free package: this one has no idf.json")
        return lowest_weight_query(self.query_tokenizer_data, self.idf)

    def served_query(self, text: str) -> dict[str, float]:
        """The weights the cluster builds its query from, zeros included (they are what it refuses)."""
        if self.query_tokenizer_data is None:
            return self.encode_documents([text])[0]
        return self._emulate(self.query_tokenizer_data, self.idf, text)

    def encode_queries(self, texts: list[str]) -> list[dict[str, float]]:
        if self.query_tokenizer_data is None:
            return self.encode_documents(texts)
        return [
            {k: v for k, v in self._emulate(self.query_tokenizer_data, self.idf, t).items() if v != 0.0} for t in texts
        ]
