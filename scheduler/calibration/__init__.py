"""Calibration of the performance model against measured serving runs, and ``hetsched validate``.

* :mod:`.dataset` reads a measurements CSV (aiconfigurator's ``silicon_sample.csv`` columns) and
  maps each row onto the estimator: model, hardware, precisions, parallelism, serving mode;
* :mod:`.fit` fits the efficiencies per hardware family (``make calibrate``) and cross-validates;
* :mod:`.calibrated` holds the fitted table that the hardware catalog applies;
* :mod:`.cli` is ``hetsched validate``.

docs/calibration.md explains every parameter and the procedure.
"""
