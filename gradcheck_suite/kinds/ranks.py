"""A pool of rank processes in one ``torch.distributed`` process group, reused across cases.

:class:`RankPool` starts ``world_size`` Python processes that join one gloo process group
(CPU), rendezvousing through a ``file://`` store in a temporary folder of their own (never a
fixed port: two runs on one machine cannot meet).  Starting the ranks costs seconds (each
imports torch); a case then costs milliseconds, so :func:`pool` keeps one pool per world size
for the whole run, and :func:`close_all` (registered with ``atexit``) ends them.

The interface, for the harness and for whatever supervises the ranks:

- ``RankPool(world_size).run(task, payloads) -> [result per rank]``: sends ``payloads[r]``
  to rank ``r``, which calls ``task(payload, rank, world_size)`` (``task`` is
  ``"module:function"``, imported in the rank) and returns what it returned.  Where a rank
  raises, :class:`RankError` names the first real error (not the "Connection closed by peer"
  that the other ranks then report, nor a timeout of theirs); where a rank did not answer
  (it waits in a collective that will never complete) or died, the pool is closed, and the
  next case starts it again; where every rank answered, none waits, and the pool stays;
- ``RankPool.close()``: ends every rank (asks, then kills), leaves no process and no folder;
- :func:`pool` (the run's pool of a world size, started or restarted as needed),
  :func:`pids` (every rank process now running), :func:`close_all`, and :func:`prestart`
  (start the zygote, below, before forking processes that will want ranks).

Why separate processes started with ``subprocess`` and a socket, not ``multiprocessing``'s
spawn: spawn re-runs the parent's main script in each rank, and a user's script that calls
the harness without an ``if __name__ == "__main__"`` guard would then start ranks of its own.
A rank here runs this module only, loads the record it is asked about by its model file or
module (as the registry does), and exits as soon as its connection to the parent closes, so
that no rank outlives a parent that dies.  Messages are plain pickles: a tensor keeps its
strides (a transposed or expanded view reaches the rank as that view).
"""
from __future__ import annotations

import atexit
import importlib
import json
import os
import pickle
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from multiprocessing.connection import Connection, wait
from multiprocessing.util import Finalize

from ..record.errors import ContractError
from ..verdict import rules
from . import collectives

__all__ = ["RankPool", "RankError", "pool", "pids", "close_all", "prestart", "ECHOES", "collective_timeout",
           "busy_text"]

#: ``check --collective-timeout S``: the seconds every sharded record's collectives wait, over
#: the record's own ``collective_timeout`` (None: the record's, else ``rules.SHARDED_TIMEOUT``)
TIMEOUT_OVERRIDE: float | None = None


def collective_timeout(own: float | None = None) -> float:
    """The seconds a collective waits for the other ranks: ``--collective-timeout``, else the
    record's ``collective_timeout``, else ``rules.SHARDED_TIMEOUT``."""
    if TIMEOUT_OVERRIDE is not None:
        return float(TIMEOUT_OVERRIDE)
    return float(rules.SHARDED_TIMEOUT if own is None else own)

#: the words of an error that a rank reports because another rank failed first: gloo's
#: "Connection closed by peer" or "Connection reset", and timeouts waiting for a rank that died
ECHOES = ("connection closed by peer", "connection reset by peer", "connection reset", "broken pipe",
          "timed out", "timeout")


class RankError(ContractError):
    """A rank raised, died or did not answer: one line naming the rank, and the cause."""

    def __init__(self, rank: int, world_size: int, text: str, traceback_text: str = ""):
        self.rank, self.world_size, self.traceback_text = rank, world_size, traceback_text
        super().__init__(f"rank {rank} of {world_size}{'' if text.startswith(':') else ' '}{text}")


