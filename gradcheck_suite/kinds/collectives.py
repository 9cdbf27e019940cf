"""Which collective each rank is in: recorded by the rank, read by the pool when a rank hangs,
dies or raises (``ranks.py``).

In a rank process only, :func:`install` wraps the ``torch.distributed`` collectives that a
user's code calls (and ``torch.distributed.nn.functional``'s, which call them).  Before each
call the rank writes its *slot* of a table that every rank of the pool and the parent map as
shared memory (a file in the pool's private folder): the task, the collective's number in the
task, its name, the tensor's shape, dtype and contiguity, the user's line that called it, and
the time it arrived.  A crash leaves the slot as it was; the parent reads the table to say
which collective each rank was in.

Mismatch before a hang.  A collective over the default group must be called by every rank,
the same one at the same step, with the same sizes; otherwise gloo hangs until its timeout,
or fails with "invalid tensor size".  So a rank waits at each collective until every other
rank has arrived at the same step (it would wait in the collective anyway), and compares
what they called: a different collective, a different size or dtype where the collective
needs equal ones, or a rank that returned without calling it, ends the task at once on
every rank, before gloo is called, and the pool stays in step.  Only what torch requires
is compared: the collective's family (``all_gather`` and ``all_gather_into_tensor`` are
one), the dtype, and the element count where every rank's tensor must be the same size
(``all_reduce``, ``broadcast``, ``reduce``, the input of an all-gather or of
``reduce_scatter_tensor``); uneven ``reduce_scatter`` and ``all_to_all`` sizes are not
compared.  A collective on another group, and ``send``/``recv``, are recorded only.
"""
from __future__ import annotations

import functools
import inspect
import json
import mmap
import os
import re
import sys
import time

#: bytes of one rank's slot in the table
SLOT = 1024

#: the collectives wrapped, each with the argument that holds its tensor, and its family
COLLECTIVES = {
    "all_reduce": ("tensor", "all_reduce"), "broadcast": ("tensor", "broadcast"), "reduce": ("tensor", "reduce"),
    "all_gather": ("tensor", "all_gather"), "all_gather_into_tensor": ("input_tensor", "all_gather"),
    "_all_gather_base": ("input_tensor", "all_gather"), "reduce_scatter": ("input_list", "reduce_scatter"),
    "reduce_scatter_tensor": ("input", "reduce_scatter"), "_reduce_scatter_base": ("input", "reduce_scatter"),
    "all_to_all": ("input_tensor_list", "all_to_all"), "all_to_all_single": ("input", "all_to_all"),
    "gather": ("tensor", "gather"), "scatter": ("tensor", "scatter"), "barrier": (None, "barrier"),
    "send": ("tensor", None), "recv": ("tensor", None), "isend": ("tensor", None), "irecv": ("tensor", None),
}
#: the collectives whose tensor must hold as many elements on every rank
SAME_SIZE = {"all_reduce", "broadcast", "reduce", "all_gather", "all_gather_into_tensor", "_all_gather_base",
             "reduce_scatter_tensor", "_reduce_scatter_base"}


class CollectiveFault(RuntimeError):
    """Raised in a rank where the ranks' collectives do not match, or the others never came."""

    def __init__(self, kind: str, text: str):
        self.kind = kind
        super().__init__(text)


# -- the table ------------------------------------------------------------------------------

def create(path: str, world_size: int) -> None:
    with open(path, "wb") as f:
        f.write(b"\0" * SLOT * world_size)


def read(path: str | None, world_size: int) -> list[dict]:
    """Every rank's slot ({} where it wrote none, or the table is gone)."""
    try:
        with open(path or "", "rb") as f:
            raw = f.read(SLOT * world_size)
    except OSError:
        return [{} for _ in range(world_size)]
    return [_parse(raw[r * SLOT:(r + 1) * SLOT]) for r in range(world_size)]


def _parse(raw: bytes) -> dict:
    text = raw.split(b"\0", 1)[0]
    try:
        got = json.loads(text) if text else {}
    except ValueError:          # caught half-written: as good as nothing
        return {}
    return got if isinstance(got, dict) else {}


class Table:
    """A rank's view of the table: its own slot to write, everyone's to read."""

    def __init__(self, path: str, rank: int, world_size: int):
        self.rank, self.world_size = rank, world_size
        fd = os.open(path, os.O_RDWR)
        try:
            self.mem = mmap.mmap(fd, SLOT * world_size)
        finally:
            os.close(fd)
        self.slot: dict = {}

    def write(self, **fields) -> None:
        self.slot.update(fields)
        data = json.dumps(self.slot, separators=(",", ":")).encode()[:SLOT - 1]
        start = self.rank * SLOT
        self.mem[start:start + SLOT] = data + b"\0" * (SLOT - len(data))

    def others(self) -> list[tuple[int, dict]]:
        return [(r, _parse(self.mem[r * SLOT:(r + 1) * SLOT])) for r in range(self.world_size) if r != self.rank]


