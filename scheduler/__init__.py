"""Pure-Python analytic core of hetsched: catalogs, OI/CF estimator, roofline regimes, placement.

Nothing in this package imports Kubernetes; everything the operator decides can be reproduced
offline with the ``hetsched`` CLI.
"""
