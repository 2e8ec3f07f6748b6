"""``release``, ``smoke`` and ``preflight``: get a package onto a cluster and prove it serves."""

from __future__ import annotations

from ..errors import SparsepackError
from . import exits
from .connection import add_connection_args, connect, connection_options
from .inputs import load_manifest_data
from .output import emit_report, print_json
from .package import FLAG_OF, REGISTERABLE_FORMATS, add_model_args, model_kwargs

FIELD_HELP = "the smoke index's field: rank_features (default), sparse_vector (SEISMIC, 3.3+) or semantic (3.1+)"
FIELD_TYPES = ("rank_features", "sparse_vector", "semantic")
RELEASE_FLAG_OF = {
    **FLAG_OF,
    "node_ids": "--nodes",
    "group": "--group",
    "timeout": "--timeout",
    "allow_mixed_vectors": "--allow-mixed-vectors",
}


def add_parser(subparsers) -> None:
    sp = subparsers.add_parser("release", help="package (if given a model), preflight, register, deploy, smoke")
    sp.add_argument("target", help="model id/path, or a package directory")
    add_connection_args(sp)
    add_model_args(sp)
    sp.add_argument("--package-dir", help="where to package a model (default ./NAME-sparsepack)")
    sp.add_argument(
        "--artifact-base-url",
        metavar="URL",
        help="the cluster downloads the zips from URL/<file> (sha256-checked) instead of uploads; needs a package",
    )
    sp.add_argument(
        "--format",
        choices=REGISTERABLE_FORMATS,
        help="document artifact to register: torchscript (default; GPU nodes too) or onnx (CPU nodes)",
    )
    sp.add_argument("--group", metavar="NAME", help="model group name (default NAME-sparsepack)")
    sp.add_argument(
        "--access-mode",
        choices=("public", "private", "restricted"),
        help="a new model group's access, with model access control on; an existing group keeps its own",
    )
    sp.add_argument(
        "--backend-roles",
        metavar="A,B",
        help="with --access-mode restricted: the backend roles that may see and deploy the group's models",
    )
    sp.add_argument(
        "--clear-previous",
        action="store_true",
        help="once the new version passed: undeploy and delete the group's other models (unless in use)",
    )
    sp.add_argument(
        "--switch-pipelines",
        metavar="all|NAME,...",
        help="after the smoke test: point these pipelines (all: every one on a previous version) at the new one",
    )
    sp.add_argument(
        "--allow-mixed-vectors",
        action="store_true",
        help="switch pipelines even of indices whose documents another model encoded (default: refused)",
    )
    sp.add_argument(
        "--migrate",
        metavar="ALIAS,...",
        help="after the switch: migrate these aliases to the new version, as `sparsepack migrate` does",
    )
    sp.add_argument("--nodes", metavar="ID,...", help="deploy only on these node ids (comma-separated)")
    sp.add_argument("--node-attr", help="deploy only on nodes with this attribute, e.g. gpu=true")
    sp.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for register/deploy tasks")
    sp.add_argument("--keep-on-failure", action="store_true", help="do not roll back what this run created")
    sp.add_argument("--keep", action="store_true", help="keep the smoke test's index and pipelines")
    sp.add_argument("--field-type", choices=FIELD_TYPES, default="rank_features", help=FIELD_HELP)
    sp.add_argument("--apply-settings", action="store_true", help="apply missing ML Commons settings")
    sp.add_argument("--report", help="also write the JSON report to this file")
    sp.add_argument("--json", action="store_true", help="print the JSON report")
    sp.set_defaults(run=run_release, flag_of=RELEASE_FLAG_OF)

    sp = subparsers.add_parser("smoke", help="smoke-test deployed models against a package")
    sp.add_argument("package", help="package directory")
    sp.add_argument("--document-model", required=True, help="model id of the deployed document encoder")
    sp.add_argument("--query-model", help="model id of the deployed query encoder (bi-encoders)")
    sp.add_argument("--model", help="source model: also compare queries with its encode_query")
    sp.add_argument(
        "--format",
        choices=REGISTERABLE_FORMATS,
        help="the package's document artifact the model was registered from (default: the package's first)",
    )
    sp.add_argument("--keep", action="store_true", help="keep the smoke test's index and pipelines")
    sp.add_argument("--field-type", choices=FIELD_TYPES, default="rank_features", help=FIELD_HELP)
    sp.add_argument("--report", help="also write the JSON report to this file")
    sp.add_argument("--json", action="store_true", help="print the JSON report")
    add_connection_args(sp)
    sp.set_defaults(run=run_smoke)

    sp = subparsers.add_parser("preflight", help="check a cluster can register and deploy a package")
    add_connection_args(sp)
    sp.add_argument("--manifest", help="package manifest.json (or its directory) to check against")
    sp.add_argument(
        "--apply-settings", action="store_true", help="apply the cluster-settings template if anything blocks"
    )
    sp.add_argument("--json", action="store_true", help="print the preflight result as JSON")
    sp.set_defaults(run=run_preflight)


