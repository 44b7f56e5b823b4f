"""Observe: live Nodes and AcceleratorProfiles → the node pools the planner places onto.

* :mod:`.nodes` — what changes as nodes come and go: the pools' fingerprint, the NotReady grace
  (the node → pool rules themselves are ``hetsched.scheduler.nodes``, shared with ``plan --nodes``);
* :mod:`.profiles` — hardware and price of a pool: AcceleratorProfiles, labels, the catalog;
* :mod:`.build` — the planner's ``Cluster`` and the pools' views for the API;
* :mod:`.watcher` — re-derives and publishes the pools when nodes or profiles change.
"""
