"""``doctor``: read a cluster and say, one line each with its fix, what will break."""

from __future__ import annotations

from . import exits
from .connection import add_connection_args, connect
from .output import print_json


def add_parser(subparsers) -> None:
    sp = subparsers.add_parser(
        "doctor", help="check a cluster's ML settings, models, indices and leases; exit 4 if anything will break"
    )
    add_connection_args(sp)
    sp.add_argument("--json", action="store_true", help="print the findings as JSON: [{check, severity, message, fix}]")
    sp.set_defaults(run=run_doctor)


def run_doctor(args) -> int:
    from ..registry import doctor
    from ..registry.index_models import index_provenance

    cl = connect(args)
    findings = doctor.diagnose(cl, index_provenance(cl))
    if args.json:
        print_json([f.as_dict() for f in findings])
    else:
        for finding in findings:
            print(finding.line())
        if not findings:
            print("nothing found that will break")
    return exits.CLUSTER if findings else exits.OK
