"""Evaluation of rankers on logged data: offline metrics, off-policy estimates, data expectations.

- :mod:`~stagegate.evaluation.offline`: re-rank held-out requests, per-user NDCG/recall/MAP and
  beyond-accuracy metrics, paired champion/candidate evidence.
- :mod:`~stagegate.evaluation.ope`: IPS, SNIPS, DR and PBM-IPS estimates of business metrics.
- :mod:`~stagegate.evaluation.expectations`: Great Expectations validation of the evaluation data.

Importing this package is cheap (numpy, pyyaml); pandas and great_expectations load where they are used.
"""

from stagegate.evaluation.expectations import (
    ExpectationReport,
    SuiteFormatError,
    served_batch_to_frame,
    validate_frame,
    validate_served,
)
from stagegate.evaluation.offline import OfflineResult, evaluate_offline, paired_offline_evidence
from stagegate.evaluation.ope import (
    OPEResult,
    dr,
    estimate_all,
    ips,
    logged_value,
    ope_arm_sample,
    ope_metric_name,
    paired_ope_evidence,
    pbm_ips,
    rips,
    snips,
)

__all__ = [
    "ExpectationReport",
    "OPEResult",
    "OfflineResult",
    "SuiteFormatError",
    "dr",
    "estimate_all",
    "evaluate_offline",
    "ips",
    "logged_value",
    "ope_arm_sample",
    "ope_metric_name",
    "paired_offline_evidence",
    "paired_ope_evidence",
    "pbm_ips",
    "rips",
    "served_batch_to_frame",
    "snips",
    "validate_frame",
    "validate_served",
]
