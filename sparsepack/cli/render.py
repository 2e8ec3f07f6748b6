"""``render``: the JSON bodies a cluster needs, from the built-in (or your) templates."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ..errors import SparsepackError
from .flags import add_opensearch_version
from .inputs import load_manifest_data
from .output import err


# Rendered mappings leave n_postings to the server on purpose (the right value depends on the corpus, and SEISMIC's
# build time grows with it); what the user must know is that it bounds recall.
def n_postings_note() -> str:
    from ..templates.checks import SEISMIC_PARAMETERS

    return (
        f"note: n_postings is left to the server ({SEISMIC_PARAMETERS['n_postings'].server_default}), which bounds "
        "SEISMIC's recall as a shard grows; measure recall on your data and set n_postings if it is too low "
        "(docs/retrieval.md: SEISMIC n_postings)"
    )


# The newest line with published artifacts and the one the suite runs against; the library's own default
# (templates.versions.DEFAULT_TARGET) is the newest line it knows.
RENDER_DEFAULT_VERSION = "3.6"


def add_parser(subparsers) -> None:
    sp = subparsers.add_parser("render", help="render an ML Commons / neural-search body from a template")
    sp.add_argument("template", nargs="?", help="template name (see --list)")
    sp.add_argument("--manifest", help="package manifest.json (or its directory)")
    add_opensearch_version(
        sp,
        "--target-version",
        default=RENDER_DEFAULT_VERSION,
        metavar="VERSION",
        help=f"OpenSearch version the body is for (default {RENDER_DEFAULT_VERSION})",
    )
    sp.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="template variable (JSON or string)"
    )
    sp.add_argument("--template-dir", help="directory whose NAME.json.j2 files override the built-in templates")
    sp.add_argument("-o", "--output", help="write to this file instead of stdout")
    sp.add_argument("--list", action="store_true", help="list templates and their variables")
    sp.set_defaults(run=run, flag_of={"target_version": "--opensearch-version"})


def run(args) -> int:
    from ..templates import TEMPLATES, list_templates, parse_set_values, render, template_variables

    if args.list:
        for t in list_templates(args.template_dir):
            print(f"{t['name']:18s} {t['description']}\n{'':18s} variables: {', '.join(t['variables'])}")
        return 0
    if not args.template:
        raise SparsepackError("name a template (see `sparsepack render --list`)")
    manifest = load_manifest_data(args.manifest) if args.manifest else None
    values = parse_set_values(args.set)
    known = (
        sorted(set(template_variables(args.template, args.template_dir)) | set(TEMPLATES[args.template].defaults))
        if args.template in TEMPLATES
        else []
    )
    unknown = sorted(set(values) - set(known)) if known else []
    if unknown:
        raise SparsepackError(
            f"--set {', '.join(unknown)}: template {args.template} has no such variable; it takes {', '.join(known)}"
        )
    body = render(args.template, manifest, args.opensearch_version, template_dir=args.template_dir, **values)
    if args.template == "index-mapping" and values.get("field_type") == "sparse_vector" and "n_postings" not in values:
        err(n_postings_note())
    text = json.dumps(body, indent=2) + "\n"
    if args.output:
        tmp = Path(args.output).with_suffix(".tmp")
        tmp.write_text(text)
        tmp.replace(args.output)
    else:
        sys.stdout.write(text)
    return 0
