"""Which OpenSearch lines can load a traced graph: its operators against each line's libtorch."""

from __future__ import annotations

import json
import re
from functools import cache
from importlib import resources

# OpenSearch line -> libtorch that ML Commons forces there (DJL 0.21-0.31.1).
LIBTORCH_BY_LINE = {"2.x": "1.13.1", "3.x": "2.5.1"}


@cache
def known_ops(libtorch: str) -> frozenset[str]:
    data = json.loads(resources.files("sparsepack").joinpath(f"data/ops-{libtorch}.json").read_text())
    return frozenset(data["op_names"])


def _is_registered_anywhere(op: str) -> bool:
    return any(op in known_ops(v) for v in LIBTORCH_BY_LINE.values())


def missing_ops(ops: set[str], libtorch: str) -> list[str]:
    """Ops the runtime lacks. prim:: nodes that no runtime registers (Constant, GetAttr, ...) are interpreter
    instructions, present everywhere; a registered prim:: op is checked like any other."""
    known = known_ops(libtorch)
    return sorted(op for op in ops if op not in known and (not op.startswith("prim::") or _is_registered_anywhere(op)))


def compatibility(ops: set[str]) -> dict[str, dict]:
    """Per OpenSearch line: libtorch version, whether every op exists there, and the missing ones."""
    report = {}
    for line, libtorch in LIBTORCH_BY_LINE.items():
        missing = missing_ops(ops, libtorch)
        report[line] = {"libtorch": libtorch, "compatible": not missing, "missing_ops": missing}
    return report


_TORCH_OP = re.compile(r"^(aten|prim|quantized|_quantized)::[A-Za-z0-9_]+")


def graph_operators(graph) -> set[str]:
    """Every operator a loaded document graph calls: an ONNX ``ModelProto`` (``domain::op``), or a TorchScript module
    (its inlined graph, so submodules' operators count too)."""
    if hasattr(graph, "opset_import"):
        return {f"{node.domain or 'ai.onnx'}::{node.op_type}" for node in graph.graph.node}
    ops: set[str] = set()

    def walk(block):
        for node in block.nodes():
            if _TORCH_OP.match(node.kind()):
                ops.add(node.kind())
            for sub in node.blocks():
                walk(sub)

    walk(graph.inlined_graph if hasattr(graph, "inlined_graph") else graph.graph)
    return ops
