"""The HTTP server (uvicorn) in its own thread with its own event loop, beside Kopf's loop, and the
limits that keep slow or hostile clients from holding it (or the process's file descriptors).

uvicorn alone waits for a request's headers forever and accepts every connection, so a few
thousand connections that send nothing (or one byte a minute) exhaust the process's file
descriptors — and then Kopf's and the reconciler's own Kubernetes calls fail. :class:`HttpLimits`
bounds that, in :func:`limited_protocol` (uvicorn's h11 protocol with three additions):

* **read timeout**: a request's headers and body must arrive within ``read_timeout`` seconds of the
  connection opening (or of the previous response); else the connection is closed;
* **idle timeout**: a kept-alive connection with no new request is closed after ``idle_timeout``
  (uvicorn's keep-alive timeout);
* **connection limit**: at most ``max_connections`` open at once. A new connection beyond it
  evicts the one that has waited longest for its request (slow or idle clients go first, so a
  probe or a scrape still gets through); when every connection is busy with a request, the new
  one gets ``503`` and is closed. The listen backlog is the limit too (asyncio accepts up to a
  backlog's worth per wake-up), so descriptors stay below twice the limit even in a burst.

The server binds the given addresses only (``--host``, repeatable; the default is ``$POD_IP`` when
set, else loopback: never every interface unless asked — docs/security.md).
"""

from __future__ import annotations

import asyncio
import os
import socket
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import uvicorn
from fastapi import FastAPI
from uvicorn.protocols.http.h11_impl import H11Protocol

_REJECT = b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"


@dataclass(frozen=True, slots=True)
class HttpLimits:
    read_timeout: float = 10.0  # seconds for a request's headers and body
    idle_timeout: float = 5.0  # seconds a kept-alive connection may wait for its next request
    max_connections: int = 100

    def __post_init__(self) -> None:
        if not (self.read_timeout > 0 and self.idle_timeout > 0):
            raise ValueError("HTTP timeouts must be > 0 seconds")
        if self.max_connections < 1:
            raise ValueError(f"max connections must be >= 1, got {self.max_connections}")


def default_hosts() -> list[str]:
    """``$POD_IP`` (the chart sets it from the downward API) when set, else loopback."""
    pod_ip = os.environ.get("POD_IP", "").strip()
    return [pod_ip] if pod_ip else ["127.0.0.1"]


def limited_protocol(limits: HttpLimits) -> type[H11Protocol]:
    """uvicorn's h11 protocol with the read timeout and the connection limit of ``limits``."""

    class LimitedH11Protocol(H11Protocol):
        _waiting_since: float = 0.0  # when it began to wait for its current request
        _deadline: asyncio.TimerHandle | None = None
        _rejected = False

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            if len(self.connections) >= limits.max_connections and not _evict(self.connections):
                self._rejected = True
                self.transport = transport
                transport.write(_REJECT)
                transport.close()
                return
            super().connection_made(transport)
            self._wait_for_request()

        def _wait_for_request(self) -> None:
            self._waiting_since = time.monotonic()
            if self._deadline is not None:
                self._deadline.cancel()
            self._deadline = self.loop.call_later(limits.read_timeout, self._read_timed_out)

        def waiting(self) -> bool:
            """Still receiving its request (or idle between requests)."""
            cycle = self.cycle
            return cycle is None or cycle.response_complete or cycle.more_body

        def _read_timed_out(self) -> None:
            self._deadline = None
            if self.waiting() and not self.transport.is_closing():
                self.transport.close()

        def data_received(self, data: bytes) -> None:
            if not self._rejected:
                super().data_received(data)

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._wait_for_request()

        def connection_lost(self, exc: Exception | None) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None
            if self._rejected:
                return
            super().connection_lost(exc)

    def _evict(connections: set[Any]) -> bool:
        """Close the connection that has waited longest for its request; False if all are busy."""
        candidates = [
            c
            for c in connections
            if isinstance(c, LimitedH11Protocol) and c.waiting() and not c.transport.is_closing()
        ]
        if not candidates:
            return False
        victim = min(candidates, key=lambda c: c._waiting_since)
        victim.transport.close()
        connections.discard(victim)  # its slot is free now; connection_lost discards it again
        return True

    return LimitedH11Protocol


def bind(hosts: Sequence[str], port: int) -> list[socket.socket]:
    """Listening sockets on ``hosts`` (the first one's port for all when ``port`` is 0)."""
    out: list[socket.socket] = []
    try:
        for host in hosts:
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            sock = socket.socket(family, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind((host.strip("[]"), port))
            port = port or int(sock.getsockname()[1])
            sock.set_inheritable(False)
            out.append(sock)
    except OSError:
        for sock in out:
            sock.close()
        raise
    return out


class HttpServer:
    def __init__(
        self,
        app: FastAPI,
        hosts: Sequence[str] | str = ("127.0.0.1",),
        port: int = 8080,
        limits: HttpLimits | None = None,
    ) -> None:
        self.hosts = [hosts] if isinstance(hosts, str) else list(dict.fromkeys(hosts))
        self.limits = limits or HttpLimits()
        config = uvicorn.Config(
            app,
            host=self.hosts[0],
            port=port,
            log_level="warning",
            lifespan="off",
            access_log=False,
            http=limited_protocol(self.limits),
            timeout_keep_alive=self.limits.idle_timeout,  # type: ignore[arg-type]
            # asyncio accepts up to ``backlog`` connections per wake-up before any protocol runs:
            # with the limit as the backlog, descriptors stay below twice the limit in a burst.
            backlog=self.limits.max_connections,
        )
        self.server = uvicorn.Server(config)
        self.sockets: list[socket.socket] = []
        self.requested_port = port
        self.thread = threading.Thread(target=self._run, name="hetsched-http", daemon=True)
        self.error: BaseException | None = None

    def _run(self) -> None:
        try:
            asyncio.run(self.server.serve(sockets=self.sockets))
        except BaseException as exc:  # reported by start()/the caller
            self.error = exc

    def start(self, timeout: float = 10.0) -> None:
        """Bind and start serving; raise if an address cannot be bound or serving does not start."""
        try:
            self.sockets = bind(self.hosts, self.requested_port)
        except OSError as exc:
            raise RuntimeError(
                f"HTTP server cannot listen on {', '.join(self.hosts)} port {self.requested_port}: {exc}"
            ) from None
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive():
                raise RuntimeError(f"HTTP server did not start: {self.error or 'exited'}")
            if time.monotonic() > deadline:
                raise RuntimeError("HTTP server did not start in time")
            time.sleep(0.02)

    @property
    def port(self) -> int:
        for sock in self.sockets:
            return int(sock.getsockname()[1])
        return int(self.server.config.port)

    def urls(self) -> list[str]:
        return [f"http://{'[' + h + ']' if ':' in h else h}:{self.port}" for h in self.hosts]

    def stop(self, timeout: float = 5.0) -> None:
        self.server.should_exit = True
        self.thread.join(timeout)
