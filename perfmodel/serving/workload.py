"""Requests to serve: generated (arrival process x length distributions) or read from a trace.

A trace is JSONL (one object per line) or CSV (a header line, then one row
per request) with these fields per request:

``arrival_s``
    Arrival time, seconds from the start (>= 0; need not be sorted).  Optional:
    a request without one arrives at 0 (a benchmark that sends every request at
    once, or a closed loop that sends the next one when a slot frees).
``prompt_len``
    Prompt tokens (integer >= 1).
``output_len``
    Generated tokens including the first one, which the prefill emits
    (integer >= 1).

Blank lines and JSONL lines starting with ``#`` are skipped.  A malformed
line raises :class:`TraceFormatError` naming the file and the line number.

A generated workload may open its prompts with shared prefixes
(:class:`CachedPrefix`, ``perfmodel simulate --prefix``): each request starts
with prefix ``k`` with probability ``share_k`` (none with the rest), whose
tokens come before its drawn prompt; with probability ``hit_rate_k`` the
prefix's KV is found in the cache's tier.  The draws use their own random
stream, so the drawn lengths and arrivals are those of the same workload
without prefixes.
"""

from __future__ import annotations

import csv
import enum
import io
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from perfmodel.checks import finite_json_loads
from perfmodel.errors import InvalidInputError
from perfmodel.prefix_cache import Tier, parse_tier_spec

TRACE_FIELDS = ("arrival_s", "prompt_len", "output_len")


class TraceFormatError(InvalidInputError):
    """A trace file that cannot be read; the message names the line."""


class LengthKind(str, enum.Enum):
    FIXED = "fixed"
    LOGNORMAL = "lognormal"
    UNIFORM = "uniform"
    RANDOM = "random"


@dataclass(frozen=True)
class LengthDist:
    """A token-length distribution.

    ``fixed``: always ``a``.  ``lognormal``: mean ``a`` tokens, ``b`` the sigma of
    the underlying normal (mu = ln(a) - b**2 / 2), rounded, clipped to ``[1, cap]``.
    ``uniform``: integers in ``[a, b]`` inclusive.  ``random``: the engines' benchmark
    datasets, ``a`` tokens with range ratio ``b`` in [0, 1]: integers in
    ``[floor(a (1 - b)), ceil(a (1 + b))]`` (``vllm bench serve --random-range-ratio``;
    ratio 0 is a fixed length).
    """

    kind: LengthKind
    a: float
    b: float = 0.0
    cap: int = 0  # 0: no cap

    def __post_init__(self) -> None:
        if not math.isfinite(self.a) or not math.isfinite(self.b):
            raise InvalidInputError(f"length distribution parameters must be finite, got {self.a}, {self.b}")
        if self.kind is LengthKind.FIXED and (self.a < 1 or self.a != int(self.a)):
            raise InvalidInputError(f"a fixed length must be an integer >= 1, got {self.a:g}")
        if self.kind is LengthKind.LOGNORMAL and (self.a < 1 or self.b < 0):
            raise InvalidInputError(f"lognormal needs mean >= 1 and sigma >= 0, got {self.a:g}, {self.b:g}")
        if self.kind is LengthKind.UNIFORM and not (1 <= self.a <= self.b):
            raise InvalidInputError(f"uniform needs 1 <= low <= high, got {self.a:g}, {self.b:g}")
        if self.kind is LengthKind.RANDOM and (self.a < 1 or self.a != int(self.a) or not 0 <= self.b < 1):
            raise InvalidInputError(
                f"random needs an integer length >= 1 and a range ratio in [0, 1), got {self.a:g}, {self.b:g}"
            )

    @classmethod
    def parse(cls, text: str | int, name: str = "length") -> LengthDist:
        """``2048``, ``lognormal:MEAN:SIGMA[:CAP]``, ``uniform:LOW:HIGH`` or ``random:LEN:RATIO``.

        Parameters
        ----------
        text : str or int
            The description (lengths in tokens).
        name : str, default ``length``
            What the lengths are, named in error messages.

        Returns
        -------
        LengthDist
            The distribution.

        Raises
        ------
        InvalidInputError
            When ``text`` is malformed or its values are out of range.
        """
        s = str(text).strip().lower()
        parts = s.split(":")
        usage = f"{name}: expected N, lognormal:MEAN:SIGMA[:CAP], uniform:LOW:HIGH or random:LEN:RATIO, got {text!r}"
        try:
            kind = LengthKind.FIXED if len(parts) == 1 else LengthKind(parts[0])
            nums = [float(p) for p in (parts if len(parts) == 1 else parts[1:])]
        except ValueError:
            raise InvalidInputError(usage) from None
        want = {
            LengthKind.FIXED: (1,),
            LengthKind.LOGNORMAL: (2, 3),
            LengthKind.UNIFORM: (2,),
            LengthKind.RANDOM: (2,),
        }[kind]
        if len(nums) not in want:
            raise InvalidInputError(usage)
        if kind is LengthKind.LOGNORMAL and len(nums) == 3:
            if nums[2] < 1 or nums[2] != int(nums[2]):
                raise InvalidInputError(f"{name}: the cap must be an integer >= 1, got {parts[3]!r}")
            return cls(kind, nums[0], nums[1], int(nums[2]))
        try:
            return cls(kind, *nums)
        except InvalidInputError as exc:
            raise InvalidInputError(f"{name}: {exc}") from None

    @property
    def bounds(self) -> tuple[int, int]:
        """``random``'s inclusive range of lengths."""
        return max(1, math.floor(self.a * (1 - self.b))), math.ceil(self.a * (1 + self.b))

    @property
    def max_len(self) -> float:
        """Largest length drawn (inf for an uncapped log-normal)."""
        if self.kind is LengthKind.FIXED:
            return self.a
        if self.kind is LengthKind.UNIFORM:
            return self.b
        if self.kind is LengthKind.RANDOM:
            return float(self.bounds[1])
        return float(self.cap) if self.cap else math.inf

    @property
    def mean_len(self) -> float:
        if self.kind is LengthKind.RANDOM:
            return sum(self.bounds) / 2.0
        return self.a if self.kind is not LengthKind.UNIFORM else (self.a + self.b) / 2.0

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """``n`` lengths drawn from the distribution with ``rng``.

        Parameters
        ----------
        n : int
            How many lengths to draw.
        rng : numpy.random.Generator
            The random stream.

        Returns
        -------
        numpy.ndarray of int64, tokens
        """
        if self.kind is LengthKind.FIXED:
            return np.full(n, int(self.a), dtype=np.int64)
        if self.kind is LengthKind.RANDOM:
            lo, hi = self.bounds
            return rng.integers(lo, hi + 1, size=n, dtype=np.int64)
        if self.kind is LengthKind.UNIFORM:
            return rng.integers(int(self.a), int(self.b) + 1, size=n, dtype=np.int64)
        mu = math.log(self.a) - self.b**2 / 2.0
        x = np.rint(rng.lognormal(mu, self.b, size=n))
        return np.clip(x, 1, self.cap or None).astype(np.int64)


