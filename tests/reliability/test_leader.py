"""Leader election (``hetsched.operator.leader``) against an in-memory Lease API with the API
server's optimistic concurrency (409 on a stale ``resourceVersion``): one leader among candidates,
takeover after a crash only once the Lease expired, immediate takeover after a release, and a
leader that cannot renew stops before anyone else can lead. No cluster needed."""

from __future__ import annotations

import contextlib
import datetime as dt
import threading
import time
from collections.abc import AsyncIterator, Callable
from types import SimpleNamespace
from typing import Any

import pytest
from hetsched.operator.leader import LeaderElector, LeaseConfig, _micro_time
from kubernetes_asyncio.client.exceptions import ApiException

LEASE, RENEW, RETRY = 2.0, 1.2, 0.1


def _parse(t: str | None) -> dt.datetime | None:
    return None if t is None else dt.datetime.strptime(t, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=dt.UTC)


class FakeLeases:
    """One namespace's Leases, shared by the candidates (each in its own thread and loop)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.stored: dict[str, dict[str, Any]] = {}
        self.version = 0
        self.writes: list[tuple[float, str | None]] = []  # (when, holder) of each successful write

    def _obj(self, body: dict[str, Any]) -> Any:
        spec = body["spec"]
        return SimpleNamespace(
            metadata=SimpleNamespace(resource_version=body["metadata"]["resourceVersion"]),
            spec=SimpleNamespace(
                holder_identity=spec.get("holderIdentity"),
                lease_duration_seconds=spec.get("leaseDurationSeconds"),
                acquire_time=_parse(spec.get("acquireTime")),
                renew_time=_parse(spec.get("renewTime")),
                lease_transitions=spec.get("leaseTransitions"),
            ),
        )

    def _store(self, name: str, body: dict[str, Any]) -> Any:
        self.version += 1
        body = {**body, "metadata": {**body["metadata"], "resourceVersion": str(self.version)}}
        self.stored[name] = body
        self.writes.append((time.monotonic(), body["spec"].get("holderIdentity")))
        return self._obj(body)

    async def read_namespaced_lease(self, name: str, namespace: str, **_: Any) -> Any:
        with self.lock:
            if name not in self.stored:
                raise ApiException(status=404, reason="Not Found")
            return self._obj(self.stored[name])

    async def create_namespaced_lease(self, namespace: str, body: dict[str, Any], **_: Any) -> Any:
        with self.lock:
            if body["metadata"]["name"] in self.stored:
                raise ApiException(status=409, reason="AlreadyExists")
            return self._store(body["metadata"]["name"], body)

    async def replace_namespaced_lease(
        self, name: str, namespace: str, body: dict[str, Any], **_: Any
    ) -> Any:
        with self.lock:
            current = self.stored.get(name)
            if current is None:
                raise ApiException(status=404, reason="Not Found")
            if body["metadata"].get("resourceVersion") != current["metadata"]["resourceVersion"]:
                raise ApiException(status=409, reason="Conflict")
            return self._store(name, body)

    def holder(self) -> str | None:
        with self.lock:
            body = self.stored.get("hetsched-operator")
            return None if body is None else body["spec"].get("holderIdentity")


class Candidate:
    """A LeaderElector on the fake API, whose connection can be cut."""

    def __init__(self, leases: FakeLeases, identity: str) -> None:
        self.leases = leases
        self.down = False
        self.lost: list[tuple[float, str]] = []
        outer = self

        class Link:
            def __getattr__(self, name: str) -> Callable[..., Any]:
                method = getattr(leases, name)

                async def call(*args: Any, **kwargs: Any) -> Any:
                    if outer.down:
                        raise ConnectionError("API server unreachable")
                    return await method(*args, **kwargs)

                return call

        @contextlib.asynccontextmanager
        async def factory() -> AsyncIterator[Any]:
            yield Link()

        config = LeaseConfig(
            namespace="ns", identity=identity, lease_duration=LEASE, renew_deadline=RENEW, retry_period=RETRY
        )
        self.elector = LeaderElector(
            config, on_lost=lambda reason: self.lost.append((time.monotonic(), reason)), api_factory=factory
        )
        self.identity = identity

    def start(self) -> Candidate:
        self.elector.start()
        return self

    @property
    def leading(self) -> bool:
        return self.elector.leading.is_set()


def _until(check: Callable[[], Any], timeout: float, what: str) -> float:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if check():
            return time.monotonic() - t0
        time.sleep(0.01)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


@pytest.fixture
def leases() -> FakeLeases:
    return FakeLeases()


def test_one_leader_among_candidates(leases: FakeLeases) -> None:
    cands = [Candidate(leases, f"c{i}").start() for i in range(3)]
    try:
        _until(lambda: any(c.leading for c in cands), 5, "a leader")
        for _ in range(30):  # 3 s of renewals: never two leaders, always the Lease holder
            leading = [c.identity for c in cands if c.leading]
            assert len(leading) == 1 and leases.holder() == leading[0]
            time.sleep(0.1)
    finally:
        for c in cands:
            c.elector.stop(release=False)


def test_crashed_leader_is_replaced_only_after_the_lease_expires(leases: FakeLeases) -> None:
    a = Candidate(leases, "a").start()
    _until(lambda: a.leading, 5, "a to lead")
    b = Candidate(leases, "b").start()
    try:
        time.sleep(0.5)
        assert not b.leading
        a.elector.stop(release=False)  # a crash: no release, the Lease stays held
        t0 = time.monotonic()
        took = _until(lambda: b.leading, 10, "b to take over")
        assert took >= LEASE - 2 * RETRY, (
            f"took over after {took:.2f} s, before the lease ({LEASE} s) expired"
        )
        assert took <= LEASE + RENEW + 5 * RETRY + 1, took
        assert leases.holder() == "b"
        del t0
    finally:
        a.elector.stop(release=False)
        b.elector.stop(release=False)


def test_released_lease_is_taken_at_once(leases: FakeLeases) -> None:
    a = Candidate(leases, "a").start()
    _until(lambda: a.leading, 5, "a to lead")
    b = Candidate(leases, "b").start()
    try:
        time.sleep(0.3)
        a.elector.stop(release=True)
        took = _until(lambda: b.leading, 5, "b to take over")
        assert took < LEASE / 2, f"{took:.2f} s: the release did not shorten the takeover"
    finally:
        b.elector.stop(release=False)


def test_leader_that_cannot_renew_steps_down_before_another_leads(leases: FakeLeases) -> None:
    a = Candidate(leases, "a").start()
    _until(lambda: a.leading, 5, "a to lead")
    b = Candidate(leases, "b").start()
    try:
        a.down = True  # a is cut off from the API server (but still running)
        _until(lambda: a.lost, 5, "a to give up")
        lost_at, reason = a.lost[0]
        assert "could not renew" in reason and not a.leading
        _until(lambda: b.leading, 10, "b to lead")
        first_b = next(t for t, holder in leases.writes if holder == "b")
        assert lost_at < first_b, "a still considered itself leader when b took the Lease"
    finally:
        a.elector.stop(release=False)
        b.elector.stop(release=False)


def test_leader_that_finds_another_holder_steps_down(leases: FakeLeases) -> None:
    a = Candidate(leases, "a").start()
    try:
        _until(lambda: a.leading, 5, "a to lead")
        with leases.lock:  # someone else wrote the Lease (e.g. a split brain resolved by the API server)
            body = leases.stored["hetsched-operator"]
            leases._store(
                "hetsched-operator", {**body, "spec": {**body["spec"], "holderIdentity": "intruder"}}
            )
        _until(lambda: a.lost, 5, "a to give up")
        assert "taken by intruder" in a.lost[0][1]
    finally:
        a.elector.stop(release=False)


@pytest.mark.parametrize(("lease", "renew", "retry"), [(5, 6, 1), (5, 5, 1), (5, 2, 2), (5, 2, 0)])
def test_inconsistent_timings_are_refused(lease: float, renew: float, retry: float) -> None:
    with pytest.raises(ValueError, match="retry period < renew deadline < lease duration"):
        LeaseConfig(namespace="ns", lease_duration=lease, renew_deadline=renew, retry_period=retry)


def test_micro_time_is_what_the_api_server_parses() -> None:
    t = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    assert _micro_time(t) == "2026-01-02T03:04:05.000000Z"
