"""The router service: stagegate's serving part over HTTP (docs/router.md).

It loads the ``champion`` and ``candidate`` MLflow versions of one model, answers ``POST /recommend``,
splits users by a stable hash at the configured weight, mirrors a share of requests to the candidate in
shadow off the response path, records every request, and lets the promotion flow read and set the split
through an authenticated admin API (the contract an ``http`` TrafficController adapter is written against).

Modules, one job each: config (options and the admin token), split (stable hashing and the persisted split),
models (loading versions, calling them under a timeout, checking answers), shadow (the bounded mirror
queue), recorder (the background request log), metrics (Prometheus), admin (the admin API), app (the ASGI
app and the serving path), cli (``stagegate serve``).
"""
