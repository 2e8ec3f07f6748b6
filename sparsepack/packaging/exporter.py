"""Turn the document encoder into a file ML Commons loads. One small interface, so another format can follow.

TorchScript is what ML Commons' TORCH_SCRIPT runtime (DJL + libtorch) loads. torch 2.13+ marks
``torch.jit.trace/save/load`` deprecated; they still work, and nothing else loads there.
"""

from __future__ import annotations

import io
import re
import subprocess
import sys
import tempfile
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import torch
from torch import Tensor, nn

from ..errors import SparsepackError
from .opcheck import graph_operators
from .portability import make_device_portable


class Exporter(Protocol):
    model_format: str  # ML Commons' model_format
    suffix: str

    def export(self, module: nn.Module, example: dict[str, Tensor], path: Path) -> None: ...

    def load(self, path: Path) -> Callable[[dict[str, Tensor]], dict[str, Tensor]]: ...

    def operators(self, path: Path) -> set[str]: ...


class TorchScriptExporter:
    model_format = "TORCH_SCRIPT"
    suffix = ".pt"

    def export(
        self,
        module: nn.Module,
        example: dict[str, Tensor],
        path: Path,
        *,
        device: str = "cpu",
        half: bool = False,
        while_waiting: Callable[[], None] | None = None,
    ) -> None:
        """Trace in a fresh interpreter: TorchScript suffixes class names with ``___torch_mangle_N``, N counting every
        trace made in the process, so only a fresh process gives the same bytes from one run to the next.

        ``device``/``half``: where and in which precision to trace (fp16 traces are made on CUDA, where they run);
        either way the saved graph takes its device from its inputs. ``while_waiting``: work for this process while
        the worker imports torch and transformers and traces (the worker is stopped if it raises)."""
        module.eval()
        with tempfile.TemporaryDirectory(prefix="sparsepack-trace-") as tmp:
            job, err_path = Path(tmp) / "job.pt", Path(tmp) / "stderr"
            with open(err_path, "w") as err:  # a file, not a pipe: a chatty worker cannot block on a full pipe
                # started before the job is written, so its imports overlap the save; EOF on its stdin says "ready"
                classes = sorted({type(sub).__module__ for sub in module.modules()})
                proc = subprocess.Popen(
                    [sys.executable, "-m", "sparsepack.packaging.exporter", str(job), str(path), *classes],
                    stdout=subprocess.DEVNULL,
                    stderr=err,
                    stdin=subprocess.PIPE,
                )
                try:
                    _pin_dynamic_classes(module)
                    torch.save({"module": module, "example": example, "device": device, "half": half}, job)
                    assert proc.stdin is not None  # stdin=PIPE
                    proc.stdin.close()
                    if while_waiting is not None:
                        while_waiting()
                    returncode = proc.wait()
                except BaseException:
                    proc.kill()
                    proc.wait()
                    raise
            stderr = err_path.read_text(errors="replace")
        if returncode == _REFUSED:
            raise SparsepackError(stderr.strip().splitlines()[-1])
        if returncode != 0:
            last = (stderr.strip().splitlines() or ["no output"])[-1]
            raise SparsepackError(
                f"TorchScript trace failed: {last}; the model's forward must be traceable with eager attention"
            )

    def load(self, path: Path, device: str = "cpu"):
        """As DJL loads it on an ML node: every tensor mapped onto that node's device."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            loaded = torch.jit.load(str(path), map_location=device)
        loaded.eval()
        return loaded

    def operators(self, path: Path) -> set[str]:
        return graph_operators(self.load(path))


_REFUSED = 2  # the trace worker's exit code for a refusal it explains on its last stderr line


def normalize_torchscript_zip(data: bytes) -> bytes:
    """Rewrite the TorchScript zip with fixed timestamps and a fixed serialization id.

    torch writes a random ``.data/serialization_id`` into every file; libtorch only reads it for logging.
    """
    src = zipfile.ZipFile(io.BytesIO(data))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_STORED) as dst:
        for info in src.infolist():
            payload = src.read(info.filename)
            if info.filename.endswith(".data/serialization_id"):
                payload = b"0" * len(payload)
            fixed = zipfile.ZipInfo(info.filename, date_time=(1980, 1, 1, 0, 0, 0))
            fixed.external_attr = 0o644 << 16
            dst.writestr(fixed, payload)
    return out.getvalue()


def _pin_dynamic_classes(module: nn.Module) -> None:
    """Pickling finds a class by module path; transformers may re-import a custom-code module, leaving the loaded
    model's class a different object than the one at that path. Point the path back at the class in use."""
    for sub in module.modules():
        cls = type(sub)
        mod = sys.modules.get(cls.__module__)
        if (
            cls.__module__.startswith("transformers_modules")
            and mod is not None
            and getattr(mod, cls.__qualname__, None) is not cls
        ):
            setattr(mod, cls.__qualname__, cls)


def _trace_and_save(module: nn.Module, example: dict[str, Tensor], path: Path) -> None:
    module.eval()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(module, (example,), strict=False, check_trace=False)
        make_device_portable(traced)
        buffer = io.BytesIO()
        torch.jit.save(traced, buffer)
    path.write_bytes(normalize_torchscript_zip(buffer.getvalue()))


from .onnx_export import OnnxExporter  # noqa: E402 - needs nothing from this module

EXPORTERS = {"torchscript": TorchScriptExporter, "onnx": OnnxExporter}


def sanitize_dynamic_module_names(module: nn.Module) -> None:
    """Custom-code models live in ``transformers_modules.<org>-<repo>...``; TorchScript writes that name into the
    archive and torch.jit.load cannot parse a '-' or a segment that starts with a digit (a revision hash;
    pytorch#137252). Give those classes names made of identifiers."""

    def ident(segment: str) -> str:
        segment = re.sub(r"[^0-9A-Za-z_]", "_", segment)
        return f"_{segment}" if segment[:1].isdigit() else segment

    for sub in module.modules():
        cls = type(sub)
        if cls.__module__.startswith("transformers_modules"):
            cls.__module__ = ".".join(ident(part) for part in cls.__module__.split("."))


if __name__ == "__main__":
    torch.set_num_threads(1)
    try:  # custom-code classes unpickle from Hugging Face's dynamic-module cache
        from transformers.dynamic_module_utils import init_hf_modules

        init_hf_modules()
    except ImportError:
        pass
    import importlib

    for name in sys.argv[3:]:  # the model's class modules, imported while the parent still writes the job
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001 - unpickling imports it again and reports a real failure
            pass
    sys.stdin.read()  # EOF: the parent has written the job (it started this process before, to overlap the imports)
    job = torch.load(sys.argv[1], weights_only=False)
    sanitize_dynamic_module_names(job["module"])
    module = job["module"].to(job.get("device", "cpu"))
    if job.get("half"):
        module = module.half()
    example = {k: v.to(job.get("device", "cpu")) for k, v in job["example"].items()}
    try:
        _trace_and_save(module, example, Path(sys.argv[2]))
    except SparsepackError as exc:
        print(exc, file=sys.stderr)
        sys.exit(_REFUSED)