class RankPool:
    """``world_size`` rank processes in one gloo process group; see the module's docstring."""

    def __init__(self, world_size: int, *, timeout: float | None = None):
        if not isinstance(world_size, int) or world_size < 1:
            raise ValueError(f"world_size={world_size!r} must be a whole number >= 1")
        self.world_size = world_size
        self.timeout = rules.SHARDED_TIMEOUT if timeout is None else timeout
        self.folder: str | None = None
        self.procs: list[_Rank] = []
        self.conns: list = []
        self.started_in = 0.0          # seconds the last start took
        self.tasks = 0                 # the tasks sent, numbering each rank's slot in the table
        self.match = True              # the ranks compare their collectives before calling them
        self.waiting: set[int] | None = None   # the ranks a task waits for now (busy_text)
        self.measure = False           # keep the longest seconds a rank spent in one collective ...
        self.longest = 0.0             # ... here (benchmarks/collective_wait.py)
        # one case at a time: a case abandoned at its time limit (run/limits.py) may still be
        # waiting for the ranks in its thread when the next case begins
        self.lock = threading.RLock()

    @property
    def alive(self) -> bool:
        return bool(self.procs) and all(p.alive() for p in self.procs)

    def start(self) -> RankPool:
        """Start the ranks and wait until each has joined the process group."""
        if self.alive:
            return self
        self.close()
        begun = time.perf_counter()
        self.folder = tempfile.mkdtemp(prefix="gradcheck-ranks-")
        collectives.create(self.table, self.world_size)
        address = os.path.join(self.folder, "parent.sock")     # the folder is the user's own (mode 0700)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(address)
        listener.listen(self.world_size)
        # short steps: a case abandoned at its time limit while the ranks start stops here at once
        listener.settimeout(rules.SHARDED_POLL)
        joined_by = time.monotonic() + rules.SHARDED_START_TIMEOUT
        try:
            for r in range(self.world_size):
                args = [address, self.folder, r, self.world_size, self.timeout]
                log = os.path.join(self.folder, f"rank{r}.log")
                try:
                    self.procs.append(_zygote().fork(args, log))
                except OSError:           # it ended since (killed, say): once more with a new one
                    self.procs.append(_zygote(fresh=True).fork(args, log))
            by_rank: dict[int, object] = {}
            while len(by_rank) < self.world_size:
                try:
                    sock, _ = listener.accept()
                except socket.timeout:
                    if time.monotonic() > joined_by:
                        raise OSError(f"no rank connected within {rules.SHARDED_START_TIMEOUT:g} s") from None
                    continue
                sock.setblocking(True)
                conn = Connection(sock.detach())
                by_rank[conn.recv()] = conn
            self.conns = [by_rank[r] for r in range(self.world_size)]
            for r, conn in enumerate(self.conns):
                while not conn.poll(rules.SHARDED_POLL) and time.monotonic() < joined_by:
                    pass
                if not conn.poll(0):
                    raise RankError(r, self.world_size, f"did not join the process group within "
                                                        f"{rules.SHARDED_START_TIMEOUT:g} s{self._log_tail(r)}")
                status = conn.recv()
                if status != "ready":
                    raise RankError(r, self.world_size, f"could not start: {status}")
        except BaseException as e:
            listener.close()
            self.close()
            if isinstance(e, OSError):
                raise RuntimeError(f"the ranks of world size {self.world_size} did not start: {e}") from None
            raise
        listener.close()
        self.started_in = time.perf_counter() - begun
        return self

    @property
    def table(self) -> str:
        """The file every rank writes its collective to (``collectives.py``)."""
        return os.path.join(self.folder or "", "collectives")

    def run(self, task: str, payloads: list) -> list:
        """Each rank's result of ``task(payloads[rank], rank, world_size)``; see the module."""
        if len(payloads) != self.world_size:
            raise ValueError(f"{len(payloads)} payloads for {self.world_size} ranks")
        with self.lock:
            return self._run(task, payloads)

    def _run(self, task: str, payloads: list) -> list:
        self.start()
        try:
            return self._send(task, payloads)
        except RankError:
            raise                  # the pool was closed where the ranks are out of step
        except BaseException:
            # abandoned at the case's time limit (run/limits.py), or interrupted: the ranks are
            # out of step, and none may outlive the case
            if self.waiting is not None:
                self.close(kill=True)
            raise
        finally:
            self.waiting = None

    def _send(self, task: str, payloads: list) -> list:
        self.tasks += 1
        self.waiting = set(range(self.world_size))
        try:
            for conn, payload in zip(self.conns, payloads):
                conn.send_bytes(pickle.dumps((task, payload, self.tasks, self.match),
                                             protocol=pickle.HIGHEST_PROTOCOL))
        except OSError as e:
            self.close()
            raise RankError(0, self.world_size, f"could not be reached: {e}") from None
        answers = self._answers()
        if len(answers) == self.world_size and all(a[0] == "ok" for a in answers.values()):
            if self.measure:
                self.longest = max([self.longest, *(s.get("longest", 0.0) for s in
                                                    collectives.read(self.table, self.world_size))])
            return [answers[r][1] for r in range(self.world_size)]
        slots = collectives.read(self.table, self.world_size)
        if len(answers) < self.world_size or any(a[0] in ("hung", "died") for a in answers.values()) \
                or any(s.get("gloo") for s in slots):
            # out of step: a rank waits in a collective, or is gone, or one stopped inside gloo
            self.close(kill=True)
        first, text, trace = collectives.failure(answers, slots, self.world_size, self.timeout, _echo)
        raise RankError(first, self.world_size, text, trace)

    def _answers(self) -> dict[int, tuple]:
        """Each rank's answer, as it comes: ``("ok", result, "")``, or ``(status, text,
        traceback)`` for one that raised, died or hung.  Once a rank has failed, the others
        get ``SHARDED_ECHO_WAIT`` more (they are waiting in a collective that will never
        complete: their own errors would only echo it), and whoever has not answered is left
        out."""
        answers: dict[int, tuple] = {}
        pending = {conn: r for r, conn in enumerate(self.conns)}
        limit = self.timeout + rules.SHARDED_GRACE
        deadline = None            # set once a rank has failed
        while pending:
            # short steps: a rank's collective is looked at between them, and a case abandoned at
            # its time limit stops here at once (run/limits.py)
            ready = wait(list(pending), timeout=rules.SHARDED_POLL)
            for conn in ready:
                r = pending.pop(conn)
                self.waiting.discard(r)
                try:
                    answers[r] = pickle.loads(conn.recv_bytes())
                except (EOFError, OSError):
                    self.procs[r].wait(rules.SHARDED_CLOSE_WAIT)
                    answers[r] = ("died", self._death(r), "")
                if answers[r][0] != "ok" and deadline is None:
                    deadline = time.monotonic() + rules.SHARDED_ECHO_WAIT
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                break
            if pending and not ready:
                # a rank inside one collective past its timeout and the grace: gloo did not end it
                slots = collectives.read(self.table, self.world_size)
                stuck = [r for r in pending.values() if collectives.inside(slots[r])
                         and slots[r].get("t") == self.tasks and now - slots[r].get("since", now) > limit]
                if stuck and deadline is None:
                    deadline = now + rules.SHARDED_ECHO_WAIT
        return answers

    def _death(self, rank: int) -> str:
        """Why a rank died: faulthandler's headline and the user's line of its stack, else its
        exit status (the zygote writes it), else the last line it printed."""
        log = self._log(rank)
        fatal = [line.strip() for line in log if line.startswith("Fatal Python error")]
        code = ""
        end = time.monotonic() + rules.SHARDED_ECHO_WAIT
        while not code and time.monotonic() < end:
            try:
                with open(os.path.join(self.folder or "", f"rank{rank}.log.exit")) as f:
                    code = f.read().strip()
            except OSError:
                time.sleep(0.01)
        if fatal:
            return collectives.crash(fatal[-1], log)
        if code:
            return code
        return log[-1].strip() if log else "no exit status"

    def close(self, kill: bool = False) -> None:
        """End every rank (asked first, then killed; ``kill``: at once) and remove the folder."""
        for conn in self.conns if not kill else ():
            try:
                conn.send_bytes(pickle.dumps(None))
            except OSError:
                pass
        end = time.monotonic() + (0.0 if kill else rules.SHARDED_CLOSE_WAIT)
        for proc in self.procs:
            if not proc.wait(max(0.0, end - time.monotonic())):
                proc.kill()
        for conn in self.conns:
            conn.close()
        self.procs, self.conns = [], []
        if self.folder:
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder = None

    def _log(self, rank: int) -> list[str]:
        """The lines a rank wrote to its output."""
        try:
            with open(os.path.join(self.folder or "", f"rank{rank}.log"), "rb") as f:
                return f.read().decode(errors="replace").strip().splitlines()
        except OSError:
            return []

    def _log_tail(self, rank: int) -> str:
        """What a rank last wrote to its output (faulthandler's "Fatal Python error: ..." where
        it crashed), as ``: ...``, or ''."""
        lines = self._log(rank)
        fatal = [line for line in lines if line.startswith("Fatal Python error")]   # faulthandler's headline
        return f": {(fatal or lines)[-1].strip()}" if lines else ""


