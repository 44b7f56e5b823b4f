"""The processes of the local control plane, supervised through ``/proc`` (Linux only).

``spawn`` starts a process in its own session with its output appended to a log; a
:class:`ProcessRecord` (PID, executable, start time) recognises it later, so that a recycled PID is
never signalled. ``wait_for`` polls a check until it holds; ``http_get`` probes health endpoints.
"""

from __future__ import annotations

import contextlib
import os
import socket
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


class ClusterError(RuntimeError):
    """The cluster could not be brought up, stopped or reached; the message says what to do."""


class ComponentExited(ClusterError):
    """A component died while we waited for it: no point waiting any longer."""


def wait_for(
    check: Callable[[], T | None],
    timeout: float,
    what: str,
    interval: float = 0.25,
) -> T:
    """Poll ``check`` until it returns something other than None/False; ClusterError on timeout."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while True:
        try:
            result = check()
            if result is not None and result is not False:
                return result
        except ComponentExited:
            raise
        except Exception as exc:  # any failure (refused, 503, not found) just means "not yet"
            last_error = exc
        if time.monotonic() > deadline:
            detail = f" (last error: {last_error})" if last_error else ""
            raise ClusterError(f"timed out after {timeout:.0f}s waiting for {what}{detail}")
        time.sleep(interval)


@dataclass(frozen=True)
class ProcessRecord:
    """What we wrote when we started a process: enough to recognise it later."""

    name: str
    pid: int
    exe: str
    start_time: int  # clock ticks since boot (/proc/<pid>/stat field 22)
    port: int

    def is_alive(self) -> bool:
        """True if this PID is still the very process we started (not a recycled PID, not a zombie)."""
        stat = proc_stat(self.pid)
        if stat is None or stat[0] in ("Z", "X"):
            return False
        if int(stat[19]) != self.start_time:
            return False
        return proc_exe(self.pid) in (self.exe, None)


def proc_stat(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name (state first), or None if gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The command name is in parentheses and may itself contain spaces or ')'.
    return text[text.rindex(")") + 2 :].split()


def proc_exe(pid: int) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/exe").removesuffix(" (deleted)")
    except PermissionError:
        return None  # can't tell; start time already matched
    except OSError:
        return ""


def rss_mib(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def reap(pid: int) -> None:
    """Collect the exit status if the process is our child (e.g. started from pytest)."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def spawn(argv: Sequence[str], log_path: Path, env: dict[str, str]) -> int:
    """Start a process in its own session, output appended to ``log_path``; return its PID.

    posix_spawn rather than subprocess.Popen: no Popen object outlives this call, so there is no
    "subprocess still running" ResourceWarning (pytest runs with -W error) and nothing to reap
    here; ``down`` reaps it if it is our child.
    """
    actions = [
        (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
        (os.POSIX_SPAWN_OPEN, 1, str(log_path), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644),
        (os.POSIX_SPAWN_DUP2, 1, 2),
    ]
    return os.posix_spawn(argv[0], list(argv), env, file_actions=actions, setsid=True)


def free_ports(count: int) -> list[int]:
    """Distinct free loopback ports (held open together so the kernel cannot repeat one)."""
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def http_get(url: str, context: ssl.SSLContext | None = None, timeout: float = 5) -> tuple[int, bytes]:
    """GET ``url``; (status, body) for any HTTP status, OSError only when nothing answered.

    An HTTPError carries an open response: closing it here avoids an "unclosed socket"
    ResourceWarning (an error under pytest -W error).
    """
    request = urllib.request.Request(url, headers={"Accept": "application/json"})
    try:
        with urllib.request.urlopen(request, context=context, timeout=timeout) as response:
            return int(response.status), response.read()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, error.read()


def log_tail(path: Path, lines: int = 25) -> str:
    try:
        return "".join(path.read_text(errors="replace").splitlines(keepends=True)[-lines:])
    except OSError:
        return "(no log)\n"
