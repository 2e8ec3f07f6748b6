"""``sparsepack``: a thin command line over the library."""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from . import __version__
from .errors import SparsepackError


def _err(msg: str) -> None:
    print(f"sparsepack: {msg}", file=sys.stderr, flush=True)


def _print_json(data) -> None:
    print(json.dumps(data, indent=2, default=str))


def _conn_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("connection (flags win over OPENSEARCH_URL, OPENSEARCH_USERNAME, OPENSEARCH_PASSWORD, ...)")
    g.add_argument("--url", help="cluster URL (env OPENSEARCH_URL; default http://localhost:9200)")
    g.add_argument("--username", help="basic-auth user (env OPENSEARCH_USERNAME)")
    g.add_argument("--password", help="basic-auth password (prefer env OPENSEARCH_PASSWORD: flags show in ps)")
    g.add_argument("--api-key", help="API key (env OPENSEARCH_API_KEY)")
    g.add_argument("--ca-certs", help="CA bundle for a private CA (env OPENSEARCH_CA_CERTS)")
    g.add_argument("--client-cert", help="client certificate (PEM)")
    g.add_argument("--client-key", help="client key (PEM)")
    g.add_argument("--insecure", action="store_true", help="skip TLS certificate verification (explicit opt-out)")
    g.add_argument("--aws-region", help="sign requests with AWS SigV4 for Amazon OpenSearch Service")
    g.add_argument("--aws-service", default="es", choices=("es", "aoss"), help="es (domains) or aoss (serverless)")
    g.add_argument("--request-timeout", type=float, default=60.0, help="seconds per HTTP request")


_FIELD_HELP = ("the smoke index's embedding field: rank_features (default) or sparse_vector (SEISMIC, OpenSearch 3.3+; "
               "stored token ids compared, search exact under approximate_threshold)")


def _conn(args):
    from .registry.connection import ConnectionOptions

    return ConnectionOptions.from_env(url=args.url, username=args.username, password=args.password, api_key=args.api_key,
                                      ca_certs=args.ca_certs, client_cert=args.client_cert, client_key=args.client_key,
                                      insecure=args.insecure or None, aws_region=args.aws_region,
                                      aws_service=args.aws_service, timeout=args.request_timeout)


def _package_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--revision", help="Hugging Face revision (branch, tag or commit)")
    p.add_argument("--trust-remote-code", action="store_true", help="allow models that ship custom code (review it first)")
    p.add_argument("--max-length", type=int, help="document truncation in tokens (default: min(model max, 512))")
    p.add_argument("--prune-ratio", type=float, default=0.0, help="inside the model: keep weights > max x ratio (off by default)")
    p.add_argument("--opensearch", default="2.x,3.x", help="OpenSearch lines the trace must load on (default 2.x,3.x)")
    p.add_argument("--precision", default="fp32", choices=("fp32", "fp16"),
                   help="fp16: a GPU-only document artifact behind a ranking gate (needs a CUDA device)")
    p.add_argument("--verify-devices", default="auto", metavar="auto|cpu|cpu,cuda",
                   help="devices the proof runs the saved artifact on (auto: CPU, plus CUDA when visible)")


def _package_kwargs(args) -> dict:
    return {"revision": args.revision, "trust_remote_code": args.trust_remote_code, "max_length": args.max_length,
            "prune_ratio": args.prune_ratio, "targets": tuple(t.strip() for t in args.opensearch.split(",") if t.strip()),
            "precision": args.precision, "verify_devices": args.verify_devices}


