"""The serving engine's limits, as placement sees them (memoised per planner run).

* a phase runs on a pool only where the workload's engine has an image for the pool's hardware
  (``engines.platform.image_for``; reason ``no-engine-build``);
* a prefill pool and a decode pool pair only where the engine can move KV between them
  (``engines.pairing.kv_path``; reason ``kv-transfer``), at prefill and decode TP degrees its
  connector accepts (``engines.pairing.tp_allowed``; reason ``engine-tp``);
* the KV transfer of a pair staged through host memory takes the staged path's bandwidth
  (``engines.pairing.staged_bandwidth``), which the planner's TTFT and the serving model's check
  both use (:meth:`EngineLimits.kv_bandwidth`).
"""

from __future__ import annotations

import math

from hetsched.scheduler.engines.pairing import KvPath, kv_path, staged_bandwidth, tp_allowed
from hetsched.scheduler.engines.platform import Platform, ServingChoice, image_for, platform_of
from hetsched.scheduler.placement.options import Reason, RejectionRecorder
from hetsched.scheduler.placement.request import WorkloadRequest
from hetsched.scheduler.pools import Cluster


class EngineLimits:
    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.platforms: dict[str, Platform] = {
            p.name: platform_of(p.hardware, p.serving) for p in cluster.pools
        }
        self._runs: dict[tuple[ServingChoice, str, str], str | None] = {}
        self._paths: dict[tuple[ServingChoice, str, str], KvPath] = {}

    def why_not_runs(self, choice: ServingChoice, phase: str, pool: str) -> str | None:
        """None when ``phase`` (prefill, decode, colocated) has an image on ``pool``, else why not."""
        key = (choice, phase, pool)
        if key not in self._runs:
            image = image_for(choice, phase, self.platforms[pool])
            self._runs[key] = None if image.image is not None else image.source
        return self._runs[key]

    def allowed(self, req: WorkloadRequest, kind: str, pool: str, rec: RejectionRecorder) -> bool:
        """Whether ``kind`` (colocated, prefill, decode) is allowed on ``pool`` and the workload's
        engine has an image for its hardware; records ``no-engine-build`` when it has none."""
        phases = ("prefill", "decode") if kind == "colocated" else (kind,)
        if not all(req.allows(ph, pool) for ph in phases):
            return False
        why = self.why_not_runs(req.serving, kind, pool)
        if why is not None:
            rec.reject(kind, pool, Reason.NO_ENGINE_BUILD, math.inf, why)
            return False
        return True

    @staticmethod
    def reject_pair(
        rec: RejectionRecorder,
        prefill_pool: str,
        decode_pool: str,
        reason: Reason,
        why: str,
        tps: tuple[int, int] | None = None,
    ) -> None:
        """Record a pool pair the engine cannot serve (``kv-transfer``, ``engine-tp``) on both sides."""
        detail = f"prefill on {prefill_pool}, decode on {decode_pool}: {why}"
        for i, (kind, pool) in enumerate((("prefill", prefill_pool), ("decode", decode_pool))):
            rec.reject(kind, pool, reason, math.inf, detail, tps[i] if tps else None)

    def path(self, choice: ServingChoice, prefill_pool: str, decode_pool: str) -> KvPath:
        key = (choice, prefill_pool, decode_pool)
        hit = self._paths.get(key)
        if hit is None:
            hit = self._paths[key] = kv_path(
                choice, self.platforms[prefill_pool], self.platforms[decode_pool]
            )
        return hit

    def kv_bandwidth(self, choice: ServingChoice, prefill_pool: str, decode_pool: str) -> float:
        """Bytes/s of a request's KV from the prefill pool to the decode pool (staged: the slowest
        path's serial hops; else the network between the pools)."""
        network = self.cluster.bandwidth_between(prefill_pool, decode_pool)
        if not self.path(choice, prefill_pool, decode_pool).staged:
            return network
        return staged_bandwidth(network, self.platforms[prefill_pool], self.platforms[decode_pool])

    @staticmethod
    def tp_ok(choice: ServingChoice, prefill_tp: int, decode_tp: int) -> tuple[bool, str]:
        return tp_allowed(choice, prefill_tp, decode_tp)
