"""``gradcheck-suite init KIND NAME``: a starting model file of each kind that passes
the check as written, for the user to replace with their own code."""
from __future__ import annotations

import os
import re

from ..kinds import KINDS as _REGISTERED, kind_named, spelled

#: the kinds ``init`` offers, by their one spelling (kinds/__init__.py registers them)
KINDS = tuple(k.name for k in _REGISTERED)
#: the same kinds as one shell word each (a name's spaces as hyphens), as ``init`` lists them:
#: ``init custom-op NAME`` needs no quotes
WORDS = tuple(k.replace(" ", "-") for k in KINDS)
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


def kind_choice(text: str) -> str:
    """``init``'s KIND argument as one of :data:`WORDS`: a kind's word, or its name as
    written in a record (``"custom op"``)."""
    return spelled(text).replace(" ", "-")


def render(kind: str, name: str) -> str:
    """The starting file of ``kind`` (a name or an old spelling) for a model ``name``."""
    if spelled(kind) not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; choose from {', '.join(WORDS)}")
    if not _NAME.match(name):
        raise ValueError(f"name {name!r} must be lower-case letters, digits and '_', starting with a letter")
    cls = "".join(part.capitalize() for part in name.split("_"))
    return kind_named(kind).template.format(name=name, cls=cls)


def write(kind: str, name: str, path: str | None = None) -> str:
    """Write the starting file (``NAME.py``, in ``path`` where that is a folder, or at
    ``path``); never over an existing file."""
    text = render(kind, name)
    path = path or f"{name}.py"
    if os.path.isdir(path) or path.endswith(os.sep):     # --out FOLDER: the file goes inside it
        os.makedirs(path, exist_ok=True)
        path = os.path.join(path, f"{name}.py")
    if os.path.exists(path):
        raise ValueError(f"{path} already exists; choose another NAME or --out")
    with open(path, "x") as f:
        f.write(text)
    return path
