"""How the analysis reports unsound input: a warning per problem, one exception when nothing is left.

Warnings raised while a run is read can be captured (``captured``) and issued
again later (``reissue``), so that a run reduced in a worker process, or read
back from the cache, reports exactly what its first reading reported.
"""
from __future__ import annotations

import builtins
import warnings
from contextlib import contextmanager
from typing import Iterable, Iterator

Message = tuple[str, str]  # (warning category's name, message)


class AnalysisWarning(UserWarning):
    """Something in the input was unsound; the message names the file and what was done."""


class NoUsableRuns(ValueError):
    """Nothing usable was left to analyse (one-line message)."""


def warn(message: str, stacklevel: int = 3) -> None:
    """Issue an ``AnalysisWarning`` (``stacklevel`` as for ``warnings.warn``)."""
    warnings.warn(message, AnalysisWarning, stacklevel=stacklevel)


@contextmanager
def captured() -> Iterator[list[Message]]:
    """Record the warnings raised inside the block instead of issuing them; the list it gives holds them,
    ``(category name, message)`` in order, once the block has ended (by an exception too). Not thread-safe
    (``warnings`` state)."""
    messages: list[Message] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            yield messages
        finally:  # those raised before an exception too
            messages.extend((w.category.__name__, str(w.message)) for w in caught)


def reissue(messages: Iterable[Message]) -> None:
    """Issue captured warnings again, each in its category (``AnalysisWarning``, a built-in warning, else
    ``UserWarning``)."""
    for category, message in messages:
        kind = AnalysisWarning if category == AnalysisWarning.__name__ else getattr(builtins, category, UserWarning)
        if not (isinstance(kind, type) and issubclass(kind, Warning)):
            kind = UserWarning
        warnings.warn(message, kind, stacklevel=2)
