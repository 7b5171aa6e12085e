"""stagegate as the judge of Argo Rollouts and Flagger canaries (``stagegate judge serve``).

config.py  what to apply (a policy stage's gates) and where evidence comes from (a MetricSource)
state.py   per-rollout sequential state in SQLite or PostgreSQL (counted looks with their evidence)
looks.py   one call judged: measure the window, run the gates with the earlier looks, remember it
verdicts.py  the decision as one verdict word and as each tool's HTTP status
app.py     the HTTP routes (FastAPI); cli.py the ``serve`` command

docs/adapters/argo-flagger.md describes the tools' side.
"""
