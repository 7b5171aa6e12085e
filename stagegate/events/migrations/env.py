"""Alembic's environment for the event store and ledger: stagegate.events.migrate configures it in code
(no alembic.ini) and :func:`~stagegate.events.migrate.run_environment` runs it."""

from stagegate.events.migrate import run_environment
from stagegate.events.schema import LEDGER

run_environment(LEDGER)
