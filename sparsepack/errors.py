"""Typed errors of the library. Each names the problem and the fix in one line and carries its figures as fields;
the CLI (sparsepack/cli/exits.py) alone turns the type into an exit code and fields into flag hints."""

from __future__ import annotations


class SparsepackError(Exception):
    """A problem the user can fix (bad input unless a subclass says otherwise).

    ``parameter``: the library argument the problem is about (e.g. ``"timeout"``), so the CLI can name its flag."""

    exit_code = 2  # read by the release report until it records the error type; the CLI maps types itself

    def __init__(self, message: str = "", *, parameter: str | None = None):
        super().__init__(message)
        self.parameter = parameter


class GateFailure(SparsepackError):
    """A proof the artifact failed; ``figures``: what was measured, ``report``: the full proof, if any."""

    exit_code = 3

    def __init__(
        self,
        message: str = "",
        *,
        report: dict | None = None,
        figures: dict | None = None,
        parameter: str | None = None,
    ):
        super().__init__(message, parameter=parameter)
        self.report = report
        self.figures = figures or {}


class ParityError(GateFailure):
    """The exported artifact does not compute what the source model computes."""


class QualityGateError(GateFailure):
    """A variant that cannot match bit for bit (fp16, int8) ranks too differently from its reference;
    ``figures`` holds the measured agreement (e.g. ``{"ndcg_at_10": 0.97}``)."""


class ClusterError(SparsepackError):
    """The cluster refused or failed a step; the message carries the server's own words, ``status`` its HTTP status
    (None when no response came back: refused connection, TLS, timeout)."""

    exit_code = 4

    def __init__(
        self, message: str = "", *, status: int | None = None, step: str | None = None, parameter: str | None = None
    ):
        super().__init__(message, parameter=parameter)
        self.status = status
        self.step = step


class LocalEnvironmentError(SparsepackError):
    """This machine lacks what a step needs (Java, a C++ compiler, openssl) or a local node failed to start in time."""

    exit_code = 5
