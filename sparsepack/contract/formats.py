"""The document formats a package can hold, and the manifest as seen by one of them."""

from __future__ import annotations

from ..errors import SparsepackError

# --format choices -> the exporters they run, in order; the first one is the manifest's primary document artifact.
FORMATS = {"torchscript": ("torchscript",), "onnx": ("onnx",), "both": ("torchscript", "onnx")}
DOCUMENT_FORMATS = ("torchscript", "onnx", "onnx-int8")  # what a package can hold; onnx-int8 comes with --quantize int8


def for_format(manifest: dict, fmt: str | None) -> dict:
    """The manifest as if the package held only the ``fmt`` document artifact (plus the query artifact): what
    templates, registration and the smoke test take. ``None`` picks the package's first format."""
    formats = manifest.get("formats") or ["torchscript"]
    fmt = fmt or formats[0]
    if fmt not in formats:
        raise SparsepackError(
            f"the package holds no {fmt} document artifact (it has {', '.join(formats)}); "
            f"re-package with --format {fmt} or both"
        )
    keep = [a for a in manifest["artifacts"] if a["role"] != "document" or a.get("format", "torchscript") == fmt]
    view = {**manifest, "artifacts": keep, "formats": [fmt]}
    doc = next(a for a in keep if a["role"] == "document")
    if doc.get("opensearch_compatibility"):
        view["compatible_opensearch"] = sorted(
            line for line, c in doc["opensearch_compatibility"].items() if c["compatible"]
        )
    return view
