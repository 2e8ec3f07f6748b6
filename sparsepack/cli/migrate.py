"""``migrate``: move an alias's documents to a new model (blue/green), then ``--rollback`` or ``--finish``."""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import SparsepackError
from . import exits
from .connection import add_connection_args, connect
from .output import err, print_json

SHOWN = ("old_index", "new_index", "alias_on", "seconds_blocked", "pipelines", "reindex", "carried_over")


def add_parser(subparsers) -> None:
    sp = subparsers.add_parser(
        "migrate",
        help="move an alias's documents to a new model: new index, reindex, carry-over, verify, one alias swap",
    )
    sp.add_argument("alias", help="the alias the application reads and writes through")
    sp.add_argument("--document-model", help="model id of the new document model")
    sp.add_argument("--query-model", help="model id of the new query model (default: the document model)")
    sp.add_argument("--slices", default="auto", help="reindex slices: auto (one per shard) or N")
    sp.add_argument("--requests-per-second", type=float, help="throttle the reindex (default: none)")
    sp.add_argument("--new-index", help="name of the new index (default ALIAS-<short model id>)")
    sp.add_argument("--cleanup", action="store_true", help="on failure, remove the new index and its pipeline copies")
    sp.add_argument(
        "--rollback", action="store_true", help="swap the alias back to the old index, carrying writes back"
    )
    sp.add_argument("--force", action="store_true", help="with --rollback: roll back even if writes would be lost")
    sp.add_argument("--finish", action="store_true", help="delete the old index and the pipelines only it used")
    sp.add_argument("--report", help="also write the JSON report to this file")
    sp.add_argument("--json", action="store_true", help="print the JSON report")
    add_connection_args(sp)
    sp.set_defaults(run=run)


def check_args(args) -> None:
    """Bad input is refused before connecting."""
    if args.rollback and args.finish:
        raise SparsepackError("--rollback and --finish exclude each other; pick one")
    if args.force and not args.rollback:
        raise SparsepackError("--force applies only to --rollback; drop it")
    if not (args.rollback or args.finish) and not args.document_model:
        raise SparsepackError("migrate needs --document-model MODEL_ID (or --rollback / --finish)")
    if args.slices != "auto" and not (args.slices.isdigit() and int(args.slices) > 0):
        raise SparsepackError(f"--slices {args.slices!r}: use auto or a positive integer")
    if args.requests_per_second is not None and args.requests_per_second <= 0:
        raise SparsepackError("--requests-per-second must be positive (leave it out for no throttle)")


def run(args) -> int:
    from ..migrate import MigrationError, MigrationOptions, finish, migrate, rollback

    check_args(args)
    cl = connect(args)
    opts = MigrationOptions(
        new_index=args.new_index,
        slices=args.slices,
        requests_per_second=args.requests_per_second,
        cleanup=args.cleanup,
        progress=None if args.json else err,
    )
    try:
        if args.rollback:
            report = rollback(cl, args.alias, force=args.force).as_dict()
        elif args.finish:
            report = finish(cl, args.alias).as_dict()
        else:
            report = migrate(cl, args.alias, args.document_model, args.query_model, opts).as_dict()
    except KeyboardInterrupt:
        err("interrupted; the copy goes on on the cluster: re-run the same command to continue it")
        raise
    except MigrationError as exc:
        report = {
            "alias": args.alias,
            "passed": False,
            "error": str(exc),
            "failed_step": exc.step,
            "alias_on": exc.alias_on,
            "details": exc.details,
        }
    if args.report:
        Path(args.report).write_text(json.dumps(report, indent=2, default=str) + "\n")
    if args.json:
        print_json(report)
    elif report["passed"]:
        for key in SHOWN:
            if report.get(key) not in (None, {}, []):
                print(f"  {key}: {json.dumps(report[key], default=str)}")
    if not report["passed"]:
        err(
            f"migrate failed at {report['failed_step']}: {report['error']} (alias {args.alias} serves from "
            f"{report.get('alias_on')})"
        )
        return exits.CLUSTER
    return exits.OK
