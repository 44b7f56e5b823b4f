"""Leader election with a ``coordination.k8s.io/v1`` Lease, so that several operator replicas can
run and exactly one acts at a time (``hetsched operator run --leader-elect``).

The algorithm is client-go's (``tools/leaderelection``), reduced to what one process needs:

* **acquire**: read the Lease; create it if missing; take it over if it has no holder, or if its
  record (holder, renew time, resource version) has not changed for ``leaseDurationSeconds`` as
  measured on *our* monotonic clock (no trust in the other replica's wall clock). Writes carry the
  read ``resourceVersion``, so two candidates racing for the same expired Lease cannot both win
  (the API server answers 409 to the second).
* **renew** every ``retry_period``; if no renewal succeeded for ``renew_deadline`` (shorter than
  the lease duration), or another identity holds the Lease, leadership is lost and ``on_lost`` is
  called — the operator then exits at once (``os._exit``) rather than keep acting beside a new
  leader; its Deployment restarts it as a candidate.
* **release** on a clean shutdown: the Lease is written with no holder, so a standby takes over
  within one retry period instead of waiting out the lease.

Failover after a crash therefore takes at most ``lease_duration + retry_period`` until a standby
leads, plus the operator's own start (Kopf lists and indexes the cluster, then re-plans).

The elector runs in its own thread with its own event loop (the HTTP API has another; Kopf runs in
the main thread only once this replica leads).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import math
import os
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger("hetsched.leader")

SA_NAMESPACE_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
DEFAULT_LEASE_NAME = "hetsched-operator"


def default_identity() -> str:
    return f"{socket.gethostname()}_{uuid.uuid4().hex[:10]}"


def default_namespace() -> str:
    """The pod's namespace in-cluster, else ``$POD_NAMESPACE``, else ``default``."""
    with contextlib.suppress(OSError):
        text = SA_NAMESPACE_FILE.read_text().strip()
        if text:
            return text
    return os.environ.get("POD_NAMESPACE") or "default"


def _micro_time(t: dt.datetime) -> str:
    """A ``metav1.MicroTime`` (RFC 3339 with exactly six fractional digits, UTC)."""
    return t.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class LeaseConfig:
    namespace: str
    name: str = DEFAULT_LEASE_NAME
    identity: str = ""
    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0

    def __post_init__(self) -> None:
        if not self.identity:
            self.identity = default_identity()
        if not 0 < self.retry_period < self.renew_deadline < self.lease_duration:
            raise ValueError(
                "leader election needs 0 < retry period < renew deadline < lease duration, got "
                f"{self.retry_period:g} / {self.renew_deadline:g} / {self.lease_duration:g} s"
            )


@dataclass
class _Observed:
    """The last Lease record seen and when (our monotonic clock) it last changed."""

    key: tuple[str | None, str | None, str | None] | None = None
    at: float = 0.0


