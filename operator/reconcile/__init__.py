"""Act: a workload's plan → its child Deployments and Services, and its status.

* :mod:`.manifests` — the children as pure functions of the workload and its plan;
* :mod:`.children` — the children's observed state, what to write or delete, readiness;
* :mod:`.status` — status models, conditions, the status of a plan, Events;
* :mod:`.reconciler` — the async worker queue that converges a workload (the only writer).
"""
