"""The one exception users see for bad input: it names the file, the problem and the fix."""

from __future__ import annotations

from pathlib import Path


class InputError(ValueError):
    """Bad input data or configuration.

    The message reads ``<source>: <problem>. <fix>`` so that a user can act
    on it without a traceback.
    """

    def __init__(self, source: str | Path, problem: str, fix: str) -> None:
        self.source = str(source)
        self.problem = problem
        self.fix = fix
        super().__init__(f"{self.source}: {problem}. {fix}")