# -- the rank's side ------------------------------------------------------------------------

class _State:
    table: Table | None = None
    task = 0
    step = 0
    timeout = 30.0
    match = True
    busy = False


STATE = _State()


def begin(task: int, timeout: float, match: bool) -> None:
    """A task begins on this rank: its collectives count from 1."""
    STATE.task, STATE.step, STATE.timeout, STATE.match = task, 0, timeout, match
    STATE.table.slot = {}
    STATE.table.write(t=task, n=0, s="run")


def end(status: str) -> None:
    """The task ended on this rank: ``ok`` (returned) or ``raised``, and whether it was inside
    a collective then."""
    slot = STATE.table.slot
    STATE.table.write(s=status, inside=slot.get("s") in ("wait", "in"), gloo=slot.get("s") == "in")


def install(table: Table) -> None:
    """Wrap the collectives of ``torch.distributed`` (this process is a rank: nothing else
    runs here)."""
    import torch.distributed as dist
    import torch.distributed.distributed_c10d as c10d

    STATE.table = table
    for name in COLLECTIVES:
        fn = getattr(dist, name, None)
        if fn is None or getattr(fn, "__wrapped_collective__", False):
            continue
        wrapped = _wrap(name, fn, inspect.signature(fn))
        setattr(dist, name, wrapped)
        if getattr(c10d, name, None) is fn:
            setattr(c10d, name, wrapped)


def _wrap(name: str, fn, signature: inspect.Signature):
    argument, family = COLLECTIVES[name]

    @functools.wraps(fn)
    def call(*args, **kwargs):
        if STATE.busy or STATE.table is None:       # one collective calling another (_all_gather_base)
            return fn(*args, **kwargs)
        try:
            bound = signature.bind_partial(*args, **kwargs).arguments
        except TypeError:
            return fn(*args, **kwargs)               # torch's own error, as the user would see it
        tensor = bound.get(argument) if argument else None
        group = bound.get("group")
        whole = family is not None and (group is None or _is_world(group))
        STATE.step += whole
        table = STATE.table
        table.write(n=STATE.step, s="wait" if whole else "in", op=name, d=describe(tensor), at=_user_line(),
                    sig=[family, _numel(tensor) if name in SAME_SIZE else None, _dtype(tensor)] if whole else None,
                    since=time.monotonic())
        if whole and STATE.match:
            _arrive()
        table.write(s="in")
        STATE.busy = True
        try:
            out = fn(*args, **kwargs)
        finally:
            STATE.busy = False
        took = time.monotonic() - table.slot["since"]
        table.write(s="run", last=[name, table.slot.get("at", "")], longest=max(took, table.slot.get("longest", 0.0)))
        return out

    call.__wrapped_collective__ = True
    return call


def _is_world(group) -> bool:
    """Whether ``group`` is the default group (the only one whose collectives every rank must
    call in the same order; a group of its own, even of every rank, is recorded only)."""
    import torch.distributed as dist
    return group is dist.group.WORLD or group is dist.GroupMember.WORLD


def _arrive() -> None:
    """Wait until every other rank has arrived at this step, and compare what they called."""
    table, me = STATE.table, STATE.table.slot
    deadline = me["since"] + STATE.timeout
    spins = 0
    while True:
        waiting = False
        for r, other in table.others():
            if other.get("t") != STATE.task:
                waiting = True                      # not started this task yet
                continue
            n, s = other.get("n", 0), other.get("s")
            if n > STATE.step:
                continue                            # already past this step
            if n == STATE.step and s in ("wait", "in"):
                if _differ(me.get("sig"), other.get("sig")):
                    raise CollectiveFault("mismatch", f"rank {r} called {other.get('op')} where this rank called "
                                                      f"{me.get('op')}")
                continue
            if n == STATE.step and s != "raised":
                continue                            # already through this step
            if s == "ok":
                raise CollectiveFault("mismatch", f"rank {r} returned without calling {me.get('op')}")
            if s == "raised":
                raise CollectiveFault("echo", f"rank {r} raised before {me.get('op')}")
            waiting = True
        if not waiting:
            return
        if time.monotonic() > deadline:
            raise CollectiveFault("hung", f"the other ranks did not reach {me.get('op')} within {STATE.timeout:g} s")
        spins += 1
        time.sleep(0 if spins < 10 else 0.0005)