def _split(value: str | None) -> list[str]:
    return [n.strip() for n in (value or "").split(",") if n.strip()]


def _backend_roles(args) -> list[str]:
    """Checked before anything runs: a bad combination is bad input (exit 2), not a failed register step."""
    from ..templates import check_access_mode

    roles = _split(args.backend_roles)
    try:
        check_access_mode(args.access_mode, roles)
    except SparsepackError as exc:
        raise SparsepackError(f"--access-mode/--backend-roles: {exc}") from None
    return roles


def _switch_list(value: str | None) -> list[str]:
    names = _split(value)
    if "all" in names and len(names) > 1:
        raise SparsepackError("--switch-pipelines takes all, or pipeline names, not both")
    return names


def _release_options(args):
    from ..rollout.options import ReleaseOptions

    return ReleaseOptions(
        group=args.group,
        clear_previous=args.clear_previous,
        node_ids=_split(args.nodes),
        node_attr=args.node_attr,
        timeout=args.timeout,
        keep_on_failure=args.keep_on_failure,
        keep=args.keep,
        apply_settings=args.apply_settings,
        progress=not args.json,
        field_type=args.field_type,
        switch_pipelines=_switch_list(args.switch_pipelines),
        artifact_format=args.format,
        artifact_base_url=args.artifact_base_url,
        access_mode=args.access_mode,
        backend_roles=_backend_roles(args),
        migrate_aliases=_split(args.migrate),
        allow_mixed_vectors=args.allow_mixed_vectors,
    )


def run_release(args) -> int:
    from ..packaging.input_checks import check_release_target

    # Bad input is refused before the ML libraries load (seconds): the target, the URL, the options.
    check_release_target(args.target)
    conn, opts = connection_options(args), _release_options(args)
    from ..rollout.run import release

    report = release(args.target, conn, opts, package_dir=args.package_dir, **model_kwargs(args))
    if report.get("error_parameter"):
        report["error"] = exits.message_with_flag(report["error"], report["error_parameter"], args)
    return emit_report(report, args)


def run_smoke(args) -> int:
    from ..contract.package_dir import load_package
    from ..registry.preflight import run_preflight
    from ..registry.smoke import check_field_type
    from ..rollout.report import Report
    from ..rollout.steps import run_smoke as smoke_test

    package = load_package(args.package)
    manifest, root = package.for_format(args.format).to_dict(), package.package_root  # the release steps read the dict
    report = Report(args.package, connection_options(args))
    cl = connect(args)
    version = cl.info()["version"]["number"]
    check_field_type(args.field_type, version)  # bad input: refused before anything is created
    ids = {"document": args.document_model}
    if args.query_model:
        ids["query"] = args.query_model
    encode_query = None
    if args.model:
        from ..packaging.introspect import load_encoder

        enc = load_encoder(args.model)
        encode_query = lambda texts: enc.encode_query(texts, convert_to_tensor=True).to_dense()  # noqa: E731
    try:
        smoke_test(cl, manifest, root, version, ids, args.keep, report, encode_query, args.field_type)
        report.mark_passed()
    except SparsepackError as exc:
        report.record_failure(str(exc), exits.exit_code_for(exc))
    report.record_cluster(version, run_preflight(cl).ml_nodes)
    report.record_model_ids(ids)
    return emit_report(report.as_dict(), args)


def run_preflight(args) -> int:
    from ..registry import preflight

    manifest = load_manifest_data(args.manifest) if args.manifest else None
    cl = connect(args)
    pf = preflight.run_preflight(cl, manifest)
    if args.apply_settings and pf.fixable:
        preflight.apply_settings(cl, pf.version, **pf.fixes())
        pf = preflight.run_preflight(cl, manifest)
    if args.json:
        print_json(pf.as_dict())
    else:
        print(f"OpenSearch {pf.version}; plugins: {', '.join(pf.plugins)}; ML nodes: {len(pf.ml_nodes)}")
        for b in pf.blockers:
            print(f"  BLOCKER: {b.message}")
        print("preflight passed" if pf.ok else "preflight failed")
    return exits.OK if pf.ok else exits.CLUSTER
