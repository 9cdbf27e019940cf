"""Tracing the user's code: what each line of the user's own files assigns or changes in place,
recorded under ``sys.settrace`` as the forward or the backward runs."""
from __future__ import annotations

import dataclasses
import sys

import numpy as np
import torch

from ..record.blame import user_code
from ..verdict import rules


@dataclasses.dataclass
class Assigned:
    """One value a line of the user's code assigned to a local (or changed in place)."""
    file: str
    line: int
    name: str
    value: object          # a copy of what was assigned (a tensor or an array)
    order: int
    ident: int = 0         # the object's id: an in-place change keeps it, a new assignment does not
    argument: bool = False  # an argument of the function, as it came in


class Tracer:
    """Records, for the frames of the user's own files, each local that a line assigns or
    changes in place (tensors and arrays), in the order the lines ran."""

    def __init__(self, keep_graph: bool = False, every_tensor: bool = False):
        self.records: list[Assigned] = []
        self.keep_graph = keep_graph     # the forward's own tensors, for autograd; else copies
        self.every_tensor = every_tensor  # masks and indices too, not only floating-point values
        self.seen: dict[int, dict[str, tuple]] = {}
        self.where: dict[int, tuple[str, int]] = {}
        self.outer: set[int] = set()
        self.returns: list[tuple[str, int]] = []     # where the user's outermost functions returned
        self.containers: list[tuple[str, int, str, dict]] = []   # (file, line, name, {slot: copy}) as they change
        self.ran: set[tuple[str, int]] = set()       # every line of the user's code that ran
        self.user = user_code

    def __call__(self, frame, event, arg):
        if event == "call" and self.user(frame.f_code.co_filename):
            caller = frame.f_back
            if caller is None or not self.user(caller.f_code.co_filename):
                self.outer.add(id(frame))      # the user's own function the harness called
            return self.local
        return None

    def local(self, frame, event, arg):
        key = id(frame)
        if event in ("line", "return"):
            if key in self.where:
                self._changed(frame, *self.where[key])
            self.where[key] = (frame.f_code.co_filename, frame.f_lineno)
            self.ran.add(self.where[key])
            if event == "return":
                if key in self.outer:
                    self.returns.append((frame.f_code.co_filename, frame.f_lineno))
                    self.outer.discard(key)
                self.where.pop(key, None)
                self.seen.pop(key, None)
        return self.local

    def _changed(self, frame, file: str, line: int) -> None:
        before = self.seen.setdefault(id(frame), {})
        for name, value in list(frame.f_locals.items()):
            if type(value) in (dict, list, tuple) and not self.keep_graph:
                self._container(before, file, line, name, value)
                continue
            if isinstance(value, torch.Tensor) and (value.is_floating_point() or self.every_tensor):
                stamp = (id(value), value._version)
            elif isinstance(value, np.ndarray) and (value.dtype.kind == "f" or
                                                    (self.every_tensor and value.dtype.kind in "biu")):
                stamp = (id(value), hash(value.tobytes()) if value.size <= rules.TRACED_HASH_ELEMENTS
                         else value.size)
            else:
                continue
            if before.get(name) == stamp:
                continue
            code = frame.f_code
            argument = name not in before and name in code.co_varnames[:code.co_argcount + code.co_kwonlyargcount]
            before[name] = stamp
            kept = value if self.keep_graph and isinstance(value, torch.Tensor) else float64_copy(value)
            self.records.append(Assigned(file, line, name, kept, len(self.records), id(value), argument))

    def _container(self, before: dict, file: str, line: int, name: str, value) -> None:
        """A dict, tuple or list of gradients: each change of what it holds, slot by slot."""
        items = value.items() if isinstance(value, dict) else enumerate(value)
        slots = {k: v for k, v in items if isinstance(v, (torch.Tensor, np.ndarray))}
        if not slots or len(slots) > rules.TRACED_CONTAINER_SLOTS:
            return
        stamp = ("container", id(value), tuple((k, id(v), getattr(v, "_version", None)) for k, v in slots.items()))
        if before.get(name) == stamp:
            return
        before[name] = stamp
        self.containers.append((file, line, name, {k: float64_copy(v) for k, v in slots.items()}))

    def run(self, fn, *args):
        """``fn(*args)`` under this tracer."""
        old = sys.gettrace()
        sys.settrace(self)
        try:
            return fn(*args)
        finally:
            sys.settrace(old)


def float64_copy(value):
    """A float64 copy of a floating-point tensor or array; other dtypes keep theirs."""
    if isinstance(value, torch.Tensor):
        t = value.detach().to("cpu")
        return (t.to(torch.float64) if t.is_floating_point() else t).clone()
    arr = np.array(value, copy=True)
    return torch.from_numpy(arr.astype(np.float64) if arr.dtype.kind == "f" else arr)
