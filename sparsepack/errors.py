"""The one exception type the CLI turns into a one-line error and a non-zero exit."""


class SparsepackError(Exception):
    """A problem the user can fix; the message names the problem and the fix in one line."""

    exit_code = 2


class ParityError(SparsepackError):
    """The exported artifact does not compute what the source model computes."""

    exit_code = 3


class ClusterError(SparsepackError):
    """The cluster refused or failed a step; the message carries the server's own words."""

    exit_code = 4


class QualityGateError(SparsepackError):
    """A variant that cannot match bit for bit (fp16, int8) ranks too differently from its reference."""

    exit_code = 3
