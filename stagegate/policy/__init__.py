"""Promotion policies: the schema and the loader."""

from stagegate.policy.load import PolicyError, Problem, load_policy, parse_policy
from stagegate.policy.schema import STAGE_ORDER, Policy

__all__ = ["STAGE_ORDER", "Policy", "PolicyError", "Problem", "load_policy", "parse_policy"]
