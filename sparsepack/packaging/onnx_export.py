"""The document encoder as ONNX, for ML Commons' ONNX runtime (onnxruntime 1.16.3 on OpenSearch 2.15 - 3.x).

ML Commons' sparse translator names its arrays ``input1.input_ids`` and ``input1.attention_mask`` and, for ONNX, feeds
them by those names; the graph returns one float32 ``output`` [batch, vocab]. Exported with the TorchScript-based
``torch.onnx.export`` (``dynamo=False``): it takes the same dict-in wrapper the TorchScript artifact uses.
"""

from __future__ import annotations

import hashlib
import importlib.metadata as md
import io
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from ..errors import SparsepackError
from .document import DocumentArtifact
from .opcheck import graph_operators

OPSET = 17
INPUT_NAMES = ("input1.input_ids", "input1.attention_mask")
OUTPUT_NAME = "output"
# The onnxruntime ML Commons bundles per OpenSearch line, and the newest opset / IR version that runtime reads.
ORT_BY_LINE = {"2.x": "1.16.3", "3.x": "1.16.3"}
ORT_LIMITS = {"1.16.3": {"max_opset": 19, "max_ir_version": 9}}
# Initializers smaller than this are not worth an extra node when duplicated.
DEDUPE_MIN_ELEMENTS = 1024


# ML Commons pins libtorch to one thread per inference (DJL's num_threads=1) and gets throughput from concurrent
# predicts; it sets nothing for onnxruntime, whose sessions then take a thread per core each, spinning between ops.
# DJL reads ``option.*`` keys of a serving.properties at the model directory's root into the session options (and
# sets intraOpNumThreads only when interOpNumThreads is present too), so the zip carries both.
DEFAULT_ONNX_THREADS = 1
MAX_ONNX_THREADS = 256
SERVING_PROPERTIES = "serving.properties"


def check_onnx_threads(threads: int | None, artifact_format: str) -> int:
    """The ONNX session threads to write (None: the default), refused where no ONNX artifact is built."""
    if threads is None:
        return DEFAULT_ONNX_THREADS
    if artifact_format == "torchscript":
        raise SparsepackError(
            "--onnx-threads sets the ML node's onnxruntime threads of an ONNX artifact; add --format "
            "onnx or both, or drop it"
        )
    if isinstance(threads, bool) or not isinstance(threads, int) or not 0 <= threads <= MAX_ONNX_THREADS:
        raise SparsepackError(
            f"--onnx-threads {threads!r} is outside 0-{MAX_ONNX_THREADS}; use 1 (one thread per "
            "inference, as ML Commons runs libtorch) or 0 (onnxruntime's default: one per core)"
        )
    return threads


def runtime_entries(threads: int) -> dict[str, bytes]:
    """The zip entries that set the ML node's onnxruntime session threads: none for 0 (onnxruntime's default)."""
    if not threads:
        return {}
    return {SERVING_PROPERTIES: f"option.interOpNumThreads=1\noption.intraOpNumThreads={threads}\n".encode()}


def runtime_options(threads: int) -> dict:
    """The manifest's record of :func:`runtime_entries`."""
    if not threads:
        return {"intra_op_threads": "onnxruntime default (one per physical core)", "set_by": None}
    return {"intra_op_threads": threads, "inter_op_threads": 1, "set_by": f"{SERVING_PROPERTIES} (DJL option.*)"}


def _require_onnx():
    try:
        import onnx
        import onnxruntime  # noqa: F401
    except ImportError as exc:
        raise SparsepackError(
            f"ONNX export needs the onnx and onnxruntime packages ({exc.name} is missing); pip install onnx onnxruntime"
        ) from exc
    return onnx


def runtime_version() -> str:
    try:
        return md.version("onnxruntime")
    except md.PackageNotFoundError:
        return "absent"


