"""``sparsepack``: a thin command line over the library, one module per command group.

Each module has ``add_parser(subparsers)``, which sets ``run`` (and ``flag_of``, library argument -> flag) as the
subcommand's defaults; :mod:`.exits` is the one place typed errors become exit codes."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from .. import __version__
from . import demo, doctor, exits, migrate, models, node, package, release, render, serve
from .argv import protect_dash_values

COMMAND_GROUPS = (package, render, release, migrate, models, doctor, node, serve, demo)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sparsepack", description="Get OpenSearch neural sparse models into production."
    )
    parser.add_argument("--version", action="version", version=f"sparsepack {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True, help="what to do")
    for group in COMMAND_GROUPS:
        group.add_parser(subparsers)
    return parser


def quiet_libraries() -> None:
    """Model loading prints progress bars and advisories on stdout/stderr; keep the CLI's output ours."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    logging.getLogger("sentence_transformers").setLevel(logging.ERROR)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line, with ids that start with '-' read as values (bad flags: argparse prints usage, exit 2)."""
    parser = build_parser()
    return parser.parse_args(protect_dash_values(parser, sys.argv[1:] if argv is None else argv))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    quiet_libraries()
    return exits.run_mapped(args.run, args)
