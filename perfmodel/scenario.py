"""One set of rules for a scenario, shared by ``analyze``, ``sweep`` and the simulator's deployment.

Each rule is decided once here:

- a context (prompt plus output tokens) beyond the model's trained window is priced, with a note
  (:func:`window_note`); it is never an error;
- ``pp`` must divide the model's layers (:func:`perfmodel.parallel.check_pp`), ``tp`` the heads
  (:func:`perfmodel.layers.check_tp`);
- zero output tokens are allowed (a prefill alone); prompts, batches and degrees are >= 1;
- ``mode`` is ``peak`` or ``calibrated``; anything else is :class:`InvalidInputError` naming the choices.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from perfmodel.calibration import Mode
from perfmodel.errors import InvalidInputError


def check_mode(mode: Any) -> Mode:
    """``mode`` as a :class:`Mode`; :class:`InvalidInputError` naming the choices otherwise."""
    if isinstance(mode, Mode):
        return mode
    try:
        return Mode(mode)
    except ValueError:
        raise InvalidInputError(f"mode must be one of {', '.join(m.value for m in Mode)}, got {mode!r}") from None


def window_note(model, tokens: Any) -> str | None:
    """The note for a context of ``tokens`` (prompt + output; the largest of an array) beyond the model's
    trained window, or None."""
    top = int(np.max(tokens))
    if model.max_context and top > model.max_context:
        return f"context {top} exceeds the model's trained window of {model.max_context} tokens"
    return None


def validate_scenario(model, context_len: Any = None, output_tokens: Any = 0, tp: Any = None, pp: int = 1,
                      mode: Any = None) -> list[str]:
    """Apply the rules above to a scenario; returns its notes, raises the typed errors.

    Parameters
    ----------
    model : ModelSpec
    context_len, output_tokens : int or array of int, tokens
        Prompt and generated tokens (the largest sum is checked against the window).
    tp : int or list of int, optional
    pp : int
    mode : str or Mode, optional
    """
    from perfmodel.layers import check_tp
    from perfmodel.parallel import check_pp

    if mode is not None:
        check_mode(mode)
    if tp is not None:
        for t in np.atleast_1d(tp):
            check_tp(model, int(t))
    check_pp(model, pp)
    notes = []
    if context_len is not None:
        n = window_note(model, np.max(context_len) + np.max(output_tokens if output_tokens is not None else 0))
        if n:
            notes.append(n)
    return notes
