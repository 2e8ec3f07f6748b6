"""The package manifest as typed records: every key a command reads is checked once, at load, and keys newer than a
manifest get their defaults here and nowhere else.

``from_dict`` refuses a manifest lacking a key some command reads (one line: the key and the fix); ``to_dict`` gives
back the mapping it was read from (keys and order kept, unknown keys too), so reading never changes what was written.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path

from ..errors import SparsepackError
from .limits import fitted_ceiling
from .record import RERUN, Record


@dataclass
class Source(Record):
    REQUIRED = {"model": str}
    OPTIONAL = {"revision": ((str, type(None)), None)}
    KEYS = ("model", "revision")
    model: str
    revision: str | None = None
    raw: dict | None = field(default=None, repr=False, compare=False)


@dataclass
class Pruning(Record):
    REQUIRED = {"enabled": bool}
    OPTIONAL = {"type": ((str, type(None)), None), "ratio": (float, 0.0)}  # {"enabled": false} carries no ratio
    KEYS = ("enabled", "type", "ratio")
    enabled: bool
    type: str | None = None
    ratio: float = 0.0
    raw: dict | None = field(default=None, repr=False, compare=False)


@dataclass
class RuntimeOptions(Record):
    """onnxruntime threads an ONNX zip sets on the ML node (a number, or the text saying onnxruntime's default)."""

    REQUIRED = {"intra_op_threads": (int, str)}
    OPTIONAL = {"inter_op_threads": ((int, type(None)), None), "set_by": ((str, type(None)), None)}
    KEYS = ("intra_op_threads", "inter_op_threads", "set_by")
    intra_op_threads: int | str
    inter_op_threads: int | None = None
    set_by: str | None = None
    raw: dict | None = field(default=None, repr=False, compare=False)


@dataclass
class DocumentProof(Record):
    """Parity of a document artifact with encode_document (what the model card and release report read)."""

    REQUIRED = {
        "texts": int,
        "max_abs_diff": float,
        "tolerance": float,
        "identical_token_sets": bool,
        "by_batch_size": dict,
    }
    OPTIONAL = {
        "passed": (bool, True),
        "devices": (list, ["cpu"]),
        "special_tokens": (str, ""),
        "by_device": ((dict, type(None)), None),
        "precision": ((str, type(None)), None),
    }
    texts: int
    max_abs_diff: float
    tolerance: float
    identical_token_sets: bool
    by_batch_size: dict
    passed: bool = True
    devices: list = field(default_factory=lambda: ["cpu"])
    special_tokens: str = ""
    by_device: dict | None = None
    precision: str | None = None
    raw: dict | None = field(default=None, repr=False, compare=False)


@dataclass
class QueryProof(Record):
    REQUIRED = {"texts": int, "reference": str, "passed": bool}
    texts: int
    reference: str
    passed: bool
    raw: dict | None = field(default=None, repr=False, compare=False)


@dataclass
class Parity(Record):
    """One proof per artifact: ``document`` and ``query`` for the first format, ``document_onnx`` (...) after."""

    REQUIRED = {"document": dict, "query": dict}
    NESTED = {"document": DocumentProof, "query": QueryProof}
    document: DocumentProof
    query: QueryProof
    raw: dict | None = field(default=None, repr=False, compare=False)


@dataclass
class Artifact(Record):
    REQUIRED = {"role": str, "file": str, "function_name": str, "model_format": str, "sha256": str, "size_bytes": int}
    OPTIONAL = {
        "format": ((str, type(None)), None),
        "parity": ((str, type(None)), None),
        "runtime_options": ((dict, type(None)), None),
        "opensearch_compatibility": ((dict, type(None)), None),
        "quality_gate": ((dict, type(None)), None),
    }
    NESTED = {"runtime_options": RuntimeOptions}
    KEYS = (
        "role",
        "file",
        "function_name",
        "model_format",
        "sha256",
        "size_bytes",
        "format",
        "parity",
        "runtime_options",
        "opensearch_compatibility",
        "quality_gate",
    )
    role: str
    file: str
    function_name: str
    model_format: str
    sha256: str
    size_bytes: int
    format: str | None = None  # document artifacts before --format existed: torchscript (see document_format)
    parity: str | None = None
    runtime_options: RuntimeOptions | None = None
    opensearch_compatibility: dict | None = None
    quality_gate: dict | None = None
    raw: dict | None = field(default=None, repr=False, compare=False)

    @property
    def document_format(self) -> str:
        return self.format or "torchscript"

    def compatible_lines(self) -> list[str] | None:
        if not self.opensearch_compatibility:
            return None
        return sorted(line for line, c in self.opensearch_compatibility.items() if c["compatible"])


@dataclass
class WeightFigures(Record):
    """One side's nonzero output weights (documents or queries) on the texts ``measured_on`` names, and the share of
    them the server's default SEISMIC ceiling would clip."""

    REQUIRED = {"measured_on": str, "texts": int, "weights": int, "max": float, "p99_9": float, "p99": float}
    OPTIONAL = {"default_ceiling": ((float, type(None)), None), "above_default_ceiling": ((float, type(None)), None)}
    KEYS = ("measured_on", "texts", "weights", "max", "p99_9", "p99", "default_ceiling", "above_default_ceiling")
    measured_on: str
    texts: int
    weights: int
    max: float
    p99_9: float
    p99: float
    default_ceiling: float | None = None
    above_default_ceiling: float | None = None  # fraction of ``weights`` above ``default_ceiling``
    raw: dict | None = field(default=None, repr=False, compare=False)


CEILING_OF_SIDE = {"documents": "quantization_ceiling_ingest", "queries": "quantization_ceiling_search"}


@dataclass
class WeightStats(Record):
    """The weight distribution the packaged model produces, one entry per set of texts measured."""

    REQUIRED = {"documents": list, "queries": list}
    NESTED = {"documents": WeightFigures, "queries": WeightFigures}
    KEYS = ("documents", "queries")
    documents: list
    queries: list
    raw: dict | None = field(default=None, repr=False, compare=False)

    def maximum(self, side: str) -> float:
        return max((f.max for f in getattr(self, side)), default=0.0)

    def fitted_ceilings(self) -> dict[str, float]:
        """SEISMIC parameter -> the ceiling just above the side's largest measured weight (none for an unmeasured
        side, which keeps the server's default)."""
        out = {}
        for side, parameter in CEILING_OF_SIDE.items():
            ceiling = fitted_ceiling(self.maximum(side))
            if ceiling is not None:
                out[parameter] = ceiling
        return out

    def clipped_by_default(self, side: str) -> float | None:
        """The largest share of the side's weights the server's default ceiling clips, over the sets measured."""
        shares = [f.above_default_ceiling for f in getattr(self, side) if f.above_default_ceiling is not None]
        return max(shares) if shares else None


@dataclass
class Manifest(Record):
    REQUIRED = {
        "sparsepack_version": str,
        "name": str,
        "source": dict,
        "mode": str,
        "activation": str,
        "pooling": str,
        "max_length": int,
        "vocab_size": int,
        "pruning": dict,
        "libraries": dict,
        "compatible_opensearch": list,
        "parity": dict,
        "artifacts": list,
    }
    # keys newer than the first manifests, and what a manifest without them means
    OPTIONAL = {
        "formats": ((list, type(None)), None),  # None: every document artifact's format (see document_formats)
        "query_weights": ((dict, type(None)), None),
        "device_portable": ((bool, type(None)), None),
        "precision": (str, "fp32"),
        "requires_gpu": (bool, False),
        "verified_devices": (list, ["cpu"]),
        "weight_stats": ((dict, type(None)), None),  # None: measured before packaging recorded it; server ceilings
    }
    NESTED = {
        "source": Source,
        "pruning": Pruning,
        "parity": Parity,
        "artifacts": Artifact,
        "weight_stats": WeightStats,
    }
    # the persisted keys, in the order `sparsepack package` writes them (its writer builds the dict; this is the list)
    KEYS = (
        "sparsepack_version",
        "name",
        "source",
        "mode",
        "activation",
        "pooling",
        "max_length",
        "model_max_length",
        "vocab_size",
        "special_token_ids",
        "pruning",
        "libraries",
        "attention",
        "operators",
        "compatible_opensearch",
        "opensearch_compatibility",
        "parity",
        "formats",
        "artifacts",
        "query_weights",
        "device_portable",
        "precision",
        "requires_gpu",
        "verified_devices",
        "weight_stats",
    )
    sparsepack_version: str
    name: str
    source: Source
    mode: str
    activation: str
    pooling: str
    max_length: int
    vocab_size: int
    pruning: Pruning
    libraries: dict
    compatible_opensearch: list
    parity: Parity
    artifacts: list
    formats: list | None = None
    query_weights: dict | None = None
    device_portable: bool | None = None
    precision: str = "fp32"
    requires_gpu: bool = False
    verified_devices: list = field(default_factory=lambda: ["cpu"])
    weight_stats: WeightStats | None = None
    raw: dict | None = field(default=None, repr=False, compare=False)
    root: Path | None = field(default=None, repr=False, compare=False)  # the package folder, when read from one

    @classmethod
    def from_dict(cls, data, where: str = "manifest.json", root: Path | None = None) -> Manifest:
        manifest = super().from_dict(data, where)
        if not manifest.artifacts:
            raise SparsepackError(f"{where} lists no artifacts; {RERUN}")
        if not any(a.role == "document" for a in manifest.artifacts):
            raise SparsepackError(f"{where} lists no document artifact; {RERUN}")
        manifest.root = Path(root) if root is not None else None
        return manifest

    @property
    def document_formats(self) -> list[str]:
        return (
            self.formats or [a.document_format for a in self.artifacts if a.role == "document"][:1] or ["torchscript"]
        )

    def artifact(self, role: str) -> Artifact | None:
        return next((a for a in self.artifacts if a.role == role), None)

    @property
    def package_root(self) -> Path:
        """The package folder the manifest was read from."""
        if self.root is None:
            raise SparsepackError("this manifest was not read from a package folder; load it with load_package")
        return self.root

    def path_of(self, artifact: Artifact) -> Path:
        return self.package_root / artifact.file

    def for_format(self, fmt: str | None) -> Manifest:
        """The manifest as if the package held only the ``fmt`` document artifact (plus the query artifact)."""
        from .formats import for_format

        return Manifest.from_dict(for_format(self.to_dict(), fmt), root=self.root)


def persisted_keys() -> dict[str, tuple[str, ...]]:
    """What a manifest holds, record by record (the written order)."""
    return {
        cls.__name__: cls.KEYS or tuple(f.name for f in fields(cls) if f.name not in ("raw", "root"))
        for cls in (
            Manifest,
            Source,
            Pruning,
            Parity,
            DocumentProof,
            QueryProof,
            Artifact,
            RuntimeOptions,
            WeightStats,
            WeightFigures,
        )
    }