class OnnxArtifact:
    """An ONNX file run by onnxruntime, called like the TorchScript module: dict of tensors in, ``{"output"}`` out."""

    def __init__(self, path: Path, threads: int = 0):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1 if threads else 0
        options.log_severity_level = 3
        # idle pool threads sleep instead of spinning: on a shared machine spinning threads steal the cores the
        # working ones need (the proof ran 2x slower under load); the arithmetic is the same either way
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def __call__(self, inputs: dict[str, Tensor]) -> dict[str, Tensor]:
        feed = {
            INPUT_NAMES[0]: inputs["input_ids"].numpy().astype(np.int64),
            INPUT_NAMES[1]: inputs["attention_mask"].numpy().astype(np.int64),
        }
        (out,) = self.session.run([OUTPUT_NAME], feed)
        return {"output": torch.from_numpy(out)}


class OnnxExporter:
    model_format = "ONNX"
    suffix = ".onnx"
    opset = OPSET

    def export(self, module: nn.Module, example: dict[str, Tensor], path: Path) -> None:
        onnx = _require_onnx()
        module.eval()
        axes = {name: {0: "batch", 1: "sequence"} for name in INPUT_NAMES}
        axes[OUTPUT_NAME] = {0: "batch"}
        buffer = io.BytesIO()
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                # The trailing {} keeps torch from reading the dict argument as keyword arguments.
                torch.onnx.export(
                    module,
                    (dict(example), {}),
                    buffer,  # type: ignore[arg-type]  # torch's annotation leaves out the file objects it accepts
                    input_names=list(INPUT_NAMES),
                    output_names=[OUTPUT_NAME],
                    dynamic_axes=axes,
                    opset_version=OPSET,
                    dynamo=False,
                    do_constant_folding=True,
                )
            except Exception as exc:  # noqa: BLE001 - any exporter failure becomes one line
                first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                raise SparsepackError(f"ONNX export failed: {first}; use --format torchscript for this model") from exc
        model = onnx.load_from_string(buffer.getvalue())
        dedupe_initializers(model)
        onnx.checker.check_model(model)
        path.write_bytes(model.SerializeToString())

    def load(self, path: Path) -> OnnxArtifact:
        _require_onnx()
        return OnnxArtifact(path)

    def operators(self, path: Path) -> set[str]:
        onnx = _require_onnx()
        return graph_operators(onnx.load(str(path), load_external_data=False))


def graph_facts(path: Path, model=None) -> dict:
    """Opset, IR version and the signature, read back from the file (``model``: that file, already parsed)."""
    onnx = _require_onnx()
    model = model if model is not None else onnx.load(str(path), load_external_data=False)
    opset = max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))

    def sig(values):
        return [
            {
                "name": v.name,
                "elem_type": onnx.TensorProto.DataType.Name(v.type.tensor_type.elem_type),
                "shape": [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim],
            }
            for v in values
        ]

    return {
        "opset": opset,
        "ir_version": model.ir_version,
        "inputs": sig(model.graph.input),
        "outputs": sig(model.graph.output),
    }


def compatibility(facts: dict) -> dict[str, dict]:
    """Per OpenSearch line: whether the bundled onnxruntime reads this opset and IR version."""
    report = {}
    for line, ort_version in ORT_BY_LINE.items():
        limits = ORT_LIMITS[ort_version]
        problems = []
        if facts["opset"] > limits["max_opset"]:
            problems.append(f"opset {facts['opset']} > {limits['max_opset']}")
        if facts["ir_version"] > limits["max_ir_version"]:
            problems.append(f"IR version {facts['ir_version']} > {limits['max_ir_version']}")
        report[line] = {"onnxruntime": ort_version, "compatible": not problems, "problems": problems}
    return report


def _key(arr: np.ndarray) -> tuple:
    arr = np.ascontiguousarray(arr)
    return arr.dtype.str, arr.shape, hashlib.sha256(arr.tobytes()).digest()