def _echo(text: str) -> bool:
    low = text.lower()
    return any(e in low for e in ECHOES)


_POOLS: dict[int, RankPool] = {}
_ZYGOTE: list[_Zygote] = []       # the process that forks the ranks, once started
_OWNER = os.getpid()              # the process these belong to
_FORKING = threading.Lock()       # one request to the zygote at a time


def pool(world_size: int, timeout: float | None = None) -> RankPool:
    """The run's pool of ``world_size`` ranks: started on first use, restarted after a failure,
    and with another collective ``timeout`` (seconds; None: ``collective_timeout()``)."""
    timeout = collective_timeout() if timeout is None else float(timeout)
    global _OWNER
    if _OWNER != os.getpid():     # a forked child (--isolate): the parent's pools are not its own; its
        _POOLS.clear()            # zygote serves the child too (one model's process at a time)
        _OWNER = os.getpid()
    got = _POOLS.get(world_size)
    if got is not None and got.timeout != timeout:
        with got.lock:
            got.close()        # gloo's timeout is the process group's: a new group for another one
        got = None
    if got is None:
        if not _POOLS:
            # a process that multiprocessing started (the check's --isolate child) ends without
            # running atexit; its finalizers do run
            Finalize(None, close_all, exitpriority=0)
        got = _POOLS[world_size] = RankPool(world_size, timeout=timeout)
    with got.lock:             # not while a case abandoned at its time limit still closes it
        return got.start()