def cmd_package(args) -> int:
    from .packaging.manifest import check_model_source

    check_model_source(args.model)
    from .packaging.package import package

    manifest = package(args.model, args.output, force=args.force, artifact_format=args.format, quantize=args.quantize,
                       quality_gate=args.quality_gate, onnx_threads=args.onnx_threads, **_package_kwargs(args))
    if args.json:
        _print_json(manifest)
    else:
        doc = manifest["parity"]["document"]
        print(f"{manifest['name']}: {manifest['mode']}, {manifest['activation']}, max_length {manifest['max_length']}, "
              f"vocab {manifest['vocab_size']}; loads on OpenSearch {', '.join(manifest['compatible_opensearch'])}")
        print(f"parity: documents max |d| {doc['max_abs_diff']:.2e} (<= {doc['tolerance']:.0e}) on "
              f"{', '.join(doc.get('devices', ['cpu']))}, queries {'identical' if manifest['parity']['query']['passed'] else 'DIFFER'}")
        if doc.get("quality_gate"):
            gate = doc["quality_gate"]
            print(f"fp16 gate vs the fp32 trace on {gate['device']}: nDCG@10 {gate['ndcg_at_10']:.4f}, "
                  f"Jaccard {gate['jaccard']:.4f} ({gate['documents']} documents, {gate['queries']} queries); GPU nodes only")
        for art in manifest["artifacts"]:
            print(f"  {art['role']:8s} {art['function_name']:15s} {args.output}/{art['file']}  sha256 {art['sha256'][:16]}...")
    return 0


def cmd_render(args) -> int:
    from .packaging.package import load_manifest
    from .templates import TEMPLATES, list_templates, parse_set_values, render, template_variables

    if args.list:
        for t in list_templates(args.template_dir):
            print(f"{t['name']:18s} {t['description']}\n{'':18s} variables: {', '.join(t['variables'])}")
        return 0
    if not args.template:
        raise SparsepackError("name a template (see `sparsepack render --list`)")
    manifest = load_manifest(args.manifest)[0] if args.manifest else None
    values = parse_set_values(args.set)
    known = sorted(set(template_variables(args.template, args.template_dir)) | set(TEMPLATES[args.template].defaults)
                   ) if args.template in TEMPLATES else []
    unknown = sorted(set(values) - set(known)) if known else []
    if unknown:
        raise SparsepackError(f"--set {', '.join(unknown)}: template {args.template} has no such variable; it takes "
                              f"{', '.join(known)}")
    body = render(args.template, manifest, args.target_version, template_dir=args.template_dir, **values)
    text = json.dumps(body, indent=2) + "\n"
    if args.output:
        tmp = Path(args.output).with_suffix(".tmp")
        tmp.write_text(text)
        tmp.replace(args.output)
    else:
        sys.stdout.write(text)
    return 0


def cmd_node(args) -> int:
    from .node import cluster

    if args.node_command == "start":
        state = cluster.start(args.version, port=args.port, heap=args.heap, nodes=args.nodes, fresh=args.fresh,
                              timeout=args.timeout, secure=args.secure, log=_err)
        out = {"url": state.url, "version": state.version, "nodes": [n.name for n in state.nodes]}
        if state.secure:
            from .node import secure

            out["credentials_file"] = str(secure.credentials_path(cluster.cluster_dir(Path(state.home), args.port)))
        _print_json(out) if args.json else print(state.url)
        if state.secure and not args.json:
            _err(f"users and passwords: {out['credentials_file']} (0600); CA: pass --ca-certs to the other commands")
    elif args.node_command == "stop":
        return 0 if cluster.stop(args.port, log=_err) else 1
    elif args.node_command == "status":
        st = cluster.status(args.port)
        _print_json(st)
        return 0 if st.get("healthy") else 1
    elif args.node_command == "logs":
        ndir = cluster.cluster_dir(cluster.default_home(), args.port) / args.node
        if not ndir.is_dir():
            raise SparsepackError(f"no sparsepack node {args.node} on port {args.port} (no {ndir}); check --port and --node")
        print(cluster.log_tail(ndir, args.lines).replace(" | ", "\n"))
    return 0


def cmd_preflight(args) -> int:
    from .packaging.package import load_manifest
    from .registry import preflight
    from .registry.connection import connect

    manifest = load_manifest(args.manifest)[0] if args.manifest else None
    cl = connect(_conn(args))
    pf = preflight.run_preflight(cl, manifest)
    if not pf.ok and args.apply_settings:
        preflight.apply_settings(cl, pf.version)
        pf = preflight.run_preflight(cl, manifest)
    if args.json:
        _print_json(pf.as_dict())
    else:
        print(f"OpenSearch {pf.version}; plugins: {', '.join(pf.plugins)}; ML nodes: {len(pf.ml_nodes)}")
        for b in pf.blockers:
            print(f"  BLOCKER: {b}")
        print("preflight passed" if pf.ok else "preflight failed")
    return 0 if pf.ok else 4


