"""A real local Kubernetes control plane with KWOK fake node pools, for tests and the demo.

- ``build``: builds the pinned binaries (``versions.yaml``) from the Go module proxy into a cache.
- ``pools``: the pools YAML file and the fake Node manifests built from it.
- ``certs``: the cluster's certificates, generated with ``cryptography``.
- ``cluster``: starting, checking and stopping the processes (``up``/``down``/``status``).
- ``cli``: ``hetsched cluster ...``.
"""