@dataclass(frozen=True)
class CachedPrefix:
    """A prompt prefix shared by a share of the requests, and its cache.

    Attributes
    ----------
    tokens : int, tokens
        The prefix's length (it comes before each of its requests' drawn prompt).
    share : float
        Share of the requests that start with it, in (0, 1].
    hit_rate : float
        Share of those whose prefix KV the cache holds, in [0, 1]; a miss prefills the whole prompt.
    tier : Tier
        Where the cached KV waits: ``hbm`` (resident, stored once per replica: no load), ``host`` or
        ``ssd`` (loaded per hit into the request's own blocks, priced by :mod:`perfmodel.prefix_cache`).
    bytes_per_s : float or None, bytes/s
        The tier's load rate per GPU (None: the GPU's PCIe rate for ``host``; ``ssd`` needs one).
    """

    tokens: int
    share: float
    hit_rate: float = 1.0
    tier: Tier = Tier.HBM
    bytes_per_s: float | None = None

    def __post_init__(self) -> None:
        if isinstance(self.tokens, bool) or not isinstance(self.tokens, (int, np.integer)) or self.tokens < 1:
            raise InvalidInputError(f"prefix tokens must be an integer >= 1, got {self.tokens!r}")
        for name, lo_open in (("share", True), ("hit_rate", False)):
            v = getattr(self, name)
            if (
                isinstance(v, bool)
                or not isinstance(v, (int, float))
                or not math.isfinite(v)
                or not (0 < v <= 1 if lo_open else 0 <= v <= 1)
            ):
                raise InvalidInputError(
                    f"prefix {name} must be in {'(0, 1]' if lo_open else '[0, 1]'}, got {v!r}"
                )
        if not isinstance(self.tier, Tier):
            raise InvalidInputError(f"prefix tier must be a Tier, got {self.tier!r}")
        if self.tier is Tier.SSD and self.bytes_per_s is None:
            raise InvalidInputError("a prefix cached on ssd needs a rate: ssd:BYTES_PER_S")
        if self.tier is Tier.HBM and self.bytes_per_s is not None:
            raise InvalidInputError("a prefix cached in hbm takes no rate: its KV is already resident")

    @classmethod
    def parse(cls, text: str) -> CachedPrefix:
        """``TOKENS:SHARE[:HIT_RATE[:TIER]]`` with ``TIER`` one of ``hbm`` (default), ``host``,
        ``host:BYTES_PER_S``, ``ssd:BYTES_PER_S``."""
        parts = str(text).strip().split(":", 3)
        usage = f"prefix: expected TOKENS:SHARE[:HIT_RATE[:TIER]], got {text!r}"
        if len(parts) < 2:
            raise InvalidInputError(usage)
        try:
            tokens = float(parts[0])
            share = float(parts[1])
            hit = float(parts[2]) if len(parts) > 2 else 1.0
        except ValueError:
            raise InvalidInputError(usage) from None
        if not math.isfinite(tokens) or tokens != int(tokens):
            raise InvalidInputError(f"prefix tokens must be an integer >= 1, got {parts[0]!r}")
        tier, bw = parse_tier_spec(parts[3]) if len(parts) > 3 else (Tier.HBM, None)
        return cls(int(tokens), share, hit, tier, bw)

    def describe(self) -> str:
        where = self.tier.value + (f":{self.bytes_per_s:g}" if self.bytes_per_s is not None else "")
        return f"{self.tokens}:{self.share:g}:{self.hit_rate:g}:{where}"


