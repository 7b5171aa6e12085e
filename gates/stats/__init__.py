"""Statistics behind the gates: pure numpy/scipy functions that return result objects with named fields.

One module per job; each function's docstring carries the formula and its reference.

- bootstrap: paired / unpaired bootstrap CIs over users (offline relative gates)
- effects: effect estimates and delta-method variances (means, relative changes, ratio metrics)
- two_sample: the canary's effects, valid on zero-inflated heavy tails, sparse counts, small canaries
- budget: one false-rollback budget for the whole canary (e-values carried across ramp steps)
- msprt: normal-mixture SPRT, always-valid p-values, confidence sequences
- group_sequential: Lan-DeMets spending, non-binding beta-spending futility, Pocock / O'Brien-Fleming
- planning: fixed-horizon sample size and the maximum of a group-sequential design
- decision: the canary rule (roll back on proven harm, promote on proven non-inferiority), non-inferiority
- sprt: Wald's SPRT, the benchmark's oracle
- srm: sample-ratio mismatch, chi-square and sequential (Dirichlet-multinomial)
- cuped: variance reduction with a pre-period covariate
- robust: winsorisation of heavy-tailed per-user metrics
- quantiles: quantile comparisons (latency p50 / p95 / p99)
"""