def cmd_serve(args) -> int:
    from .serve import ArtifactServer

    if not 0 < args.port < 65536:
        raise SparsepackError(f"--port {args.port} is out of range; use 1-65535")
    try:
        server = ArtifactServer(args.package, args.port, args.bind, log=_err)
    except OSError as exc:
        raise SparsepackError(f"cannot listen on {args.bind}:{args.port}: {exc.strerror}; pick another --port") from exc
    print(f"serving {len(server.files) - 1} artifact(s) of {args.package} at {server.url}/ "
          f"(release with --artifact-base-url {server.url}); Ctrl-C stops", flush=True)
    try:
        server.serve_forever()
    finally:
        server.stop()
    return 0


def _release_opts(args):
    from .registry.release import ReleaseOptions

    return ReleaseOptions(group=args.group, clear_previous=args.clear_previous,
                          node_ids=[n for n in (args.nodes or "").split(",") if n], node_attr=args.node_attr,
                          timeout=args.timeout, keep_on_failure=args.keep_on_failure, keep=args.keep,
                          apply_settings=args.apply_settings, progress=not args.json, field_type=args.field_type,
                          switch_pipelines=_switch_list(args.switch_pipelines), artifact_format=args.format,
                          artifact_base_url=args.artifact_base_url, access_mode=args.access_mode,
                          backend_roles=_backend_roles(args))


def _backend_roles(args) -> list[str]:
    """Checked before anything runs: a bad combination is bad input (exit 2), not a failed register step."""
    from .templates import _check_access_mode

    roles = [r.strip() for r in (args.backend_roles or "").split(",") if r.strip()]
    try:
        _check_access_mode(args.access_mode, roles)
    except SparsepackError as exc:
        raise SparsepackError(f"--access-mode/--backend-roles: {exc}") from None
    return roles


def _switch_list(value: str | None) -> list[str]:
    names = [n.strip() for n in (value or "").split(",") if n.strip()]
    if "all" in names and len(names) > 1:
        raise SparsepackError("--switch-pipelines takes all, or pipeline names, not both")
    return names


def _emit_report(report: dict, args) -> int:
    if getattr(args, "report", None):
        Path(args.report).write_text(json.dumps(report, indent=2, default=str) + "\n")
    if args.json:
        _print_json(report)
    else:
        for name, step in report["steps"].items():
            print(f"  {name:16s} {'ok' if step.get('passed') else 'FAILED'}  {step.get('seconds', 0):.1f}s")
        if report.get("model_ids"):
            print(f"  model ids: {report['model_ids']}")
        for change in report["steps"].get("switch_pipelines", {}).get("pipelines", []):
            ids = change["model_ids"]
            print(f"  {change['kind']} pipeline {change['name']}: {', '.join(ids['before'])} -> {', '.join(ids['after'])}")
        for warning in report.get("warnings", []):
            _err(f"warning: {warning}")
        if report.get("kept"):
            _err(f"kept the new version {report['kept']['model_ids']}: {report['kept']['why']}")
    if not report["passed"]:
        _err(f"release failed at {report['failed_step']}: {report.get('error', '')}")
        return report.get("exit_code", 4)
    return 0


def cmd_release(args) -> int:
    from .packaging.manifest import check_release_target

    # Bad input is refused before the ML libraries load (seconds): the target, the URL, the options.
    check_release_target(args.target)
    conn, opts = _conn(args), _release_opts(args)
    from .registry.release import release

    kwargs = _package_kwargs(args)
    report = release(args.target, conn, opts, package_dir=args.package_dir, **kwargs)
    return _emit_report(report, args)


