"""Flags with a new name whose old spelling still works for one release, with a one-line warning on stderr."""

from __future__ import annotations

import argparse

from .output import err


class _DeprecatedSpelling(argparse.Action):
    """Stores into the new flag's dest; warns once per use."""

    def __init__(self, option_strings, dest, new_flag: str, **kwargs):
        self.new_flag = new_flag
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        err(f"warning: {option_string} is deprecated; use {self.new_flag} (the old spelling goes in the next release)")
        setattr(namespace, self.dest, values)


def add_renamed(parser, new: str, *old: str, **kwargs) -> argparse.Action:
    """``new`` with ``kwargs``; every ``old`` spelling as a deprecated alias of it (same type, choices, metavar)."""
    action = parser.add_argument(new, **kwargs)
    alias = {k: v for k, v in kwargs.items() if k in ("type", "choices", "metavar")}
    for spelling in old:
        parser.add_argument(
            spelling,
            dest=action.dest,
            action=_DeprecatedSpelling,
            new_flag=new,
            default=argparse.SUPPRESS,
            help=f"deprecated spelling of {new}",
            **alias,
        )
    return action


def add_opensearch_version(parser, *old: str, **kwargs) -> argparse.Action:
    """``--opensearch-version``: the one name, in every command, of the OpenSearch version(s) meant."""
    return add_renamed(parser, "--opensearch-version", *old, **kwargs)
