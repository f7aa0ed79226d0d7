"""How the analysis reports unsound input: a warning per problem, one exception when nothing is left."""
from __future__ import annotations

import warnings


class AnalysisWarning(UserWarning):
    """Something in the input was unsound; the message names the file and what was done."""


class NoUsableRuns(ValueError):
    """Nothing usable was left to analyse (one-line message)."""


def warn(message: str, stacklevel: int = 3) -> None:
    """Issue an ``AnalysisWarning`` (``stacklevel`` as for ``warnings.warn``)."""
    warnings.warn(message, AnalysisWarning, stacklevel=stacklevel)