def _differ(a, b) -> bool:
    if not a or not b:
        return False
    if a[0] != b[0]:
        return True
    if a[1] is not None and b[1] is not None and a[1] != b[1]:
        return True
    return a[2] is not None and b[2] is not None and a[2] != b[2]


def _first_tensor(t):
    if isinstance(t, (list, tuple)):
        return t[0] if t else None
    return t


def _numel(t):
    t = _first_tensor(t)
    return int(t.numel()) if hasattr(t, "numel") else None


def _dtype(t):
    t = _first_tensor(t)
    return str(t.dtype).removeprefix("torch.") if hasattr(t, "dtype") else None


def describe(t) -> str:
    """``tensor 4x8 float64`` (``, non-contiguous``), ``2 tensors 4x8 float64``, or ''."""
    many = isinstance(t, (list, tuple))
    first = _first_tensor(t)
    if not hasattr(first, "shape"):
        return ""
    shape = "x".join(str(s) for s in first.shape) or "scalar"
    layout = "" if first.is_contiguous() else ", non-contiguous"
    head = f"{len(t)} tensors" if many else "tensor"
    return f"{head} {shape} {str(first.dtype).removeprefix('torch.')}{layout}"


def _user_line() -> str:
    """``my_tp.py:23``: the innermost frame of the user's code that called the collective."""
    frame = sys._getframe(2)
    while frame is not None:
        name = frame.f_code.co_filename
        if _users(name):
            return f"{os.path.basename(name)}:{frame.f_lineno}"
        frame = frame.f_back
    return ""


_STDLIB = os.path.dirname(os.__file__) + os.sep


def _users(filename: str) -> bool:
    return (os.sep + "gradcheck_suite" + os.sep not in filename and os.sep + "torch" + os.sep not in filename
            and not filename.startswith("<") and not (filename.startswith(_STDLIB) and "-packages" not in filename))


# -- the parent's side: one line for the failure ---------------------------------------------

def inside(slot: dict) -> bool:
    """Whether the rank was inside a collective (waiting for the others, or in gloo) when it
    stopped or now."""
    return slot.get("s") in ("wait", "in") or bool(slot.get("inside"))


def users_file(filename: str) -> bool:
    """Whether ``filename`` is the user's code (not torch's, Python's or the harness's)."""
    return _users(filename)


def where(slot: dict) -> str:
    """``in all_reduce (tensor 4x8 float64) called at my_tp.py:23``, or ``outside any
    collective (its last: all_gather at my_tp.py:20)``."""
    if inside(slot):
        return f"in {called(slot)}"
    last = slot.get("last")
    return "outside any collective" + (f" (its last: {last[0]} at {last[1]})" if last else "")


def called(slot: dict, verb: str = "called at") -> str:
    """``all_reduce (tensor 4x8 float64) called at my_tp.py:23``."""
    d = f" ({slot['d']})" if slot.get("d") else ""
    at = f" {verb} {slot['at']}" if slot.get("at") else ""
    return f"{slot.get('op', '?')}{d}{at}"


def waiters(slots: list[dict], but: set[int]) -> str:
    """``, while rank 0 waited in all_gather (...) called at ...`` for the ranks not in
    ``but`` that are inside a collective."""
    busy = [(r, s) for r, s in enumerate(slots) if r not in but and inside(s)]
    if not busy:
        return ""
    groups: dict[str, list[int]] = {}
    for r, s in busy:
        groups.setdefault(called(s), []).append(r)
    parts = [f"rank{'s' if len(rs) > 1 else ''} {', '.join(map(str, rs))} waited in {what}" for what, rs in groups.items()]
    return ", while " + "; ".join(parts)


