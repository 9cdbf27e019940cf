"""Whose exception is it: the harness's own, or the user's model code (and where)?"""
from __future__ import annotations

import os
import re
import traceback

import numpy as np
import torch

_HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))   # the package, not record/
_SIGNATURE = re.compile(r"\(\) (takes|missing|got)")


def ours(e: BaseException) -> bool:
    """Raised by the harness's own code: its innermost frame is in gradcheck_suite, not in
    a model file under it.  A model's function called with arguments it does not take is
    the model's."""
    frames = traceback.extract_tb(e.__traceback__)
    if not frames or (isinstance(e, TypeError) and _SIGNATURE.search(str(e))):
        return False
    last = os.path.abspath(frames[-1].filename)
    return last.startswith(_HERE + os.sep) and os.sep + "models" + os.sep not in last[len(_HERE):]


def where(e: BaseException) -> str:
    """`` (at file:line)`` of the innermost frame in the user's code, or ''."""
    torch_dir = os.path.dirname(torch.__file__)
    frames = [f for f in traceback.extract_tb(e.__traceback__)
              if not os.path.abspath(f.filename).startswith((_HERE, torch_dir)) or "/models/" in f.filename]
    return f" (at {frames[-1].filename}:{frames[-1].lineno})" if frames else ""


def shown_path(file: str) -> str:
    """A file as a message names it: relative to the working folder where it is inside it."""
    path = os.path.relpath(file)
    return file if path.startswith("..") else path


_NOT_USER = tuple(os.path.abspath(os.path.dirname(m.__file__)) + os.sep for m in (torch, np, os))


def user_code(filename: str) -> bool:
    """A file of the user's own code: not torch's, numpy's, the standard library's, nor the
    harness's (its built-in models excepted)."""
    if filename.startswith("<"):
        return False
    path = os.path.abspath(filename)
    if path.startswith(_NOT_USER):
        return False
    return not path.startswith(_HERE + os.sep) or path.startswith(os.path.join(_HERE, "models") + os.sep)
