"""The per-step physics: what one forward step of a phase costs and how long it takes.

* :mod:`.precision` — number formats and their bytes;
* :mod:`.cost` — FLOPs and DRAM bytes per operator of a prefill or decode step (``estimate_phase``);
* :mod:`.roofline` — the step on a device: regime, time, MFU/MBU (``evaluate``);
* :mod:`.analysis` — both phases of a workload's request (``analyze``; ``Scenario``);
* :mod:`.steps` — a step's efficiency-independent terms per device and its time from them,
  vectorised (``step_terms``, ``step_seconds``, ``kv_capacity``);
* :mod:`.serving` — the serving model: TTFT, TPOT and throughput of a replica, colocated or
  disaggregated, with batching and queueing (``predict_colocated``, ``predict_disaggregated``);
* (engines: ``hetsched.scheduler.engines`` — which serving engine an image or a benchmark backend runs);
* :mod:`.efficiency` — the calibrated fractions of peak each hardware family reaches, read from
  ``data/efficiency.json`` (written by ``hetsched calibrate``).

docs/estimator.md has every formula, docs/calibration.md the efficiencies.
"""
