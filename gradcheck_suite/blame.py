"""Whose exception is it: the harness's own, or the user's model code (and where)?"""
from __future__ import annotations

import os
import re
import traceback

import torch

_HERE = os.path.dirname(os.path.abspath(__file__))
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