def cmd_smoke(args) -> int:
    from .packaging.package import load_manifest
    from .registry.connection import connect
    from .registry.preflight import run_preflight
    from .registry.release import Report, run_smoke

    from .packaging.onnx_export import for_format

    manifest, root = load_manifest(args.package)
    manifest = for_format(manifest, args.format)
    conn = _conn(args)
    report = Report(args.package, conn)
    cl = connect(conn)
    version = cl.info()["version"]["number"]
    from .registry.smoke import check_field_type

    check_field_type(args.field_type, version)  # bad input: refused before anything is created
    ids = {"document": args.document_model}
    if args.query_model:
        ids["query"] = args.query_model
    encode_query = None
    if args.model:
        from .packaging.introspect import load_encoder

        enc = load_encoder(args.model)
        encode_query = lambda texts: enc.encode_query(texts, convert_to_tensor=True).to_dense()  # noqa: E731
    try:
        run_smoke(cl, manifest, root, version, ids, args.keep, report, encode_query, args.field_type)
        report.data["passed"] = True
    except SparsepackError as exc:
        report.data["error"] = str(exc)
    report.data["cluster"] = {"version": version, "ml_nodes": run_preflight(cl).ml_nodes}
    report.data["model_ids"] = ids
    return _emit_report(report.data, args)


def cmd_eval(args) -> int:
    from .evaluate import Gate, evaluate, load_corpus, resolve_encoder
    from .registry.connection import connect

    gate = Gate.parse(args.quality_gate) if args.quality_gate else None
    a = resolve_encoder(args.truth, args.truth_format, lambda: connect(_conn(args)))
    b = resolve_encoder(args.candidate, args.candidate_format, lambda: connect(_conn(args)))
    corpus = load_corpus(args.corpus, args.queries, args.qrels, a.vocab or b.vocab, args.documents, args.num_queries)
    result = evaluate(a, b, corpus)
    if gate is not None:
        result["gate"] = gate.check(result)
    _print_json(result)
    return 3 if gate is not None and not result["gate"]["passed"] else 0


def cmd_verify(args) -> int:
    from .errors import ParityError
    from .packaging.manifest import check_model_source, check_package_path
    from .packaging.verify import verify_package

    check_package_path(args.package)
    if args.model:
        check_model_source(args.model)
    try:
        report = verify_package(args.package, args.model, args.devices, args.revision, args.trust_remote_code,
                                log=(lambda m: None) if args.json else _err)
    except ParityError as exc:  # QualityGateError too: the figures still go out, then the one-line error
        if args.json and getattr(exc, "report", None):
            _print_json(exc.report)
        raise
    if args.json:
        _print_json(report)
    else:
        for art in report["artifacts"]:
            figures = (f"max |d| {art['max_abs_diff']:.1e}" if "max_abs_diff" in art
                       else f"nDCG@10 {art['quality_gate']['ndcg_at_10']:.4f}" if art.get("quality_gate") else art.get("checked", ""))
            print(f"{art['file']}: {art['format']} on {', '.join(art['devices'])}: {figures}: passed")
        print(f"verified {report['name']} on {', '.join(report['devices'])} in {report['seconds']} s")
    return 0


def cmd_list(args) -> int:
    from .registry import models
    from .registry.connection import connect

    rows = models.list_models(connect(_conn(args)), args.group)
    if args.json:
        _print_json(rows)
    else:
        for r in rows:
            print(f"{r['model_id']}  {r['state'] or '?':18s} {r['function_name'] or '?':16s} {r['name']} v{r['version']}")
    return 0


def cmd_undeploy(args) -> int:
    from .registry import models
    from .registry.connection import connect

    from .registry.references import refuse_if_used

    cl = connect(_conn(args))
    refuse_if_used(cl, args.model_ids, f"undeploy {', '.join(args.model_ids)} (nothing was undeployed)")
    for mid in args.model_ids:
        models.undeploy(cl, mid, args.timeout)
        print(f"undeployed {mid}")
    return 0


def cmd_delete(args) -> int:
    from .registry import models
    from .registry.connection import connect

    from .registry.references import refuse_if_used

    cl = connect(_conn(args))
    refuse_if_used(cl, args.model_ids, f"delete {', '.join(args.model_ids)} (nothing was deleted)")
    for mid in args.model_ids:
        models.delete(cl, mid, args.timeout)
        print(f"deleted {mid}")
    return 0


