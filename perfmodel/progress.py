"""Progress on stderr for long commands: a rich bar that appears only after one second.

Shown only when stderr is a terminal (scripts reading stdout or a log see nothing);
stdout stays for the command's result.
"""

from __future__ import annotations

import contextlib
import sys
import threading
from collections.abc import Callable, Iterator

SHOW_AFTER_S = 1.0
"""seconds: a command that ends sooner shows no progress."""


@contextlib.contextmanager
def progress(
    total: float | None, what: str, show_after_s: float = SHOW_AFTER_S
) -> Iterator[Callable[[float], None]]:
    """Yield ``advance(n)``; a transient rich progress bar of ``total`` steps (None: a spinner) appears on
    stderr once the block has run ``show_after_s`` seconds, and disappears when it ends."""
    if not (hasattr(sys.stderr, "isatty") and sys.stderr.isatty()):
        yield lambda n=1: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    bar = Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed:,.0f}" + ("" if total is None else f"/{total:,.0f}")),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=True,
    )
    task = bar.add_task(what, total=total)
    lock = threading.Lock()
    state = {"started": False, "done": False}

    def start() -> None:
        with lock:
            if not state["done"]:
                bar.start()
                state["started"] = True

    timer = threading.Timer(show_after_s, start)
    timer.daemon = True
    timer.start()
    try:
        yield lambda n=1: bar.advance(task, n)
    finally:
        timer.cancel()
        with lock:
            state["done"] = True
            if state["started"]:
                bar.stop()
