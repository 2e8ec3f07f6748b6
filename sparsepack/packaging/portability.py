"""Device-portable TorchScript: no ``torch.device`` constant may survive into the saved file.

A trace records every device argument it sees as a constant: transformers' attention-mask code calls
``torch.arange(..., device=input.device)`` and ``mask.to(device)``, so a trace made on CPU carries ``"cpu"`` into the
graph. ML Commons on a GPU node loads the file onto the GPU and passes GPU inputs, and the first forward then mixes
devices and fails. The repair: in every graph of every submodule, each Device constant is replaced by the device of
that graph's first tensor input (``prim::device``), which is wherever the caller put the data.

The check reads the code files of the saved archive, the bytes users receive, not the in-memory module.
"""

from __future__ import annotations

import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

from ..errors import SparsepackError


@dataclass(frozen=True)
class DevicePlace:
    """Where a Device constant sits: submodule path, method, and the constant's value."""

    module: str
    method: str
    value: str

    def __str__(self) -> str:
        return f"{self.module or '<root>'}.{self.method} (device {self.value!r})"


def _submodules(scripted, prefix: str = ""):
    yield prefix, scripted
    for name, child in scripted.named_children():
        yield from _submodules(child, f"{prefix}.{name}" if prefix else name)


def _device_constants(graph) -> list:
    return [n for n in graph.findAllNodes("prim::Constant", True) if n.output().type().kind() == "DeviceObjType"]


def _device_source(graph, constants):
    """The value to take the device from: the graph's first tensor input, else the first tensor the graph computes
    before any use of the constants (a dict-in module's ``inputs["input_ids"]``); None when there is none."""
    source = next((v for v in graph.inputs() if v.type().kind() == "TensorType"), None)
    if source is not None:
        return source, None
    uses = [use.user for const in constants for use in const.output().uses()]
    for node in graph.nodes():
        tensor = next((o for o in node.outputs() if o.type().kind() == "TensorType"), None)
        if tensor is not None:
            return (tensor, node) if all(node.isBefore(user) for user in uses) else (None, None)
    return None, None


def make_device_portable(scripted) -> int:
    """Rewrite every Device constant of ``scripted`` and its submodules in place; return how many were rewritten.

    Refuses (naming the place) a graph that needs a device but has no tensor to take it from."""
    rewritten = 0
    for path, module in _submodules(scripted):
        for method in module._c._method_names():
            graph = module._c._get_method(method).graph
            constants = _device_constants(graph)
            if not constants:
                continue
            source, defined_by = _device_source(graph, constants)
            if source is None:
                place = DevicePlace(path, method, str(constants[0].output().toIValue()))
                raise SparsepackError(
                    f"the trace fixes a device in {place}, which has no tensor input to take the device "
                    f"from; such a model cannot run on GPU nodes: make that code follow its inputs' device"
                )
            device = graph.create("prim::device", [source])
            device.output().setType(constants[0].output().type())
            if defined_by is None:
                device.insertBefore(next(iter(graph.nodes())))  # graph inputs are defined before the first node
            else:
                device.insertAfter(defined_by)
            for const in constants:
                const.output().replaceAllUsesWith(device.output())
                const.destroy()
            rewritten += len(constants)
    return rewritten


def remaining_device_constants(scripted) -> list[DevicePlace]:
    """Device constants left in any graph of a loaded module and its submodules."""
    places = []
    for path, module in _submodules(scripted):
        for method in module._c._method_names():
            for const in _device_constants(module._c._get_method(method).graph):
                value = const.output().toIValue()
                places.append(DevicePlace(path, method, str(value)))
    return places


_DEVICE_IN_CODE = re.compile(r"torch\.device\(\s*\"([^\"]+)\"\s*\)")


def device_constants_in_archive(pt_path: str | Path) -> list[str]:
    """``file:line: torch.device("...")`` for every device the saved archive's code spells out, in any submodule."""
    found = []
    with zipfile.ZipFile(pt_path) as zf:
        for name in sorted(zf.namelist()):
            if "/code/" not in f"/{name}" or not name.endswith(".py"):
                continue
            for lineno, line in enumerate(zf.read(name).decode("utf-8", "replace").splitlines(), 1):
                for match in _DEVICE_IN_CODE.finditer(line):
                    found.append(f"{name}:{lineno}: torch.device({match.group(1)!r})")
    return found


def require_device_portable(pt_path: str | Path) -> None:
    places = device_constants_in_archive(pt_path)
    if places:
        raise SparsepackError(
            f"{Path(pt_path).name} still fixes a device at {places[0]} ({len(places)} place(s)); "
            f"it would fail on GPU nodes: report this model to sparsepack"
        )