def cmd_migrate(args) -> int:
    """Bad input is refused before connecting; the cluster's refusals and failed steps exit 4 (as release)."""
    import signal

    from .migrate import MigrationError, MigrationOptions, finish, migrate, rollback
    from .registry.connection import connect

    if args.rollback and args.finish:
        raise SparsepackError("--rollback and --finish exclude each other; pick one")
    if args.force and not args.rollback:
        raise SparsepackError("--force applies only to --rollback; drop it")
    if not (args.rollback or args.finish) and not args.document_model:
        raise SparsepackError("migrate needs --document-model MODEL_ID (or --rollback / --finish)")
    slices = args.slices
    if slices != "auto" and not (slices.isdigit() and int(slices) > 0):
        raise SparsepackError(f"--slices {slices!r}: use auto or a positive integer")
    if args.requests_per_second is not None and args.requests_per_second <= 0:
        raise SparsepackError("--requests-per-second must be positive (leave it out for no throttle)")
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    cl = connect(_conn(args))
    opts = MigrationOptions(new_index=args.new_index, slices=slices, requests_per_second=args.requests_per_second,
                            cleanup=args.cleanup, progress=None if args.json else _err)
    try:
        if args.rollback:
            report = rollback(cl, args.alias, force=args.force).as_dict()
        elif args.finish:
            report = finish(cl, args.alias).as_dict()
        else:
            report = migrate(cl, args.alias, args.document_model, args.query_model, opts).as_dict()
    except KeyboardInterrupt:
        _err("interrupted; the copy goes on on the cluster: re-run the same command to continue it")
        return 130
    except MigrationError as exc:
        report = {"alias": args.alias, "passed": False, "error": str(exc), "failed_step": exc.step,
                  "alias_on": exc.alias_on, "details": exc.details}
    if args.report:
        Path(args.report).write_text(json.dumps(report, indent=2, default=str) + "\n")
    if args.json:
        _print_json(report)
    elif report["passed"]:
        for key in ("old_index", "new_index", "alias_on", "seconds_blocked", "pipelines", "reindex", "carried_over"):
            if report.get(key) not in (None, {}, []):
                print(f"  {key}: {json.dumps(report[key], default=str)}")
    if not report["passed"]:
        _err(f"migrate failed at {report['failed_step']}: {report['error']} (alias {args.alias} serves from "
             f"{report.get('alias_on')})")
        return 4
    return 0