def check_prefixes(prefixes) -> tuple[CachedPrefix, ...]:
    """``prefixes`` as a tuple of :class:`CachedPrefix` whose shares sum to at most 1."""
    out = tuple(prefixes or ())
    if any(not isinstance(p, CachedPrefix) for p in out):
        raise InvalidInputError("prefixes must be CachedPrefix values")
    if sum(p.share for p in out) > 1 + 1e-9:
        raise InvalidInputError(f"prefix shares sum to {sum(p.share for p in out):g}, more than 1")
    return out


@dataclass(frozen=True)
class Requests:
    """Requests as parallel arrays, sorted by arrival (seconds, tokens).

    With ``prefixes``, ``prefix_id`` gives each request's prefix (an index into ``prefixes``, -1 for
    none; its tokens are counted in ``prompt_len``) and ``prefix_hit`` whether the cache holds it.
    """

    arrival_s: np.ndarray
    prompt_len: np.ndarray
    output_len: np.ndarray
    prefixes: tuple[CachedPrefix, ...] = ()
    prefix_id: np.ndarray | None = None
    prefix_hit: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.arrival_s.shape[0])

    def cached_tokens(self) -> np.ndarray:
        """Per request: the prompt tokens whose KV the cache holds (its prefix on a hit, else 0).

        Returns
        -------
        numpy.ndarray of int64, tokens
            One entry per request.
        """
        if not self.prefixes:
            return np.zeros(len(self), dtype=np.int64)
        tokens = np.array([p.tokens for p in self.prefixes] + [0], dtype=np.int64)
        return np.where(self.prefix_hit, tokens[self.prefix_id], 0)

    @classmethod
    def of(cls, arrival_s, prompt_len, output_len, prefixes=(), prefix_id=None, prefix_hit=None) -> Requests:
        """Requests from per-request arrays, checked.

        Parameters
        ----------
        arrival_s : array_like of float, seconds
            Arrival times.
        prompt_len, output_len : array_like of int, tokens
            Prompt and output lengths, one per request.
        prefixes : sequence of CachedPrefix, optional
            Cached prefixes the requests may open with.
        prefix_id : array_like of int, optional
            Per request: the index of its prefix, -1 for none (default: none).
        prefix_hit : array_like of bool, optional
            Per request: whether its prefix is found in the cache (default: no).

        Returns
        -------
        Requests
            The requests, sorted by arrival.

        Raises
        ------
        InvalidInputError
            When the arrays differ in length, are empty, a prefix index is out of range, a prompt is not
            longer than its prefix, a length is not an integer >= 1, or an arrival is negative or not finite.
        """
        arr = np.asarray(arrival_s, dtype=np.float64).ravel()
        p = np.asarray(prompt_len).ravel()
        o = np.asarray(output_len).ravel()
        if not (arr.shape == p.shape == o.shape):
            raise InvalidInputError("arrival_s, prompt_len and output_len must have the same length")
        prefixes = check_prefixes(prefixes)
        if prefixes:
            pid = (
                np.asarray(prefix_id if prefix_id is not None else np.full(arr.shape, -1))
                .ravel()
                .astype(np.int64)
            )
            hit = (
                np.asarray(prefix_hit if prefix_hit is not None else np.zeros(arr.shape, bool))
                .ravel()
                .astype(bool)
            )
            if pid.shape != arr.shape or hit.shape != arr.shape:
                raise InvalidInputError("prefix_id and prefix_hit must have one entry per request")
            if np.any((pid < -1) | (pid >= len(prefixes))):
                raise InvalidInputError(f"prefix_id must be -1 or an index below {len(prefixes)}")
            hit &= pid >= 0
            ptoks = np.array([q.tokens for q in prefixes] + [0], dtype=np.int64)[pid]
            if np.any(np.asarray(p) <= ptoks):
                raise InvalidInputError("a request's prompt must be longer than its prefix")
        if arr.size == 0:
            raise InvalidInputError("no requests")
        for name, v in (("prompt_len", p), ("output_len", o)):
            if (
                v.dtype.kind not in "iuf"
                or np.any(~np.isfinite(v))
                or np.any(v < 1)
                or np.any(v != np.round(v))
            ):
                raise InvalidInputError(f"{name} must hold integers >= 1")
        if np.any(~np.isfinite(arr)) or np.any(arr < 0):
            raise InvalidInputError("arrival_s must hold finite times >= 0")
        order = np.argsort(arr, kind="stable")
        if prefixes:
            return cls(
                arr[order],
                p.astype(np.int64)[order],
                o.astype(np.int64)[order],
                prefixes,
                pid[order],
                hit[order],
            )
        return cls(arr[order], p.astype(np.int64)[order], o.astype(np.int64)[order])