class LeaderElector:
    """Acquire, renew and release one Lease; thread-safe start/stop from the main thread."""

    def __init__(
        self,
        config: LeaseConfig,
        kubeconfig: str | None = None,
        on_lost: Callable[[str], None] | None = None,
        api_factory: Callable[[], contextlib.AbstractAsyncContextManager[Any]] | None = None,
    ) -> None:
        self.config = config
        self.kubeconfig = kubeconfig
        self.on_lost = on_lost or _exit_now
        self.api_factory = api_factory  # tests: a fake CoordinationV1Api
        self.leading = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="hetsched-leader", daemon=True)
        self._observed = _Observed()
        self._last_renew = 0.0
        self.transitions = 0

    # ---- main-thread API ------------------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def wait_leading(self, poll: float = 0.5) -> bool:
        """Block until this replica leads (True) or the elector stopped (False)."""
        while not self.leading.wait(poll):
            if not self._thread.is_alive():
                return False
        return True

    def stop(self, release: bool = True, timeout: float = 10.0) -> None:
        """Stop renewing and, if leading and ``release``, hand the Lease back."""
        self._release_on_stop = release
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    # ---- the elector thread ---------------------------------------------------------------------
    _release_on_stop = True

    def _run(self) -> None:
        asyncio.run(self._main())

    @contextlib.asynccontextmanager
    async def _kube_api(self) -> AsyncIterator[Any]:
        from kubernetes_asyncio import client, config

        configuration = client.Configuration()
        kubeconfig = self.kubeconfig or os.environ.get("KUBECONFIG")
        if kubeconfig or Path("~/.kube/config").expanduser().exists():  # noqa: ASYNC240 (once)
            await config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
        else:
            config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        async with client.ApiClient(configuration) as api_client:
            yield client.CoordinationV1Api(api_client)

    async def _main(self) -> None:
        factory = self.api_factory or self._kube_api
        async with factory() as api:
            c = self.config
            while not self._stop.is_set():
                started = time.monotonic()
                ok = await self._try_acquire_or_renew(api)
                now = time.monotonic()
                if ok:
                    # The renewal may have been written at any moment of the call: count the
                    # deadline from its start, so this replica stops before any other may lead.
                    self._last_renew = started
                    if not self.leading.is_set():
                        log.info(
                            "leader election: %s now leads (Lease %s/%s)", c.identity, c.namespace, c.name
                        )
                        self.leading.set()
                elif self.leading.is_set() and (
                    now - self._last_renew > c.renew_deadline or self._held_by_other()
                ):
                    reason = (
                        f"Lease {c.namespace}/{c.name} taken by {self._observed.key and self._observed.key[0]}"
                        if self._held_by_other()
                        else f"could not renew Lease {c.namespace}/{c.name} for {c.renew_deadline:g} s"
                    )
                    self.leading.clear()
                    log.error("leader election: lost leadership: %s", reason)
                    self.on_lost(reason)
                    return
                await asyncio.sleep(c.retry_period)
            if self.leading.is_set() and self._release_on_stop:
                await self._release(api)

    def _held_by_other(self) -> bool:
        key = self._observed.key
        return key is not None and key[0] not in (None, "", self.config.identity)

    async def _try_acquire_or_renew(self, api: Any) -> bool:
        from kubernetes_asyncio.client.exceptions import ApiException

        c = self.config
        now = dt.datetime.now(dt.UTC)
        timeout = max(1.0, c.renew_deadline / 2)
        try:
            try:
                lease = await api.read_namespaced_lease(c.name, c.namespace, _request_timeout=timeout)
            except ApiException as exc:
                if exc.status != 404:
                    raise
                body = self._body(now, acquire_time=now, transitions=0)
                await api.create_namespaced_lease(c.namespace, body, _request_timeout=timeout)
                self._observed = _Observed((c.identity, _micro_time(now), None), time.monotonic())
                return True
            spec = lease.spec
            holder = spec.holder_identity or None
            renew = _micro_time(spec.renew_time) if spec.renew_time else None
            key = (holder, renew, lease.metadata.resource_version)
            if key != self._observed.key:
                self._observed = _Observed(key, time.monotonic())
            duration = float(spec.lease_duration_seconds or c.lease_duration)
            if holder not in (None, c.identity) and time.monotonic() - self._observed.at < duration:
                return False  # someone else holds a live lease
            transitions = int(spec.lease_transitions or 0)
            if holder == c.identity and spec.acquire_time is not None:
                acquired = spec.acquire_time
            else:
                acquired, transitions = now, transitions + (1 if holder else 0)
            body = self._body(now, acquire_time=acquired, transitions=transitions)
            body["metadata"]["resourceVersion"] = lease.metadata.resource_version
            new = await api.replace_namespaced_lease(c.name, c.namespace, body, _request_timeout=timeout)
            self._observed = _Observed(
                (c.identity, _micro_time(now), new.metadata.resource_version), time.monotonic()
            )
            self.transitions = transitions
            return True
        except ApiException as exc:
            if exc.status != 409:  # 409: another candidate wrote first
                log.warning("leader election: %s %s", exc.status, exc.reason)
            return False
        except Exception as exc:  # API server unreachable, timeouts: keep trying
            log.warning("leader election: %s: %s", type(exc).__name__, exc)
            return False

    def _body(self, now: dt.datetime, *, acquire_time: dt.datetime, transitions: int) -> dict[str, Any]:
        c = self.config
        return {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": c.name, "namespace": c.namespace},
            "spec": {
                "holderIdentity": c.identity,
                "leaseDurationSeconds": max(1, math.ceil(c.lease_duration)),
                "acquireTime": _micro_time(acquire_time),
                "renewTime": _micro_time(now),
                "leaseTransitions": transitions,
            },
        }

    async def _release(self, api: Any) -> None:
        """Give the Lease up (holder cleared) so a standby need not wait for it to expire."""
        c = self.config
        try:
            lease = await api.read_namespaced_lease(c.name, c.namespace, _request_timeout=5)
            if lease.spec.holder_identity != c.identity:
                return
            now = dt.datetime.now(dt.UTC)
            body = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {
                    "name": c.name,
                    "namespace": c.namespace,
                    "resourceVersion": lease.metadata.resource_version,
                },
                "spec": {
                    "holderIdentity": None,
                    "leaseDurationSeconds": 1,
                    "acquireTime": None,
                    "renewTime": _micro_time(now),
                    "leaseTransitions": int(lease.spec.lease_transitions or 0),
                },
            }
            await api.replace_namespaced_lease(c.name, c.namespace, body, _request_timeout=5)
            log.info("leader election: %s released Lease %s/%s", c.identity, c.namespace, c.name)
        except Exception as exc:
            log.warning("leader election: release failed (the Lease will expire): %s", exc)
        finally:
            self.leading.clear()


def _exit_now(reason: str) -> None:
    """Leadership lost: stop acting at once. Exit code 2; the Deployment restarts the replica."""
    logging.shutdown()
    os._exit(2)
