"""User-facing errors.

Every mistake a *user* can make (a bad spec, a bad input file, a bad CLI value) is raised as a
:class:`UserError` subclass.  The CLI turns these into a one-paragraph message and exit code 2;
anything else is a bug in asymspec and is allowed to produce a traceback.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

JsonPath = Sequence[str | int]


def format_json_path(path: JsonPath) -> str:
    """Render ``("model", "layers", 3, "in")`` as ``model.layers[3].in``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "<root>"


class UserError(Exception):
    """An error caused by user input; reported without a traceback, exit code 2."""

    exit_code = 2


@dataclass
class SpecError(UserError):
    """A problem in a spec file, located by file, line, column and field path.

    ``line`` and ``column`` are 1-based (as editors show them); they are ``None`` only when the
    spec did not come from a file (e.g. a dict passed from Python).
    """

    message: str
    file: str | None = None
    line: int | None = None
    column: int | None = None
    field_path: tuple[str | int, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        super().__init__(str(self))

    def __str__(self) -> str:
        where = self.file or "<spec>"
        if self.line is not None:
            where += f":{self.line}"
            if self.column is not None:
                where += f":{self.column}"
        return f"{where}: field '{format_json_path(self.field_path)}': {self.message}"


class SpecWarning(UserWarning):
    """Something in a spec that is probably a mistake but not invalid (e.g. a glob that selects
    no layer, common when a spec written for a deeper model is reused with ``--set``).  The
    command line prints it as ``warning: <file>:<line>:<col>: field '...': ...``."""
