"""Progress for CLI steps that take more than a couple of seconds: a rich spinner on a terminal, one line
when it starts and one when it ends otherwise (CI logs, pipes), always on stderr so stdout stays the
command's answer (``--json`` included)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def progress(what: str) -> Iterator[None]:
    """Show that ``what`` is under way, then how long it took (or that it failed)."""
    from rich.console import Console

    console = Console(stderr=True, highlight=False)
    started = time.monotonic()
    if console.is_terminal:
        with console.status(f"{what}..."):
            try:
                yield
            except BaseException:
                console.print(f"[red]{what}: failed after {time.monotonic() - started:.1f} s[/red]")
                raise
    else:
        console.print(f"{what}...")
        try:
            yield
        except BaseException:
            console.print(f"{what}: failed after {time.monotonic() - started:.1f} s")
            raise
    console.print(f"{what}: done in {time.monotonic() - started:.1f} s")