def cmd_demo(args) -> int:
    from .demo import DemoSpec, build_demo_model, summary_lines
    from .node import cluster
    from .registry.connection import ConnectionOptions
    from .registry.release import ReleaseOptions, release

    work = Path(args.workdir)
    model_dir = work / "demo-model"
    if not (model_dir / "modules.json").exists():
        _err(f"building the demo model (random-weight BERT, offline) in {model_dir}")
        build_demo_model(model_dir, DemoSpec())
    url = args.url
    if not url:
        state = cluster.start(args.version, port=args.port, log=_err)
        url = state.url
    report = release(str(model_dir), ConnectionOptions.from_env(url=url), ReleaseOptions(progress=False, clear_previous=True),
                     package_dir=str(work / "demo-package"), targets=("2.x", "3.x"))
    args.report = args.report or str(work / "report.json")
    code = _emit_report(report, args)
    if not args.json:
        print(f"cluster {url} (OpenSearch {report.get('cluster', {}).get('version', '?')}); package {work / 'demo-package'}; "
              f"JSON report {args.report}")
        if report["passed"]:
            print("\n".join(summary_lines(report, work / "demo-package", url, None if args.url else args.port)))
    return code


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sparsepack", description="Get OpenSearch neural sparse models into production.")
    p.add_argument("--version", action="version", version=f"sparsepack {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    sp = sub.add_parser("package", help="trace a SparseEncoder into ML Commons artifacts and prove parity")
    sp.add_argument("model", help="Hugging Face id or local SparseEncoder directory")
    sp.add_argument("-o", "--output", required=True, help="output directory (written atomically)")
    _package_args(sp)
    sp.add_argument("--force", action="store_true", help="replace an existing output directory")
    sp.add_argument("--format", default="torchscript", choices=("torchscript", "onnx", "both"),
                    help="document artifact: torchscript (any node, GPU too), onnx (faster on CPU nodes), or both")
    sp.add_argument("--quantize", choices=("int8",), help="also an int8 ONNX artifact (needs --format onnx or both), "
                                                          "written only if it ranks like the fp32 model (--quality-gate)")
    sp.add_argument("--quality-gate", metavar="ndcg=X,recall=Y", help="int8 gate vs the fp32 model on 500 documents and "
                                                                      "100 queries (default ndcg=0.98,recall=0.98); below: exit 3")
    sp.add_argument("--onnx-threads", type=int, metavar="N", help="onnxruntime threads per inference that each ONNX zip "
                    "sets on the ML node (default 1, as ML Commons runs libtorch, so concurrent predicts share the "
                    "cores; 0: onnxruntime's default, a thread per core)")
    sp.add_argument("--json", action="store_true", help="print the manifest to stdout")
    sp.set_defaults(func=cmd_package)

    sp = sub.add_parser("render", help="render an ML Commons / neural-search body from a template")
    sp.add_argument("template", nargs="?")
    sp.add_argument("--manifest", help="package manifest.json (or its directory)")
    sp.add_argument("--target-version", default="3.8", help="OpenSearch version the body is for (default: newest 3.x)")
    sp.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="template variable (JSON or string)")
    sp.add_argument("--template-dir", help="directory whose NAME.json.j2 files override the built-in templates")
    sp.add_argument("-o", "--output", help="write to this file instead of stdout")
    sp.add_argument("--list", action="store_true", help="list templates and their variables")
    sp.set_defaults(func=cmd_render)

    sp = sub.add_parser("node", help="a local OpenSearch node with ML Commons and neural-search")
    nsub = sp.add_subparsers(dest="node_command", required=True)
    for name in ("start", "stop", "status", "logs"):
        n = nsub.add_parser(name)
        n.add_argument("--port", type=int, default=9200)
        if name == "start":
            n.add_argument("--version", default=None, help="3.6.0 (default), 2.19.6, or 2.19.1 (the secured line)")
            n.add_argument("--secure", action="store_true",
                           help="security plugin: TLS on HTTP and transport with a generated CA, admin and "
                                "sparsepack-release users (credentials.json in the cluster folder); OpenSearch 2.19.1")
            n.add_argument("--heap", default="1g")
            n.add_argument("--nodes", type=int, default=1, help="1 + (N-1) dedicated ml nodes with attribute gpu=true")
            n.add_argument("--fresh", action="store_true", help="discard the cluster's data (models, indices) first")
            n.add_argument("--timeout", type=float, default=240.0,
                           help="seconds for the JVMs' pid files and a healthy cluster (default 240)")
            n.add_argument("--json", action="store_true")
        if name == "logs":
            n.add_argument("--node", default="node-0")
            n.add_argument("--lines", type=int, default=40)
    sp.set_defaults(func=cmd_node)

    sp = sub.add_parser("preflight", help="check a cluster can register and deploy a package")
    _conn_args(sp)
    sp.add_argument("--manifest")
    sp.add_argument("--apply-settings", action="store_true", help="apply the cluster-settings template if anything blocks")
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(func=cmd_preflight)

    for name, func, helptext in (("release", cmd_release, "package (if given a model), preflight, register, deploy, smoke"),):
        sp = sub.add_parser(name, help=helptext)
        sp.add_argument("target", help="model id/path, or a package directory")
        _conn_args(sp)
        _package_args(sp)
        sp.add_argument("--package-dir", help="where to package a model (default ./NAME-sparsepack)")
        sp.add_argument("--artifact-base-url", metavar="URL",
                        help="the package's zips are hosted at URL/<file>: the cluster downloads them (checked against "
                             "the manifest's sha256) instead of sparsepack uploading chunks; needs a package directory")
        sp.add_argument("--format", choices=("torchscript", "onnx", "onnx-int8"),
                        help="document artifact to register (and to package, given a model): torchscript (default; GPU "
                             "nodes too) or onnx (CPU nodes); a package holding both registers its first unless told")
        sp.add_argument("--group", help="model group name (default NAME-sparsepack)")
        sp.add_argument("--access-mode", choices=("public", "private", "restricted"),
                        help="a new model group's access (clusters with plugins.ml_commons.model_access_control_enabled); "
                             "an existing group keeps its own")
        sp.add_argument("--backend-roles", metavar="A,B", help="with --access-mode restricted: the backend roles that may "
                                                                 "see and deploy the group's models")
        sp.add_argument("--clear-previous", action="store_true",
                        help="last step, once the new version passed: undeploy and delete the group's other models "
                             "(refused while a pipeline or index uses them)")
        sp.add_argument("--switch-pipelines", metavar="all|NAME,...",
                        help="after the smoke test: point these ingest/search pipelines (all: every one using a previous "
                             "version) at the new version, verify each, then clear")
        sp.add_argument("--nodes", help="deploy only on these node ids (comma-separated)")
        sp.add_argument("--node-attr", help="deploy only on nodes with this attribute, e.g. gpu=true")
        sp.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for register/deploy tasks")
        sp.add_argument("--keep-on-failure", action="store_true", help="do not roll back what this run created")
        sp.add_argument("--keep", action="store_true", help="keep the smoke test's index and pipelines")
        sp.add_argument("--field-type", choices=("rank_features", "sparse_vector"), default="rank_features", help=_FIELD_HELP)
        sp.add_argument("--apply-settings", action="store_true", help="apply missing ML Commons settings")
        sp.add_argument("--report", help="also write the JSON report to this file")
        sp.add_argument("--json", action="store_true", help="print the JSON report")
        sp.set_defaults(func=func)

    sp = sub.add_parser("smoke", help="smoke-test deployed models against a package")
    sp.add_argument("package", help="package directory")
    sp.add_argument("--document-model", required=True)
    sp.add_argument("--query-model")
    sp.add_argument("--model", help="source model: also compare queries with its encode_query")
    sp.add_argument("--format", choices=("torchscript", "onnx", "onnx-int8"), help="the package's document artifact the model was "
                                                                      "registered from (default: the package's first)")
    sp.add_argument("--keep", action="store_true")
    sp.add_argument("--field-type", choices=("rank_features", "sparse_vector"), default="rank_features", help=_FIELD_HELP)
    sp.add_argument("--report")
    sp.add_argument("--json", action="store_true")
    _conn_args(sp)
    sp.set_defaults(func=cmd_smoke)

    sp = sub.add_parser("eval", help="ranking agreement of two encoders: nDCG@10 and recall@100, the first as truth (JSON)")
    sp.add_argument("truth", help="package dir, model (path or hub id), or deployed:DOC_ID[,QUERY_ID]")
    sp.add_argument("candidate", help="package dir, model, or deployed:DOC_ID[,QUERY_ID] (needs --url)")
    sp.add_argument("--corpus", help="documents, JSONL {\"id\", \"text\"} (default: built-in synthetic corpus)")
    sp.add_argument("--queries", help="queries, JSONL {\"id\", \"text\"}")
    sp.add_argument("--qrels", help="relevance judgements: JSONL {\"query_id\", \"doc_id\", \"relevance\"} or TREC lines")
    sp.add_argument("--documents", type=int, default=500, help="synthetic corpus size (default 500)")
    sp.add_argument("--num-queries", type=int, default=100, help="synthetic query count (default 100)")
    sp.add_argument("--truth-format", choices=("torchscript", "onnx", "onnx-int8"), help="which document artifact of a package")
    sp.add_argument("--candidate-format", choices=("torchscript", "onnx", "onnx-int8"), help="which document artifact of a package")
    sp.add_argument("--quality-gate", metavar="ndcg=X,recall=Y", help="exit 3 when below (at least 500 documents, 100 queries)")
    _conn_args(sp)
    sp.set_defaults(func=cmd_eval)

    sp = sub.add_parser("verify", help="re-prove a package's saved artifacts against its source model on this "
                                       "machine's devices (e.g. a CPU-built package on a GPU machine)")
    sp.add_argument("package", help="package directory (or its manifest.json)")
    sp.add_argument("--model", help="the source model, path or hub id (default: the one the manifest names)")
    sp.add_argument("--devices", default="auto", metavar="auto|cpu|cpu,cuda", help="auto: CPU, plus CUDA when visible")
    sp.add_argument("--revision", help="Hugging Face revision of --model (default: the manifest's)")
    sp.add_argument("--trust-remote-code", action="store_true", help="allow models that ship custom code (review it first)")
    sp.add_argument("--json", action="store_true", help="print the report (also when it fails)")
    sp.set_defaults(func=cmd_verify)

    sp = sub.add_parser("serve", help="serve a package's artifacts read-only over HTTP, for URL registration")
    sp.add_argument("package", help="package directory")
    sp.add_argument("--port", type=int, default=8000)
    sp.add_argument("--bind", default="127.0.0.1", help="address to listen on (default loopback only)")
    sp.set_defaults(func=cmd_serve)

    sp = sub.add_parser("list", help="list models")
    _conn_args(sp)
    sp.add_argument("--group", help="only this model group id")
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(func=cmd_list)
    for name, func in (("undeploy", cmd_undeploy), ("delete", cmd_delete)):
        sp = sub.add_parser(name, help=f"{name} models by id")
        sp.add_argument("model_ids", nargs="+")
        sp.add_argument("--timeout", type=float, default=120.0)
        _conn_args(sp)
        sp.set_defaults(func=func)

    sp = sub.add_parser("migrate", help="move an alias's documents to a new model: new index, reindex, carry-over, "
                                        "verify, atomic alias swap (--rollback, --finish afterwards)")
    sp.add_argument("alias", help="the alias the application reads and writes through")
    sp.add_argument("--document-model", help="model id of the new document model")
    sp.add_argument("--query-model", help="model id of the new query model (default: the document model, bi-encoder)")
    sp.add_argument("--slices", default="auto", help="reindex slices: auto (one per shard) or N")
    sp.add_argument("--requests-per-second", type=float, help="throttle the reindex (default: none)")
    sp.add_argument("--new-index", help="name of the new index (default ALIAS-<short model id>)")
    sp.add_argument("--cleanup", action="store_true", help="on failure, remove the new index and its pipeline copies")
    sp.add_argument("--rollback", action="store_true", help="swap the alias back to the old index, carrying back writes")
    sp.add_argument("--force", action="store_true", help="with --rollback: roll back even if writes cannot be carried back")
    sp.add_argument("--finish", action="store_true", help="delete the old index and the pipelines only it used")
    sp.add_argument("--report", help="also write the JSON report to this file")
    sp.add_argument("--json", action="store_true", help="print the JSON report")
    _conn_args(sp)
    sp.set_defaults(func=cmd_migrate)

    sp = sub.add_parser("demo", help="build the offline demo model, package it, start the local node, release, report")
    sp.add_argument("--workdir", default=os.environ.get("SPARSEPACK_DEMO_DIR", "/tmp/sparsepack-demo"))
    sp.add_argument("--version", default="3.6.0")
    sp.add_argument("--port", type=int, default=9200)
    sp.add_argument("--url", help="use this cluster instead of starting the local node")
    sp.add_argument("--report")
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(func=cmd_demo)
    return p


def _quiet_libraries() -> None:
    """Model loading prints progress bars and advisories on stdout/stderr; keep the CLI's output ours."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import logging

    logging.getLogger("sentence_transformers").setLevel(logging.ERROR)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _quiet_libraries()
    try:
        return args.func(args)
    except SparsepackError as exc:
        _err(f"error: {exc}")
        return exc.exit_code
    except KeyboardInterrupt:
        _err("interrupted")
        return 130
    except BrokenPipeError:  # output piped into head & co.
        sys.stderr.close()
        return 0
    except Exception as exc:  # noqa: BLE001 - one line for users, the traceback on request
        if os.environ.get("SPARSEPACK_DEBUG"):
            raise
        _err(f"unexpected error: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''} "
             f"(set SPARSEPACK_DEBUG=1 for the traceback)")
        return 1


if __name__ == "__main__":
    sys.exit(main())
