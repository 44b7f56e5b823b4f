"""The HTTP server's limits, in process with real sockets: slow clients are cut off after the read
timeout, the connection limit evicts the client that waited longest, and /healthz still answers."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import httpx
import pytest
from fastapi import FastAPI
from hetsched.operator.api.server import HttpLimits, HttpServer, default_hosts


@pytest.fixture
def server() -> Iterator[HttpServer]:
    app = FastAPI()

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    srv = HttpServer(app, ["127.0.0.1"], 0, HttpLimits(read_timeout=1.0, idle_timeout=0.5, max_connections=8))
    srv.start()
    yield srv
    srv.stop()


def _closed(s: socket.socket, within: float) -> bool:
    """The server closed ``s`` within ``within`` seconds (what it still sends is read and dropped)."""
    deadline = time.monotonic() + within
    while (left := deadline - time.monotonic()) > 0:
        s.settimeout(left)
        try:
            if s.recv(65536) == b"":
                return True
        except TimeoutError:
            return False
        except OSError:
            return True
    return False


def test_a_client_that_never_finishes_its_headers_is_cut_off(server: HttpServer) -> None:
    with socket.create_connection(("127.0.0.1", server.port)) as s:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        t0 = time.monotonic()
        for _ in range(5):  # a byte now and then does not extend it
            time.sleep(0.15)
            s.sendall(b"X")
        assert _closed(s, 3)
        assert 0.9 <= time.monotonic() - t0 < 3


def test_an_idle_kept_alive_connection_is_closed(server: HttpServer) -> None:
    with socket.create_connection(("127.0.0.1", server.port)) as s:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        s.settimeout(2)
        assert b"200 OK" in s.recv(4096)
        t0 = time.monotonic()
        assert _closed(s, 3)
        assert time.monotonic() - t0 < 1.5  # the idle timeout (0.5 s), not the read timeout


def test_the_connection_limit_evicts_the_longest_waiting(server: HttpServer) -> None:
    idle = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(20)]
    try:
        r = httpx.get(f"http://127.0.0.1:{server.port}/healthz", timeout=2)
        assert r.status_code == 200  # a new client gets in although 20 sockets are open
        time.sleep(0.2)
        assert sum(_closed(s, 0.05) for s in idle[:10]) >= 10  # the oldest went first
        assert len(server.server.server_state.connections) <= 8
    finally:
        for s in idle:
            s.close()


def test_bind_defaults_to_the_pod_ip_else_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("POD_IP", raising=False)
    assert default_hosts() == ["127.0.0.1"]
    monkeypatch.setenv("POD_IP", "10.1.2.3")
    assert default_hosts() == ["10.1.2.3"]


def test_limits_are_checked() -> None:
    with pytest.raises(ValueError):
        HttpLimits(max_connections=0)
    with pytest.raises(ValueError):
        HttpLimits(read_timeout=0)
