"""Progress bars go to stderr only on a terminal, and only after a second."""

import io
import sys
import time

from perfmodel.progress import progress


def test_no_terminal_no_output(monkeypatch, capsys):
    with progress(10, "work") as advance:
        for _ in range(10):
            advance(1)
    out = capsys.readouterr()
    assert out.out == "" and out.err == ""


def test_short_block_shows_nothing_on_a_terminal(monkeypatch):
    class Tty(io.StringIO):
        def isatty(self):
            return True

    err = Tty()
    monkeypatch.setattr(sys, "stderr", err)
    t = time.perf_counter()
    with progress(3, "quick", show_after_s=5.0) as advance:
        advance(3)
    assert time.perf_counter() - t < 1.0
    assert err.getvalue() == ""
