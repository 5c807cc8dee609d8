"""Run many independent evaluations on Ray when it is installed, in-process otherwise.

``parallel_map(fn, items)`` is the one entry point.  With Ray importable
(``pip install .[distributed]``) it connects to the cluster named by
``RAY_ADDRESS`` or starts a local instance (bound to 127.0.0.1, no Ray dashboard), runs ``fn`` on each item as a
Ray task and returns the results in order; without Ray it runs a plain loop.
The same code serves both: ``fn`` must be a module-level function and the
items picklable.
"""

from __future__ import annotations

import enum
import importlib.util
import os
from collections.abc import Callable, Iterable
from typing import Any

from perfmodel.errors import InvalidInputError


class Backend(str, enum.Enum):
    AUTO = "auto"
    RAY = "ray"
    LOCAL = "local"


def ray_available() -> bool:
    return importlib.util.find_spec("ray") is not None


def resolve_backend(backend: Backend | str = Backend.AUTO) -> Backend:
    try:
        b = Backend(backend)
    except ValueError:
        raise InvalidInputError(f"backend must be auto, ray or local, got {backend!r}") from None
    if b is Backend.AUTO:
        return Backend.RAY if ray_available() else Backend.LOCAL
    if b is Backend.RAY and not ray_available():
        raise InvalidInputError(
            "backend 'ray' requested but ray is not installed (pip install .[distributed])"
        )
    return b


LOCAL_ADDRESS = "127.0.0.1"


def _ensure_ray(num_cpus: int | None):
    import ray

    if not ray.is_initialized():
        address = os.environ.get("RAY_ADDRESS")
        kw: dict[str, Any] = {"ignore_reinit_error": True, "log_to_driver": False, "include_dashboard": False}
        if address:
            ray.init(address=address, **kw)
        else:  # a local instance: every Ray service on the loopback interface only
            ray.init(num_cpus=num_cpus, _node_ip_address=LOCAL_ADDRESS, dashboard_host=LOCAL_ADDRESS, **kw)
    return ray


def parallel_map(
    fn: Callable[[Any], Any],
    items: Iterable[Any],
    backend: Backend | str = Backend.AUTO,
    num_cpus: int | None = None,
) -> list[Any]:
    """``[fn(x) for x in items]``, on Ray tasks when the backend resolves to Ray.

    Parameters
    ----------
    fn : callable
        The function, applied to each item (a Ray task must be able to pickle it).
    items : iterable
        The inputs.
    backend : Backend or str, default ``auto``
        ``auto``, ``ray`` or ``local``.
    num_cpus : int, optional
        CPUs of a local Ray instance started here (default: all); ignored
        when joining ``RAY_ADDRESS`` or an instance already running.

    Returns
    -------
    list
        ``fn(x)`` for each item, in the items' order.
    """
    items = list(items)
    b = resolve_backend(backend)
    if b is Backend.LOCAL or len(items) <= 1:
        return [fn(x) for x in items]
    ray = _ensure_ray(num_cpus)
    task = ray.remote(fn)
    return ray.get([task.remote(x) for x in items])
