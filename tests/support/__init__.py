"""What the tests share (not part of the wheel; ``tests/`` is on ``sys.path``, see pyproject's
``[tool.pytest.ini_options] pythonpath``):

* :mod:`.builders` — workloads, pools and a fake Kubernetes API for the operator's unit tests;
* :mod:`.cluster` — :class:`~.cluster.LocalCluster`, what tests use of a running local control plane;
* :mod:`.harness` — the operator as a subprocess, waiting, and the checks that workloads and their
  children agree (integration and reliability tests).
"""

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "tests" / "data"
DEMO_POOLS = REPO / "examples" / "pools" / "demo.yaml"