def dedupe_initializers(model) -> dict[str, list[str]]:
    """Store each weight once. The exporter folds a tied decoder weight (the word embeddings, transposed for MatMul)
    into a second initializer; an exact copy becomes a reference to the first, a transposed copy a Transpose node of
    it (onnxruntime folds that back into a constant when the session starts)."""
    from onnx import helper, numpy_helper

    graph = model.graph
    seen: dict[tuple, str] = {}
    # a transposed copy is looked for by its first row (the first column of the matrix it may copy), then compared in
    # full: transposing and hashing every matrix of a 67M-parameter model cost seconds for the one copy there is
    maybe_transposed: dict[tuple, list] = {}
    aliases: dict[str, str] = {}
    transposes: dict[str, str] = {}
    for init in graph.initializer:
        if np.prod(init.dims, dtype=np.int64) < DEDUPE_MIN_ELEMENTS:
            continue
        arr = numpy_helper.to_array(init)
        key = _key(arr)
        if key in seen:
            aliases[init.name] = seen[key]
            continue
        source = None
        if arr.ndim == 2:
            source = next(
                (
                    c.name
                    for c in maybe_transposed.get(_key(arr[0]) + (arr.shape,), ())
                    if np.array_equal(arr, numpy_helper.to_array(c).T)
                ),
                None,
            )
        if source is not None:
            transposes[init.name] = source
        else:
            seen[key] = init.name
            if arr.ndim == 2:
                maybe_transposed.setdefault(_key(arr[:, 0]) + (arr.shape[::-1],), []).append(init)
    if not aliases and not transposes:
        return {"aliased": [], "transposed": []}
    dropped = set(aliases) | set(transposes)
    kept = [i for i in graph.initializer if i.name not in dropped]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name in aliases:
                node.input[i] = aliases[name]
    kept_inputs = [v for v in graph.input if v.name not in dropped]
    del graph.input[:]
    graph.input.extend(kept_inputs)
    for n, (name, source) in enumerate(sorted(transposes.items())):
        graph.node.insert(n, helper.make_node("Transpose", [source], [name], name=f"sparsepack_tied_{n}", perm=[1, 0]))
    return {"aliased": sorted(aliases), "transposed": sorted(transposes)}


def onnx_document_artifact(
    spec,
    wrapper,
    doc_tok: dict,
    staging: Path,
    work: Path,
    name: str,
    license_bytes: bytes | None,
    prune_ratio: float,
    example: dict[str, Tensor],
    log,
    references: dict | None = None,
    threads: int = DEFAULT_ONNX_THREADS,
) -> DocumentArtifact:
    """Export, zip, reload from the zip and prove against ``encode_document`` at the same batteries and batch sizes
    as the TorchScript proof."""
    from . import parity
    from .archive import artifact_entry, write_artifact_zip
    from .artifact_zip import load_from_zip
    from .tokenizer_export import dumps

    exporter = OnnxExporter()
    log(f"exporting the document encoder to ONNX (opset {OPSET})")
    onnx_path = work / f"{name}.onnx"
    exporter.export(wrapper, example, onnx_path)
    doc_zip = staging / f"{name}-sparse-encoding-onnx.zip"
    write_artifact_zip(
        doc_zip,
        {onnx_path.name: onnx_path.read_bytes(), "tokenizer.json": dumps(doc_tok), **runtime_entries(threads)},
        license_bytes,
        stored=(onnx_path.name,),
    )

    log(f"validating the ONNX artifact (onnxruntime {runtime_version()}) against encode_document")
    artifact, tokenizer_data = load_from_zip(doc_zip, work / "reloaded-onnx")
    reloaded = work / "reloaded-onnx" / onnx_path.name
    proof = parity.validate_document(
        spec, artifact, tokenizer_data, reference_cache=references, prune_ratio=prune_ratio
    )
    proof["runtime"] = {"onnxruntime": runtime_version()}
    parity.require(proof, "document (ONNX)")
    parsed = _require_onnx().load(str(reloaded), load_external_data=False)  # parsed once for facts and operators
    facts = graph_facts(reloaded, parsed)
    compat = compatibility(facts)
    entry = artifact_entry(
        doc_zip,
        "document",
        "SPARSE_ENCODING",
        "ONNX",
        format="onnx",
        opset=facts["opset"],
        ir_version=facts["ir_version"],
        inputs=facts["inputs"],
        outputs=facts["outputs"],
        runtime={"onnxruntime": runtime_version(), "ml_commons_onnxruntime": sorted(set(ORT_BY_LINE.values()))},
        runtime_options=runtime_options(threads),
        opensearch_compatibility=compat,
    )
    return DocumentArtifact(entry, artifact, tokenizer_data, graph_operators(parsed), compat, proof)
