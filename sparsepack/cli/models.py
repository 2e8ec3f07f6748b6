"""``list``, ``undeploy`` and ``delete``: the models already on a cluster."""

from __future__ import annotations

from ..errors import SparsepackError
from .connection import add_connection_args, connect
from .output import err, print_json


def add_parser(subparsers) -> None:
    sp = subparsers.add_parser("list", help="list models")
    add_connection_args(sp)
    scope = sp.add_mutually_exclusive_group()
    scope.add_argument(
        "--group", metavar="NAME", help="only the models of this model group (by name, as release takes it)"
    )
    scope.add_argument("--group-id", metavar="ID", help="only the models of this model group (by id)")
    sp.add_argument("--json", action="store_true", help="print the models as JSON")
    sp.set_defaults(run=run_list)
    for name, run in (("undeploy", run_undeploy), ("delete", run_delete)):
        sp = subparsers.add_parser(name, help=f"{name} models by id (refused while a pipeline uses them)")
        sp.add_argument("model_ids", nargs="+", help="model ids (see `sparsepack list`)")
        sp.add_argument("--timeout", type=float, default=120.0, help=f"seconds to wait for each {name} (default 120)")
        add_connection_args(sp)
        sp.set_defaults(run=run)


def _group_id(cl, args) -> str | None:
    from ..registry import models

    if args.group_id or not args.group:
        return args.group_id
    found = models.find_group(cl, args.group)
    if found:
        return found
    if models.get_group(cl, args.group):  # an id, as --group took before it meant a name everywhere
        err("warning: --group with a model group id is deprecated; use --group-id (--group takes the name)")
        return args.group
    raise SparsepackError(
        f"no model group named {args.group!r}; check the name (release --group), or pass its id with --group-id"
    )


def run_list(args) -> int:
    from ..registry import index_models, models

    cl = connect(args)
    group_id = _group_id(cl, args)
    rows = models.list_models(cl, group_id)
    recorded = index_models.index_provenance(cl)
    by_model = index_models.indices_by_model(recorded)
    for r in rows:
        r["vector_indices"] = by_model.get(r["model_id"], [])
    if args.json:
        print_json(rows)
        return 0
    for r in rows:
        print(
            f"{r['model_id']}  {r['state'] or '?':18s} {r['function_name'] or '?':16s} {r['name']} v{r['version']}  "
            f"{r['loaded']}"
        )
    listed = {r["model_id"]: r for r in rows}
    shown = {i: f for i, f in recorded.items() if group_id is None or f.get("document_model_id") in listed}
    if shown:
        print("indices (whose vectors they hold):")
    for index, facts in shown.items():
        model_id = facts.get("document_model_id") or "?"
        model = listed.get(model_id)
        what = f"{model['name']} v{model['version']}" if model else "a model not on this cluster"
        print(f"  {index}  {model_id} ({what}; recorded in {facts['source']})")
    return 0


def _refuse_if_used(cl, model_ids: list[str], action: str, nothing_done: str) -> None:
    """Refused before anything is done: an id the cluster does not have (a typo would otherwise print "undeployed
    ID"), or a model a pipeline or index uses."""
    from ..registry.models import get_model
    from ..registry.references import refuse_if_used

    unknown = [m for m in model_ids if get_model(cl, m) is None]
    if unknown:
        raise SparsepackError(
            f"{action}: no model {', '.join(unknown)} on this cluster ({nothing_done}); check the ids with `sparsepack list`"
        )
    refuse_if_used(cl, model_ids, f"{action} {', '.join(model_ids)} ({nothing_done})")


def run_undeploy(args) -> int:
    from ..registry import models

    cl = connect(args)
    _refuse_if_used(cl, args.model_ids, "undeploy", "nothing was undeployed")
    for mid in args.model_ids:
        models.undeploy(cl, mid, args.timeout)
        print(f"undeployed {mid}")
    return 0


def run_delete(args) -> int:
    from ..registry import models

    cl = connect(args)
    _refuse_if_used(cl, args.model_ids, "delete", "nothing was deleted")
    for mid in args.model_ids:
        models.delete(cl, mid, args.timeout)
        print(f"deleted {mid}")
    return 0