def mismatch(slots: list[dict], world_size: int) -> tuple[int, str] | None:
    """The rank that called something else at the step where the ranks disagree, and the
    line that says so; None where the table shows no disagreement."""
    steps = [s.get("n", 0) for s in slots if inside(s) and s.get("sig")]
    if not steps:
        return None
    step = min(steps)
    at_step = {r: s for r, s in enumerate(slots) if s.get("n") == step and inside(s)
               and s.get("sig")}
    groups: list[list[int]] = []
    for r, s in at_step.items():
        for g in groups:
            if not _differ(at_step[g[0]]["sig"], s["sig"]):
                g.append(r)
                break
        else:
            groups.append([r])
    main = max(groups, key=lambda g: (len(g), -g[0]))
    ref = slots[main[0]]
    who = f"rank{'s' if len(main) > 1 else ''} {', '.join(map(str, main))}"
    returned = [r for r, s in enumerate(slots) if r not in at_step and s.get("s") == "ok" and s.get("n", 0) < step]
    odd = [r for r in at_step if r not in main]
    if odd:
        r = odd[0]
        s = slots[r]
        if s["sig"][0] != ref["sig"][0]:
            return r, (f"called {called(s, 'at')} where {who} called {called(ref, 'at')}, the same step (collective {step}): "
                       "every rank must call the same collective in the same order (a collective called on "
                       "some ranks only?)")
        return r, (f"called {s.get('op')} with {s.get('d') or 'another tensor'}{_at(s)} where {who} called "
                   f"{ref.get('op')} with {ref.get('d') or 'another tensor'}{_at(ref)}, the same step (collective "
                   f"{step}): the same collective with different sizes (gloo hangs or fails with \"invalid "
                   "tensor size\"): a size that depends on the rank?")
    if returned:
        r = returned[0]
        d = f" ({ref['d']})" if ref.get("d") else ""
        return r, (f"returned without calling {ref.get('op')}{d}, which {who} called{_at(ref)} and waited in "
                   f"(collective {step}): a collective called on some ranks only?")
    return None


def _at(slot: dict) -> str:
    return f" at {slot['at']}" if slot.get("at") else ""


def hung(slots: list[dict], world_size: int, timeout: float, answered: set[int]) -> tuple[int, str]:
    """The rank to name where the ranks waited past their timeout: the first that never
    reached the collective the others wait in (it returned, or runs elsewhere), else the
    first still inside one."""
    busy = [r for r, s in enumerate(slots) if inside(s)]
    steps = {slots[r].get("n") for r in busy if slots[r].get("sig")}
    step = max(steps) if steps else None
    behind = [r for r, s in enumerate(slots) if r not in busy
              or (step is not None and slots[r].get("sig") and slots[r].get("n") != step)]
    if behind and busy:
        r = behind[0]
        s = slots[r]
        state = f"returned {where(s)}" if s.get("s") == "ok" else f"hung {where(s)}"
        return r, (f"{state}{waiters(slots, {r})} for {timeout:g} s (collective_timeout): a collective called "
                   "on some ranks only, or a loop that does not end?")
    if busy:
        r = busy[0]
        return r, (f"hung {where(slots[r])}{waiters(slots, {r})}: gloo's timeout of {timeout:g} s passed "
                   "(collective_timeout) with every rank in it: a collective with sizes that differ in a way "
                   "the check cannot see, or a collective on another group?")
    r = next((r for r in range(world_size) if r not in answered), 0)
    return r, f"hung {where(slots[r])}"


def failure(answers: dict[int, tuple], slots: list[dict], world_size: int, timeout: float,
            echo) -> tuple[int, str, str]:
    """The rank to name, the line, and its traceback, from the ranks' answers (``(status, text,
    traceback)``; missing: it did not answer) and the table: the first real error (one raised
    for its own reason), then a rank that died, then ranks that called different collectives,
    then one that hung; the others' "Connection closed by peer" and timeouts (``echo(text)``)
    are its echo."""
    answered = set(answers)
    answers = {r: answers.get(r, ("hung", "", "")) for r in range(world_size)}
    failed = [r for r in range(world_size) if answers[r][0] != "ok"]
    real = [r for r in failed if answers[r][0] == "raised" and not echo(answers[r][1])]
    if real:
        r = real[0]
        at = f" in {called(slots[r])}" if inside(slots[r]) else ""
        return r, f"{answers[r][1]}{at}{waiters(slots, {r})}", answers[r][2]
    dead = [r for r in failed if answers[r][0] == "died"]
    if dead:
        r = dead[0]
        return r, f"died ({answers[r][1]}) {where(slots[r])}{waiters(slots, {r})}", ""
    found = mismatch(slots, world_size)
    if found:
        return found[0], found[1], ""
    r, text = hung(slots, world_size, timeout, answered)
    return r, text, ""


def crash(headline: str, log: list[str]) -> str:
    """``Fatal Python error: Segmentation fault at my_tp.py:23``: faulthandler's headline and
    the user's innermost line of the stack it printed."""
    for line in log:
        found = re.match(r'\s*File "(.+)", line (\d+)', line)
        if found and _users(found.group(1)):
            return f"{headline} at {os.path.basename(found.group(1))}:{found.group(2)}"
    return headline
