"""What ends a promotion's process from outside, and how to see it through Prefect's own error handling.

Prefect's task engine can meet SIGINT/SIGTERM while it creates a task run; its crash handler then raises
``ValueError('Task run is not set')`` in place of the signal (Prefect 3.9, seen in CI). Left alone, the
stage's subflow logs that ValueError with a full traceback as a failure, and the promotion reads it as a
stage that failed. :func:`surface_interrupts` re-raises the signal inside the stage, so that the subflow
ends as crashed (one log line, no traceback) and the promote flow rolls back as interrupted.
"""

from __future__ import annotations

import functools
import inspect
import typing
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from prefect.exceptions import TerminationSignal

#: What ends this process mid-promotion: Ctrl-C (KeyboardInterrupt), SIGTERM (the flow engine turns it into
#: TerminationSignal), an exit requested by code that runs inside the flow (SystemExit).
INTERRUPTS: tuple[type[BaseException], ...] = (KeyboardInterrupt, SystemExit, TerminationSignal)

P = ParamSpec("P")
R = TypeVar("R")


def interrupt_behind(exc: BaseException) -> BaseException | None:
    """The SIGINT/SIGTERM ``exc`` was raised while handling (its cause or context chain), if any."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, INTERRUPTS):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def surface_interrupts(fn: Callable[P, R]) -> Callable[P, R]:
    """Wrap a stage's body (under its ``@flow``): an error that hides a signal is re-raised as the signal."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            if (stop := interrupt_behind(exc)) is not None:
                # `from None`: the chain is Prefect's own crash handling, nothing an operator acts on
                raise stop from None
            raise

    # Prefect resolves a flow's annotations to validate its parameters, in the globals of the function it
    # is given; under `from __future__ import annotations` they are names of the stage's module, not this one.
    wrapper.__annotations__ = typing.get_type_hints(fn)
    wrapper.__signature__ = inspect.signature(fn, eval_str=True)  # type: ignore[attr-defined]
    return wrapper
