"""``package``, ``verify`` and ``eval``: make artifacts, re-prove them, compare two encoders."""

from __future__ import annotations

from ..errors import ParityError, QualityGateError
from . import exits
from .connection import add_connection_args, connect
from .flags import add_opensearch_version, add_renamed
from .output import err, print_json

FORMATS = ("torchscript", "onnx", "both")
REGISTERABLE_FORMATS = ("torchscript", "onnx", "onnx-int8")
# library argument -> this CLI's flag, for errors that name the argument (exits.with_flag_hint)
FLAG_OF = {"targets": "--opensearch-version", "verify_devices": "--devices", "artifact_format": "--format"}
DEVICES_HELP = "devices the proof runs the saved artifact on (auto: CPU, plus CUDA when visible)"


def add_model_args(p) -> None:
    """The flags of packaging a model, shared by ``package`` and ``release``."""
    p.add_argument("--revision", help="Hugging Face revision (branch, tag or commit)")
    p.add_argument(
        "--trust-remote-code", action="store_true", help="allow models that ship custom code (review it first)"
    )
    p.add_argument("--max-length", type=int, help="document truncation in tokens (default: min(model max, 512))")
    p.add_argument(
        "--prune-ratio", type=float, default=0.0, help="inside the model: keep weights > max x ratio (off by default)"
    )
    add_opensearch_version(
        p,
        "--opensearch",
        default="2.x,3.x",
        metavar="2.x,3.x",
        help="OpenSearch lines the artifact must load on (default 2.x,3.x)",
    )
    p.add_argument(
        "--precision",
        default="fp32",
        choices=("fp32", "fp16"),
        help="fp16: a GPU-only document artifact behind a ranking gate (needs a CUDA device)",
    )
    add_renamed(p, "--devices", "--verify-devices", default="auto", metavar="auto|cpu|cpu,cuda", help=DEVICES_HELP)


def model_kwargs(args) -> dict:
    return {
        "revision": args.revision,
        "trust_remote_code": args.trust_remote_code,
        "max_length": args.max_length,
        "prune_ratio": args.prune_ratio,
        "targets": tuple(t.strip() for t in args.opensearch_version.split(",") if t.strip()),
        "precision": args.precision,
        "verify_devices": args.devices,
    }


def add_parser(subparsers) -> None:
    sp = subparsers.add_parser("package", help="trace a SparseEncoder into ML Commons artifacts and prove parity")
    sp.add_argument("model", help="Hugging Face id or local SparseEncoder directory")
    sp.add_argument("-o", "--output", required=True, help="output directory (written atomically)")
    add_model_args(sp)
    sp.add_argument("--force", action="store_true", help="replace an existing output directory")
    sp.add_argument(
        "--format",
        choices=FORMATS,
        help="document artifact: torchscript (default; any node, GPU too), onnx (faster on CPU nodes), or both",
    )
    sp.add_argument(
        "--quantize",
        choices=("int8",),
        help="also an int8 ONNX artifact, kept only if it passes --quality-gate (implies --format onnx)",
    )
    sp.add_argument(
        "--quality-gate",
        metavar="ndcg=X,recall=Y",
        help="int8 gate vs the fp32 model (default ndcg=0.98,recall=0.98); below it: exit 3",
    )
    sp.add_argument(
        "--onnx-threads",
        type=int,
        metavar="N",
        help="onnxruntime threads per inference on the ML node (default 1; 0: one per core)",
    )
    sp.add_argument(
        "--stats-corpus",
        metavar="FILE",
        help='documents, JSONL {"id", "text"}, whose output weights the manifest records (SEISMIC ceilings fit them)',
    )
    sp.add_argument("--stats-queries", metavar="FILE", help='queries, JSONL {"id", "text"}, likewise')
    sp.add_argument("--json", action="store_true", help="print the manifest to stdout")
    sp.set_defaults(run=run_package, flag_of=FLAG_OF)

    sp = subparsers.add_parser(
        "verify",
        help="re-prove a package's saved artifacts against its source model on this "
        "machine's devices (e.g. a CPU-built package on a GPU machine)",
    )
    sp.add_argument("package", help="package directory (or its manifest.json)")
    sp.add_argument("--model", help="the source model, path or hub id (default: the one the manifest names)")
    sp.add_argument("--devices", default="auto", metavar="auto|cpu|cpu,cuda", help=DEVICES_HELP)
    sp.add_argument("--revision", help="Hugging Face revision of --model (default: the manifest's)")
    sp.add_argument(
        "--trust-remote-code", action="store_true", help="allow models that ship custom code (review it first)"
    )
    sp.add_argument("--json", action="store_true", help="print the report (also when it fails)")
    sp.set_defaults(run=run_verify)

    sp = subparsers.add_parser(
        "eval", help="ranking agreement of two encoders: nDCG@10 and recall@100, the first as truth (JSON)"
    )
    sp.add_argument("truth", help="package dir, model (path or hub id), or deployed:DOC_ID[,QUERY_ID]")
    sp.add_argument("candidate", help="package dir, model, or deployed:DOC_ID[,QUERY_ID] (needs --url)")
    sp.add_argument("--corpus", help='documents, JSONL {"id", "text"} (default: built-in synthetic corpus)')
    sp.add_argument("--queries", help='queries, JSONL {"id", "text"}')
    sp.add_argument("--qrels", help='relevance judgements: JSONL {"query_id", "doc_id", "relevance"} or TREC lines')
    sp.add_argument("--documents", type=int, default=500, help="synthetic corpus size (default 500)")
    sp.add_argument("--num-queries", type=int, default=100, help="synthetic query count (default 100)")
    sp.add_argument("--truth-format", choices=REGISTERABLE_FORMATS, help="which document artifact of a package")
    sp.add_argument("--candidate-format", choices=REGISTERABLE_FORMATS, help="which document artifact of a package")
    sp.add_argument(
        "--quality-gate", metavar="ndcg=X,recall=Y", help="exit 3 when below (at least 500 documents, 100 queries)"
    )
    add_connection_args(sp)
    sp.set_defaults(run=run_eval)