def busy_text() -> str:
    """Where the ranks of a task still running are (for the case's timeout message): ``rank 1
    of 2 was running outside any collective ...``, or ''."""
    for p in list(_POOLS.values()):
        waiting = p.waiting
        if waiting and p.folder:
            slots = collectives.read(p.table, p.world_size)
            return "; ".join(f"rank {r} of {p.world_size} was still running {collectives.where(slots[r])}"
                             for r in sorted(waiting))
    return ""


def pids() -> list[int]:
    """The process ids of every rank of this process's pools (for a supervisor, and tests)."""
    return [proc.pid for p in _POOLS.values() for proc in p.procs]


def close_all() -> None:
    """End every pool of this process (at exit, and wherever a run wants its ranks gone)."""
    if _OWNER == os.getpid():
        for p in list(_POOLS.values()):
            p.close()
        _POOLS.clear()
    for z in [z for z in _ZYGOTE if z.owner == os.getpid()]:
        z.close()
        _ZYGOTE.remove(z)


def prestart() -> None:
    """Start the process that forks the ranks now, in this process: the processes this one
    forks later (``check --isolate``, a model each) then share it, and none of them pays for
    its import of torch."""
    _zygote()


atexit.register(close_all)


# -- the rank's side ---------------------------------------------------------------------

