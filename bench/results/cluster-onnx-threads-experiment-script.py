"""Experiment: ML Commons ingest, TorchScript vs ONNX (session defaults) vs ONNX with serving.properties pinning
onnxruntime to 1 intra-op / 1 inter-op thread (what ML Commons does for libtorch). Also counts the JVM's threads."""
import json, os, shutil, sys, tempfile, time, zipfile, hashlib
from pathlib import Path
sys.path.insert(0, "/work/main/bench")
from common import LONG_DOC, SHORT_DOC, build  # noqa
import cluster as bc  # noqa
from sparsepack.packaging.package import package
from sparsepack.packaging.onnx_export import for_format
from sparsepack.registry import models
from sparsepack.registry.connection import ConnectionOptions, connect
from sparsepack.registry.release import ReleaseOptions, release
from sparsepack.node import cluster as node

kind = sys.argv[1] if len(sys.argv) > 1 else "realistic"
n_short = int(sys.argv[2]) if len(sys.argv) > 2 else 40
rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 2
PORT = 9200
root = Path(tempfile.mkdtemp(prefix="threads-"))
state = node.start("3.6.0", port=PORT, fresh=True, log=lambda m: print(m, file=sys.stderr))
url = state.url
jvm = state.nodes[0].pid
def threads(): return len(os.listdir(f"/proc/{jvm}/task"))
def cpu_s():
    f = open(f"/proc/{jvm}/stat").read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")
try:
    pkg = root / "pkg"
    manifest = package(str(bc._model(kind, root)), pkg, artifact_format="both", log=lambda m: None)
    pkg1 = root / "pkg-1t"
    shutil.copytree(pkg, pkg1)
    m1 = json.loads((pkg1 / "manifest.json").read_text())
    for a in m1["artifacts"]:
        if a["role"] == "document" and a.get("model_format") == "ONNX":
            src = pkg1 / a["file"]
            tmp = src.with_suffix(".tmp")
            with zipfile.ZipFile(src) as zin, zipfile.ZipFile(tmp, "w") as zout:
                for info in zin.infolist():
                    zout.writestr(info, zin.read(info.filename))
                zout.writestr("serving.properties", "option.interOpNumThreads=1\noption.intraOpNumThreads=1\n")
            tmp.replace(src)
            a["sha256"] = hashlib.sha256(src.read_bytes()).hexdigest()
            a["size_bytes"] = src.stat().st_size
    (pkg1 / "manifest.json").write_text(json.dumps(m1, indent=2))
    cl = connect(ConnectionOptions(url=url))
    print("JVM threads before deploys:", threads())
    variants = {"torchscript": (pkg, "torchscript"), "onnx": (pkg, "onnx"), "onnx-1t": (pkg1, "onnx")}
    reports = {}
    for name, (p, fmt) in variants.items():
        reports[name] = release(str(p), ConnectionOptions(url=url), ReleaseOptions(
            group=f"thr-{name}-{time.time_ns()}", progress=False, smoke=False, artifact_format=fmt))
        assert reports[name]["passed"], reports[name].get("error")
        print(f"JVM threads after deploying {name}:", threads(), flush=True)
    rates = {}
    docs = {"short": n_short, "300-word": int(sys.argv[4]) if len(sys.argv) > 4 else max(n_short // 4, 10)}
    for r in range(rounds):
        for label, text in (("short", SHORT_DOC), ("300-word", LONG_DOC)):
            for name in variants:
                fmt = variants[name][1]
                t_before = threads()
                c0, w0 = cpu_s(), time.perf_counter()
                rate = bc.ingest_rate(cl, for_format(manifest, fmt), reports[name]["model_ids"]["document"], docs[label], text)
                cores = (cpu_s() - c0) / (time.perf_counter() - w0)
                rates.setdefault((name, label), []).append(rate)
                print(f"round {r+1} {label:9s} {name:12s} {rate:8.2f} docs/s ({docs[label]} docs, {bc._load()}, threads {t_before}->{threads()}, JVM used {cores:.2f} cores)", flush=True)
    for label in ("short", "300-word"):
        ts = max(rates[("torchscript", label)])
        for name in ("onnx", "onnx-1t"):
            ox = max(rates[(name, label)])
            print(f"best {label:9s} {name:8s} {ox:7.2f} vs torchscript {ts:7.2f}: {ox/ts:.2f}x")
finally:
    node.stop(port=PORT) if hasattr(node, "stop") else None
    shutil.rmtree(root, True)
