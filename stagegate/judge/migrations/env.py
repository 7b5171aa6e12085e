"""Alembic's environment for the judge's state (its own version table, so its tables can sit beside the
ledger's in one database): :func:`stagegate.events.migrate.run_environment` runs it."""

from stagegate.events.migrate import run_environment
from stagegate.judge.state import JUDGE_SCHEMA

run_environment(JUDGE_SCHEMA)
