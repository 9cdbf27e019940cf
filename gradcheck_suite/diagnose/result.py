"""What a diagnosis finds: the mistake each failing tensor shows, and the first wrong line."""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping

#: The mistakes a failing tensor's gradient is named by, in the order they are tried
#: (``other`` where none explains it); see :mod:`.mistake`.
MISTAKES = ("conjugate", "sign", "scale", "transpose", "ignores_upstream", "zero", "swapped", "permuted", "partial", "other")


@dataclasses.dataclass
class Mistake:
    """The mistake one failing tensor's gradient shows: one of :data:`MISTAKES`, with the
    factor where it has one and the sentence a report shows."""
    tensor: str
    mistake: str
    factor: float | None
    text: str
    same_as: str = ""      # what must match across sizes: a scale's dim, or its number
    dims: Mapping[str, int] | None = None   # the size it was judged at, where not the failing case's

    def to_json(self) -> dict:
        """The report's record of it.  ``kind`` is the old name of ``mistake``, still written
        with the same value for readers of older reports (docs/json.md)."""
        return {"tensor": self.tensor, "mistake": self.mistake, "kind": self.mistake, "factor": self.factor,
                "text": self.text, "dims": None if self.dims is None else dict(self.dims)}


@dataclasses.dataclass
class Location:
    """The first line of the user's backward that goes wrong, and what it should have been."""
    file: str
    line: int
    variable: str
    code: str
    expected: str
    right: str = ""     # an input of that line that is right, and where it was assigned
    why: str = ""       # the whole sentence, where the line is not the wrong value's own

    def sentence(self) -> str:
        return self.why or f"{self.variable} is not {self.expected}" + (f"; {self.right}" if self.right else "")

    def to_json(self) -> dict:
        return {"file": self.file, "line": self.line, "variable": self.variable, "code": self.code,
                "expected": self.expected, "text": self.sentence()}


@dataclasses.dataclass
class Diagnosis:
    """The mistake of each failing tensor, and the first wrong line (or why there is none)."""
    mistakes: list[Mistake]
    location: Location | None
    location_note: str | None
    cut: str | None = None      # a step the time budget left out