def resolve_format(args) -> str:
    """``--quantize int8`` builds an ONNX artifact: alone, it means ``--format onnx``."""
    if args.format is None and args.quantize:
        err(f"--quantize {args.quantize} builds an ONNX artifact: packaging with --format onnx")
        return "onnx"
    return args.format or "torchscript"


def run_package(args) -> int:
    from ..packaging.input_checks import check_model_source

    check_model_source(args.model)
    artifact_format = resolve_format(args)
    from ..packaging.package import package

    manifest = package(
        args.model,
        args.output,
        force=args.force,
        artifact_format=artifact_format,
        quantize=args.quantize,
        quality_gate=args.quality_gate,
        onnx_threads=args.onnx_threads,
        stats_corpus=args.stats_corpus,
        stats_queries=args.stats_queries,
        **model_kwargs(args),
    )
    if args.json:
        print_json(manifest)
    else:
        _print_summary(manifest, args.output)
    return 0


def _print_summary(manifest: dict, output: str) -> None:
    doc = manifest["parity"]["document"]
    print(
        f"{manifest['name']}: {manifest['mode']}, {manifest['activation']}, max_length {manifest['max_length']}, "
        f"vocab {manifest['vocab_size']}; loads on OpenSearch {', '.join(manifest['compatible_opensearch'])}"
    )
    print(
        f"parity: documents max |d| {doc['max_abs_diff']:.2e} (<= {doc['tolerance']:.0e}) on "
        f"{', '.join(doc.get('devices', ['cpu']))}, queries {'identical' if manifest['parity']['query']['passed'] else 'DIFFER'}"
    )
    if doc.get("quality_gate"):
        gate = doc["quality_gate"]
        print(
            f"fp16 gate vs the fp32 trace on {gate['device']}: nDCG@10 {gate['ndcg_at_10']:.4f}, "
            f"Jaccard {gate['jaccard']:.4f} ({gate['documents']} documents, {gate['queries']} queries); GPU nodes only"
        )
    for art in manifest["artifacts"]:
        print(f"  {art['role']:8s} {art['function_name']:15s} {output}/{art['file']}  sha256 {art['sha256'][:16]}...")


def run_verify(args) -> int:
    from ..packaging.input_checks import check_model_source, check_package_path
    from ..packaging.verify import verify_package

    check_package_path(args.package)
    if args.model:
        check_model_source(args.model)
    try:
        report = verify_package(
            args.package,
            args.model,
            args.devices,
            args.revision,
            args.trust_remote_code,
            log=(lambda m: None) if args.json else err,
        )
    except (ParityError, QualityGateError) as exc:  # the figures still go out, then the one-line error
        if args.json and getattr(exc, "report", None):
            print_json(exc.report)
        raise
    if args.json:
        print_json(report)
        return 0
    for art in report["artifacts"]:
        figures = (
            f"max |d| {art['max_abs_diff']:.1e}"
            if "max_abs_diff" in art
            else f"nDCG@10 {art['quality_gate']['ndcg_at_10']:.4f}"
            if art.get("quality_gate")
            else art.get("checked", "")
        )
        print(f"{art['file']}: {art['format']} on {', '.join(art['devices'])}: {figures}: passed")
    print(f"verified {report['name']} on {', '.join(report['devices'])} in {report['seconds']} s")
    return 0


def run_eval(args) -> int:
    from ..metrics.gate import Gate
    from ..packaging.evaluation import evaluate, load_corpus, resolve_encoder
    from ..registry.predict import predict

    def predictor():
        cluster = connect(args)
        return lambda model_id, texts: predict(cluster, model_id, texts)

    gate = Gate.parse(args.quality_gate) if args.quality_gate else None
    truth = resolve_encoder(args.truth, args.truth_format, predictor)
    candidate = resolve_encoder(args.candidate, args.candidate_format, predictor)
    corpus = load_corpus(
        args.corpus, args.queries, args.qrels, truth.vocab or candidate.vocab, args.documents, args.num_queries
    )
    result = evaluate(truth, candidate, corpus)
    if gate is not None:
        result["gate"] = gate.check(result)
    print_json(result)
    return exits.GATE if gate is not None and not result["gate"]["passed"] else exits.OK
