"""Values that start with '-'. OpenSearch ids are URL-safe base64, so a model id can start with '-' (a suite run met
one), and argparse reads ``--document-model -Xy3...`` as a flag with no value (exit 2). Such a value is passed on as
``--document-model=-Xy3...``, and a positional one (``undeploy -Xy3...``) after ``--``, before argparse sees it."""

from __future__ import annotations

import argparse


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:  # noqa: SLF001 - argparse has no public way to list subparsers
        if isinstance(action, argparse._SubParsersAction):  # noqa: SLF001
            return dict(action.choices)
    return {}


def _options(parser: argparse.ArgumentParser) -> tuple[set[str], set[str]]:
    """(option strings that take a value, all option strings) of ``parser``."""
    with_value: set[str] = set()
    every: set[str] = set()
    for action in parser._actions:  # noqa: SLF001
        every.update(action.option_strings)
        if action.option_strings and action.nargs != 0:
            with_value.update(action.option_strings)
    return with_value, every


def _option_named(token: str, every: set[str]) -> str | None:
    """The option ``token`` names, exactly or as argparse's unambiguous abbreviation of a long option."""
    name = token.split("=", 1)[0] if token.startswith("--") else token
    if name in every:
        return name
    if name.startswith("--") and len(name) > 2:
        matches = [o for o in every if o.startswith(name)]
        return matches[0] if len(matches) == 1 else None
    return None


def _is_dash_value(token: str, with_value: set[str], every: set[str]) -> bool:
    """An id-like value: one leading '-', longer than a short option, naming no option (nor a short option with its
    value attached, ``-oDIR``). Tokens that start with '--' stay options, so a mistyped flag is still an error."""
    return (
        token.startswith("-")
        and not token.startswith("--")
        and len(token) > 2
        and token not in every
        and token[:2] not in with_value
    )


def protect_dash_values(parser: argparse.ArgumentParser, argv: list[str]) -> list[str]:
    """``argv`` with every id-like value that starts with '-' kept a value: an option's joined to it with '=', and
    positional ones after ``--``. The subcommand's options come first, then its positionals, each in the user's order,
    so positionals split by options (``delete a --url U b``) also parse."""
    commands = _subcommands(parser)
    at = next((i for i, token in enumerate(argv) if token in commands), None)
    if at is None:
        return list(argv)
    if _subcommands(commands[argv[at]]):  # a command group (``node start``): its subcommand's options count
        return [*argv[: at + 1], *protect_dash_values(commands[argv[at]], argv[at + 1 :])]
    with_value, every = _options(commands[argv[at]])
    options: list[str] = []
    positionals: list[str] = []
    dangling: list[str] = []
    separated = False  # the user wrote ``--``
    rest = iter(argv[at + 1 :])
    for token in rest:
        if token == "--":
            positionals += rest
            separated = True
        elif token.startswith("-") and not _is_dash_value(token, with_value, every):
            options.append(token)
            if _option_named(token, every) in with_value and "=" not in token:
                value = next(rest, None)
                if value is None:  # left last, where argparse names the missing value
                    dangling.append(options.pop())
                elif _is_dash_value(value, with_value, every):
                    options[-1] = f"{token}={value}"
                else:
                    options.append(value)
        else:
            positionals.append(token)
    dashed = separated or any(p.startswith("-") for p in positionals)
    return [*argv[: at + 1], *options, *(["--"] if dashed and positionals else []), *positionals, *dangling]