@dataclass(frozen=True)
class Workload:
    """A generated workload: ``n_requests`` arriving at ``arrival_rate_per_s``.

    ``arrival_rate_per_s`` is a Poisson rate, or ``inf`` for all at time 0.  ``prefixes``: shared
    prompt prefixes and their caches (:class:`CachedPrefix`; see the module docstring).
    """

    n_requests: int
    arrival_rate_per_s: float
    prompt_len: LengthDist
    output_len: LengthDist
    seed: int = 0
    prefixes: tuple[CachedPrefix, ...] = ()

    def __post_init__(self) -> None:
        if (
            isinstance(self.n_requests, bool)
            or int(self.n_requests) != self.n_requests
            or self.n_requests < 1
        ):
            raise InvalidInputError(f"n_requests must be an integer >= 1, got {self.n_requests!r}")
        r = self.arrival_rate_per_s
        if not isinstance(r, (int, float)) or math.isnan(r) or r <= 0:
            raise InvalidInputError(f"arrival rate must be > 0 requests/s (or inf), got {r!r}")
        object.__setattr__(self, "prefixes", check_prefixes(self.prefixes))

    def generate(self) -> Requests:
        """The requests: Poisson arrivals (seconds, the first at 0; all at 0 for an infinite rate) and
        lengths (tokens) drawn with the workload's seed.

        Returns
        -------
        Requests
            The generated requests (with their prefixes and hits when the workload has prefixes).
        """
        rng = np.random.default_rng(self.seed)
        n = int(self.n_requests)
        if math.isinf(self.arrival_rate_per_s):
            arr = np.zeros(n)
        else:
            arr = np.cumsum(rng.exponential(1.0 / self.arrival_rate_per_s, size=n))
            arr -= arr[0]
        prompt, output = self.prompt_len.sample(n, rng), self.output_len.sample(n, rng)
        if not self.prefixes:
            return Requests.of(arr, prompt, output)
        draw = np.random.default_rng([self.seed, 1])  # its own stream: the lengths above stay the same
        shares = np.array([p.share for p in self.prefixes])
        probs = np.append(shares, max(1.0 - shares.sum(), 0.0))
        pid = draw.choice(len(self.prefixes) + 1, size=n, p=probs / probs.sum())
        pid = np.where(pid == len(self.prefixes), -1, pid)
        rates = np.array([p.hit_rate for p in self.prefixes] + [0.0])
        hit = (draw.random(n) < rates[pid]) & (pid >= 0)
        tokens = np.array([p.tokens for p in self.prefixes] + [0], dtype=np.int64)
        return Requests.of(arr, prompt + tokens[pid], output, self.prefixes, pid, hit)


