"""Kubernetes side of hetsched: the Kopf operator, its HTTP API and metrics, and the local cluster.

Imported as ``hetsched.operator`` (the folder is mapped in pyproject.toml; ``operator`` alone is a
standard-library module).
"""
