"""Writes the API server refused, per object, and when to try each again (pure; the reconciler owns
one :class:`Refusals`).

A refused write (an invalid Deployment, a denying admission policy, an exhausted quota, RBAC) is
not retried on every trigger (resyncs, watch events): the same content is tried again only after a
back-off that doubles per refusal (5 s, 10 s, 20 s, ... capped at 5 minutes), so a workload whose
child is refused costs a bounded number of failed writes, not one more retry chain per resync.
Content that changed (a new spec, a new plan) is a new write and is tried at once.
"""

from __future__ import annotations

from dataclasses import dataclass

ObjectKey = tuple[str, str, str]  # (namespace, kind, name)
Owner = tuple[str, str]  # (namespace, name) of the workload

FIRST_RETRY_SECONDS = 5.0
MAX_RETRY_SECONDS = 300.0


@dataclass(frozen=True, slots=True)
class Refusal:
    owner: Owner
    hash: str  # the content refused
    message: str  # the API server's message
    attempts: int  # refusals in a row of this content
    retry_at: float  # monotonic seconds: not tried again before


class Refusals:
    def __init__(self, first: float = FIRST_RETRY_SECONDS, cap: float = MAX_RETRY_SECONDS) -> None:
        self.first = first
        self.cap = cap
        self._by_object: dict[ObjectKey, Refusal] = {}

    def of(self, key: ObjectKey, content_hash: str) -> Refusal | None:
        """The refusal of this content of the object, if it was refused (and not accepted since)."""
        refusal = self._by_object.get(key)
        return refusal if refusal is not None and refusal.hash == content_hash else None

    def waiting(self, key: ObjectKey, content_hash: str, now: float) -> Refusal | None:
        """The refusal, while its retry is not due: do not send the same content yet."""
        refusal = self.of(key, content_hash)
        return refusal if refusal is not None and now < refusal.retry_at else None

    def refused(self, owner: Owner, key: ObjectKey, content_hash: str, message: str, now: float) -> Refusal:
        before = self.of(key, content_hash)
        attempts = 1 if before is None else before.attempts + 1
        delay = min(self.cap, self.first * 2 ** (attempts - 1))
        refusal = Refusal(owner, content_hash, message, attempts, now + delay)
        self._by_object[key] = refusal
        return refusal

    def accepted(self, key: ObjectKey) -> None:
        self._by_object.pop(key, None)

    def forget(self, owner: Owner) -> None:
        """Drop the refusals of a workload's children (the workload is gone)."""
        for key in [k for k, r in self._by_object.items() if r.owner == owner]:
            del self._by_object[key]

    def __len__(self) -> int:
        return len(self._by_object)