def parse_rate(text: str) -> float:
    """``40`` or ``inf`` -> requests per second."""
    try:
        r = float(text)
    except ValueError:
        raise InvalidInputError(f"arrival rate must be a number > 0 or 'inf', got {text!r}") from None
    if math.isnan(r) or r <= 0:
        raise InvalidInputError(f"arrival rate must be > 0 requests/s (or inf), got {text!r}")
    return r


def _field(where: str, row: dict, key: str, integer: bool, default: float | None = None) -> float:
    if key not in row or row[key] in (None, ""):
        if default is not None:
            return default
        raise TraceFormatError(f"{where}: missing field {key!r}")
    v = row[key]
    try:
        if isinstance(v, bool):
            raise ValueError
        f = float(v)
    except (TypeError, ValueError):
        raise TraceFormatError(f"{where}: {key} is not a number: {v!r}") from None
    if not math.isfinite(f):
        raise TraceFormatError(f"{where}: {key} must be finite, got {v!r}")
    if integer and (f != int(f) or f < 1):
        raise TraceFormatError(f"{where}: {key} must be an integer >= 1, got {v!r}")
    if not integer and f < 0:
        raise TraceFormatError(f"{where}: {key} must be >= 0, got {v!r}")
    return f


def _rows_jsonl(path: str, text: str):
    for i, line in enumerate(text.splitlines(), 1):
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        try:
            row = finite_json_loads(s)
        except json.JSONDecodeError as exc:
            raise TraceFormatError(f"{path}:{i}: not valid JSON ({exc.msg})") from None
        if not isinstance(row, dict):
            raise TraceFormatError(f"{path}:{i}: expected a JSON object, got {type(row).__name__}")
        yield f"{path}:{i}", row


def _rows_csv(path: str, text: str):
    reader = csv.reader(io.StringIO(text))
    header = None
    for i, cells in enumerate(reader, 1):
        if not cells or all(not c.strip() for c in cells):
            continue
        if header is None:
            header = [c.strip() for c in cells]
            missing = [f for f in TRACE_FIELDS[1:] if f not in header]
            if missing:
                raise TraceFormatError(
                    f"{path}:{i}: CSV header lacks {', '.join(missing)} (has {', '.join(header)})"
                )
            continue
        if len(cells) != len(header):
            raise TraceFormatError(f"{path}:{i}: expected {len(header)} columns, got {len(cells)}")
        yield f"{path}:{i}", dict(zip(header, (c.strip() for c in cells)))
    if header is None:
        raise TraceFormatError(f"{path}: empty CSV (no header)")


def read_trace(path: str | Path) -> Requests:
    """Read a JSONL (``.jsonl``/``.json``) or CSV trace; see the module docstring for the format.

    Parameters
    ----------
    path : str or Path
        The trace file.

    Returns
    -------
    Requests
        The requests (arrival in seconds, lengths in tokens).

    Raises
    ------
    TraceFormatError
        When the file cannot be read, a field is missing or invalid, or it holds no requests.
    """
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise TraceFormatError(f"cannot read trace {path}: {exc.strerror or exc}") from None
    rows = _rows_csv(str(path), text) if p.suffix.lower() == ".csv" else _rows_jsonl(str(path), text)
    arr, pl, ol = [], [], []
    for where, row in rows:
        arr.append(_field(where, row, "arrival_s", False, default=0.0))
        pl.append(_field(where, row, "prompt_len", True))
        ol.append(_field(where, row, "output_len", True))
    if not arr:
        raise TraceFormatError(f"{path}: no requests in the trace")
    return Requests.of(arr, np.array(pl, dtype=np.int64), np.array(ol, dtype=np.int64))


def write_trace(path: str | Path, requests: Requests) -> None:
    """Write ``requests`` as JSONL (or CSV for a ``.csv`` path).

    Parameters
    ----------
    path : str or Path
        The output file.
    requests : Requests
        The requests (arrival in seconds, lengths in tokens).
    """
    p = Path(path)
    with p.open("w") as f:
        if p.suffix.lower() == ".csv":
            f.write(",".join(TRACE_FIELDS) + "\n")
            for a, pr, o in zip(requests.arrival_s, requests.prompt_len, requests.output_len):
                f.write(f"{float(a)!r},{int(pr)},{int(o)}\n")
        else:
            for a, pr, o in zip(requests.arrival_s, requests.prompt_len, requests.output_len):
                f.write(
                    json.dumps({"arrival_s": float(a), "prompt_len": int(pr), "output_len": int(o)}) + "\n"
                )