class _Rank:
    """A rank process forked by the zygote (not this process's child: the zygote reaps it)."""

    def __init__(self, pid: int):
        self.pid = pid

    def alive(self) -> bool:
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    def wait(self, seconds: float) -> bool:
        """Whether it has ended within ``seconds``."""
        end = time.monotonic() + seconds
        while self.alive():
            if time.monotonic() >= end:
                return False
            time.sleep(0.01)
        return True

    def kill(self) -> None:
        try:
            os.kill(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.wait(rules.SHARDED_CLOSE_WAIT)


class _Zygote:
    """A process that imports torch once and forks every rank from there: a rank then starts
    in milliseconds instead of seconds (each would import torch itself).  It forks before any
    thread exists (torch starts its thread pools on first use, which is in the rank), and it
    ends when this process closes its input or dies."""

    def __init__(self):
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p), OMP_NUM_THREADS="1")
        self.proc = subprocess.Popen([sys.executable, "-c", f"from {__name__} import zygote; zygote()"],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
        self.owner = os.getpid()

    def alive(self) -> bool:
        if self.owner == os.getpid():
            return self.proc.poll() is None
        return _Rank(self.proc.pid).alive()       # a forked child cannot wait for its parent's child

    def fork(self, args: list, log: str) -> _Rank:
        with _FORKING:
            return self._fork(args, log)

    def _fork(self, args: list, log: str) -> _Rank:
        self.proc.stdin.write((json.dumps([*args, log]) + "\n").encode())
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line.strip():
            raise OSError(f"the process that starts the ranks ended (exit code {self.proc.poll()})")
        return _Rank(int(line))

    def close(self) -> None:
        try:
            self.proc.stdin.close()
            self.proc.wait(rules.SHARDED_CLOSE_WAIT)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait()
        self.proc.stdout.close()


def _zygote(fresh: bool = False) -> _Zygote:
    if fresh or not _ZYGOTE or not _ZYGOTE[0].alive():
        _ZYGOTE[:] = [_Zygote()]
    return _ZYGOTE[0]


def zygote() -> None:
    """The zygote's loop: one line of JSON in (a rank's arguments and its log file), the
    forked rank's pid out."""
    import torch  # noqa: F401  the import every rank would pay for, paid once
    import torch.distributed  # noqa: F401

    importlib.import_module(f"{__package__}.sharding")
    logs: dict[int, str] = {}
    ended: dict[int, str] = {}

    def reap(signum, frame) -> None:
        # the ranks are reaped as they end, and each one's exit status is written beside its log
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            log = logs.pop(pid, None)
            if log is None:
                ended[pid] = _status(status)
            else:
                _write_exit(log, _status(status))

    signal.signal(signal.SIGCHLD, reap)
    for line in sys.stdin:
        *args, log = json.loads(line)
        pid = os.fork()
        if pid == 0:
            try:
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                os.dup2(fd, 1)
                os.dup2(fd, 2)
                os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
                serve(*args)
            finally:
                os._exit(0)
        logs[pid] = log
        if pid in ended:           # it ended before its log was noted
            _write_exit(logs.pop(pid), ended.pop(pid))
        sys.stdout.write(f"{pid}\n")
        sys.stdout.flush()


def _status(status: int) -> str:
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = str(sig)
        return f"killed by {name}"
    return f"exit code {os.waitstatus_to_exitcode(status)}"


def _write_exit(log: str, text: str) -> None:
    try:
        with open(log + ".exit", "w") as f:
            f.write(text)
    except OSError:
        pass


def serve(address: str, folder: str, rank: int, world_size: int, timeout: float) -> None:
    """A rank: join the process group, then run tasks until the parent says stop or goes."""
    import faulthandler

    faulthandler.enable()      # a crash leaves its stack in the rank's log, whose last line is reported
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(address)
    conn = Connection(sock.detach())
    conn.send(rank)
    try:
        import datetime

        import torch
        import torch.distributed as dist

        torch.set_num_threads(1)
        dist.init_process_group("gloo", init_method="file://" + os.path.join(folder, "store"), rank=rank,
                                world_size=world_size, timeout=datetime.timedelta(seconds=timeout))
        collectives.install(collectives.Table(os.path.join(folder, "collectives"), rank, world_size))
    except Exception as e:
        conn.send(f"{type(e).__name__}: {e}")
        return
    conn.send("ready")
    while True:
        try:
            message = pickle.loads(conn.recv_bytes())
        except (EOFError, OSError):
            break
        if message is None:
            break
        task, payload, number, match = message
        collectives.begin(number, timeout, match)
        try:
            module, _, name = task.partition(":")
            result = getattr(importlib.import_module(module), name)(payload, rank, world_size)
            answer = ("ok", result, "")
        except Exception as e:
            fault = _fault(e)
            answer = (fault.kind, str(fault), "") if fault is not None else \
                ("raised", _one_line(e), "".join(traceback.format_exception(e)))
        collectives.end("ok" if answer[0] == "ok" else "raised")
        try:
            conn.send_bytes(pickle.dumps(answer, protocol=pickle.HIGHEST_PROTOCOL))
        except OSError:
            break
    try:
        dist.destroy_process_group()
    except Exception:
        pass


def _fault(e: BaseException | None):
    """The :class:`collectives.CollectiveFault` behind ``e``, if any."""
    seen = 0
    while e is not None and seen < 20:
        if isinstance(e, collectives.CollectiveFault):
            return e
        e, seen = e.__cause__ or e.__context__, seen + 1
    return None


def _one_line(e: BaseException) -> str:
    """``raised TypeError: ... (at file.py:12)`` for the user's frame closest to the error."""
    if isinstance(e, ContractError):
        return ": " + str(e)
    text = str(e).strip().splitlines()[0] if str(e).strip() else ""
    frames = [f for f in traceback.extract_tb(e.__traceback__) if os.sep + "gradcheck_suite" + os.sep not in f.filename
              and "torch" + os.sep not in f.filename]
    at = f" (at {os.path.basename(frames[-1].filename)}:{frames[-1].lineno})" if frames else ""
    return f"raised {type(e).__name__}: {text}{at}"
