"""Load hardware data files (YAML, read with the safe loader) into frozen dataclasses."""

from __future__ import annotations

import functools
import math
from pathlib import Path
from types import MappingProxyType
from typing import Any


from perfmodel.hw.spec import GPU, MATH_FALLBACK, Cluster, Dtype, Link, LinkKind, Node, Source

DATA_DIR = Path(__file__).resolve().parent / "data"
GPU_DIR = DATA_DIR / "gpus"
SYSTEM_DIR = DATA_DIR / "systems"
ALIAS_FILE = DATA_DIR / "aliases.yaml"


class HardwareError(ValueError):
    """A hardware data file is missing, malformed or unknown."""


class UnknownHardwareError(HardwareError, KeyError):
    """A GPU or system name that no data file defines."""

    def __str__(self) -> str:  # KeyError would quote the message
        return self.args[0] if self.args else ""


# Numeric fields of a GPU file and whether they must be integers.
_GPU_NUMERIC = {
    "hbm_bytes": int,
    "hbm_usable_bytes": int,
    "hbm_bytes_per_s": float,
    "l2_bytes": int,
    "smem_bytes_per_sm": int,
    "sm_count": int,
    "boost_clock_hz": float,
    "nvlink_bytes_per_s_per_direction": float,
    "pcie_gen": int,
    "pcie_bytes_per_s_per_direction": float,
    "host_ddr_bytes_per_s": float,
    "host_ddr_bytes": int,
    "fabric_latency_s": float,
    "pcie_latency_s": float,
}


def _read_yaml(path: Path) -> dict[str, Any]:
    import yaml  # on first read: ``import hw`` stays cheap

    # libyaml's safe loader when built (the same documents, about 10x faster), else the pure-Python one
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise HardwareError(f"hardware file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise HardwareError(f"{path}: cannot be read ({exc.__class__.__name__})") from None
    try:
        data = yaml.load(text, Loader=loader)
    except yaml.YAMLError as exc:
        line = getattr(getattr(exc, "problem_mark", None), "line", None)
        where = f" (line {line + 1})" if line is not None else ""
        raise HardwareError(f"{path}: not valid YAML{where}") from None
    if not isinstance(data, dict):
        raise HardwareError(f"{path}: expected a mapping at the top level")
    return data


def _number(path: Path, key: str, value: Any, kind: type) -> float | int:
    try:
        num = float(value)  # YAML 1.1 reads "3.35e12" as a string
    except OverflowError:  # an integer beyond the float range (~1.8e308)
        raise HardwareError(
            f"{path}: field {key!r} must be finite and >= 0, got a number too large for a float"
        ) from None
    except (TypeError, ValueError):
        raise HardwareError(f"{path}: field {key!r} must be a number, got {value!r}") from None
    if not math.isfinite(num) or num < 0:
        raise HardwareError(f"{path}: field {key!r} must be finite and >= 0, got {value!r}")
    if kind is int:
        if num != int(num):
            raise HardwareError(f"{path}: field {key!r} must be an integer, got {value!r}")
        return int(num)
    return num


def _sources(path: Path, data: dict[str, Any], required: list[str]) -> tuple[Source, ...]:
    raw = data.get("sources")
    if not isinstance(raw, list) or not raw:
        raise HardwareError(f"{path}: a 'sources' list is required")
    out = []
    covered: set[str] = set()
    for i, item in enumerate(raw):
        if not isinstance(item, dict) or "source" not in item or "fields" not in item:
            raise HardwareError(f"{path}: sources[{i}] needs 'fields' and 'source'")
        fields = tuple(str(f) for f in item["fields"])
        covered.update(fields)
        out.append(Source(fields=fields, source=str(item["source"])))
    missing = [f for f in required if f not in covered]
    if missing:
        raise HardwareError(f"{path}: no source given for {', '.join(missing)}")
    return tuple(out)


#: The math formats every calculation may ask a GPU for (``GPU.flops_for``): elementwise ops price
#: their math at ``fp32`` (vector units), GEMMs and attention at the weight/activation format.  Each
#: must resolve at load time, directly or through :data:`perfmodel.hw.spec.MATH_FALLBACK`, so no calculation
#: fails on a missing peak later: a file without one is refused naming the ``peak_flops`` field.
REQUIRED_MATH_FORMATS: tuple[Dtype, ...] = tuple(Dtype)


def _check_math_formats(path: Path, flops: dict[Dtype, float]) -> None:
    for dt in REQUIRED_MATH_FORMATS:
        if flops.get(dt, 0.0) > 0 or any(flops.get(alt, 0.0) > 0 for alt in MATH_FALLBACK[dt]):
            continue
        chain = ", ".join(a.value for a in MATH_FALLBACK[dt])
        raise HardwareError(
            f"{path}: missing field 'peak_flops.{dt.value}' (no fallback format present"
            + (f"; tried {chain}" if chain else "")
            + ")"
        )


def gpu_from_dict(data: dict[str, Any], path: Path | str = "<dict>") -> GPU:
    """Build a :class:`GPU` from a parsed data file, checking every field.

    Parameters
    ----------
    data : dict
        The file's content: rates in bytes/s and FLOP/s, sizes in bytes, latencies in seconds.
    path : Path or str, optional
        The file, named in error messages.

    Returns
    -------
    GPU
        The GPU.

    Raises
    ------
    HardwareError
        When a field is missing, not a number, or out of range.
    """
    path = Path(path)
    missing = [k for k in ["name", "vendor", "peak_flops", "fabric_kind", *_GPU_NUMERIC] if k not in data]
    if missing:
        raise HardwareError(f"{path}: missing field(s) {', '.join(missing)}")
    values = {k: _number(path, k, data[k], kind) for k, kind in _GPU_NUMERIC.items()}
    if values["hbm_usable_bytes"] > values["hbm_bytes"]:
        raise HardwareError(f"{path}: hbm_usable_bytes exceeds hbm_bytes")
    # sizes and rates that divide (a zero PCIe bandwidth would give an infinite context switch)
    for key in (
        "hbm_bytes",
        "hbm_usable_bytes",
        "hbm_bytes_per_s",
        "sm_count",
        "boost_clock_hz",
        "pcie_bytes_per_s_per_direction",
        "host_ddr_bytes_per_s",
    ):
        if values[key] <= 0:
            raise HardwareError(f"{path}: field {key!r} must be > 0, got {data[key]!r}")
    flops_raw = data["peak_flops"]
    if not isinstance(flops_raw, dict) or not flops_raw:
        raise HardwareError(f"{path}: 'peak_flops' must map dtypes to FLOP/s")
    flops = {}
    for k, v in flops_raw.items():
        try:
            dt = Dtype.parse(k)
        except ValueError as exc:
            raise HardwareError(f"{path}: peak_flops: {exc}") from None
        flops[dt] = float(_number(path, f"peak_flops.{k}", v, float))
        if flops[dt] <= 0:
            raise HardwareError(f"{path}: field 'peak_flops.{k}' must be > 0, got {v!r}")
    _check_math_formats(path, flops)
    try:
        fabric = LinkKind(str(data["fabric_kind"]))
    except ValueError:
        raise HardwareError(
            f"{path}: fabric_kind {data['fabric_kind']!r} unknown; known: {', '.join(k.value for k in LinkKind)}"
        ) from None
    required_sources = ["peak_flops", *[k for k in _GPU_NUMERIC if not k.endswith("latency_s")]]
    sources = _sources(path, data, required_sources)
    return GPU(
        name=str(data["name"]),
        display_name=str(data.get("display_name", data["name"])),
        vendor=str(data["vendor"]),
        architecture=str(data.get("architecture", "")).strip().lower(),
        peak_flops=MappingProxyType(flops),
        fabric_kind=fabric,
        sources=sources,
        **values,
    )


def _aliases() -> dict[str, str]:
    try:
        st = ALIAS_FILE.stat()
    except FileNotFoundError:
        return {}
    return dict(_read_aliases(str(ALIAS_FILE), st.st_mtime_ns, st.st_size))


@functools.lru_cache(maxsize=4)
def _read_aliases(path: str, mtime_ns: int, size: int) -> tuple[tuple[str, str], ...]:
    """The alias file's pairs, read once per version of the file (its modification time and size)."""
    data = _read_yaml(Path(path))
    return tuple((str(k).lower(), str(v)) for k, v in data.get("aliases", {}).items())


def list_gpus() -> list[str]:
    """Canonical names of the GPUs shipped in ``hw/data/gpus``.

    Returns
    -------
    list of str
        Sorted canonical names (``a100-sxm-80gb``, ``h100-sxm-80gb``, ...).
    """
    try:
        mtime_ns = GPU_DIR.stat().st_mtime_ns
    except FileNotFoundError:
        return []
    return list(_gpu_names(str(GPU_DIR), mtime_ns))


@functools.lru_cache(maxsize=4)
def _gpu_names(folder: str, mtime_ns: int) -> tuple[str, ...]:
    """The GPU files' names, listed once per version of the folder (its modification time)."""
    return tuple(sorted(p.stem for p in Path(folder).glob("*.yaml")))


def list_aliases() -> dict[str, str]:
    """Short names and the canonical GPU each resolves to.

    Returns
    -------
    dict of str to str
        Alias to canonical name, sorted by alias.
    """
    return dict(sorted(_aliases().items()))


def resolve_gpu_name(name: str) -> str:
    """Canonical name for ``name`` (an alias or a canonical name).

    Parameters
    ----------
    name : str
        An alias or canonical name (case and surrounding space ignored).

    Returns
    -------
    str
        The canonical name.

    Raises
    ------
    UnknownHardwareError
        When ``name`` is neither.
    """
    key = str(name).strip().lower()
    known = list_gpus()
    if key in known:
        return key
    alias = _aliases().get(key)
    if alias is not None:
        return alias
    raise UnknownHardwareError(
        f"unknown GPU {name!r}; known: {', '.join(known)}; aliases: {', '.join(_aliases())}"
    )


@functools.lru_cache(maxsize=64)
def _load_gpu_file(path: str) -> GPU:
    return gpu_from_dict(_read_yaml(Path(path)), path)


def load_gpu(name_or_path: str | Path | GPU) -> GPU:
    """Load a GPU by canonical name, alias, or path to a YAML file of the same schema.

    Parameters
    ----------
    name_or_path : str, Path or GPU
        ``h100``, ``h100-sxm-80gb``, a YAML path, or a GPU (returned as it is).

    Returns
    -------
    GPU
        Its figures in SI units: ``hbm_bytes_per_s``, ``hbm_capacity_bytes``, FLOP/s per dtype, links.

    Raises
    ------
    UnknownHardwareError
        For an unknown name (a :class:`HardwareError`).
    HardwareError
        For a file that breaks the schema (one line naming the field).
    """
    if isinstance(name_or_path, GPU):
        return name_or_path
    text = str(name_or_path)
    p = Path(text)
    if text.endswith((".yaml", ".yml")) or p.is_file():
        return _load_gpu_file(str(p.resolve()))
    return _load_gpu_file(str(GPU_DIR / f"{resolve_gpu_name(text)}.yaml"))


def _link(path: Path, data: Any, what: str) -> Link:
    if not isinstance(data, dict):
        raise HardwareError(f"{path}: {what} must be a mapping")
    try:
        kind = LinkKind(str(data.get("kind")))
    except ValueError:
        raise HardwareError(f"{path}: {what}.kind {data.get('kind')!r} unknown") from None
    bw = float(
        _number(path, f"{what}.bytes_per_s_per_direction", data.get("bytes_per_s_per_direction"), float)
    )
    if bw <= 0:
        raise HardwareError(f"{path}: field '{what}.bytes_per_s_per_direction' must be > 0, got {bw!r}")
    return Link(
        kind=kind,
        bytes_per_s_per_direction=bw,
        latency_s=float(_number(path, f"{what}.latency_s", data.get("latency_s"), float)),
    )


def _require(path: Path, data: dict[str, Any], keys: list[str]) -> None:
    missing = [k for k in keys if k not in data]
    if missing:
        raise HardwareError(f"{path}: missing field(s) {', '.join(missing)}")


def _count(path: Path, key: str, value: Any) -> int:
    num = int(_number(path, key, value, int))
    if num <= 0:
        raise HardwareError(f"{path}: field {key!r} must be > 0")
    return num


def list_systems() -> list[str]:
    """Names of the shipped node and cluster descriptions.

    Returns
    -------
    list of str
        The names, sorted.
    """
    return sorted(p.stem for p in SYSTEM_DIR.glob("*.yaml"))


def load_system(name_or_path: str | Path) -> Node | Cluster:
    """Load a node (``kind: node``) or cluster (``kind: cluster``) description.

    Parameters
    ----------
    name_or_path : str or Path
        A shipped system's name or a YAML file.

    Returns
    -------
    Node or Cluster
        The description (bandwidths in bytes/s per direction, latencies in seconds).

    Raises
    ------
    UnknownHardwareError
        When no shipped system has that name.
    HardwareError
        When the file is malformed.
    """
    text = str(name_or_path)
    p = Path(text)
    if not (text.endswith((".yaml", ".yml")) or p.is_file()):
        p = SYSTEM_DIR / f"{text}.yaml"
        if not p.exists():
            raise UnknownHardwareError(f"unknown system {text!r}; known: {', '.join(list_systems())}")
    data = _read_yaml(p)
    kind = data.get("kind")
    if kind == "node":
        _require(p, data, ["gpu", "gpus_per_node", "intra_node", "host_link"])
        required = [
            "gpus_per_node",
            "intra_node.bytes_per_s_per_direction",
            "host_link.bytes_per_s_per_direction",
            *[k for k in ("host_ddr_bytes", "host_ddr_bytes_per_s") if k in data],
        ]
        sources = _sources(p, data, required)
        gpu = load_gpu(data["gpu"])
        return Node(
            name=str(data.get("name", p.stem)),
            gpu=gpu,
            gpus_per_node=_count(p, "gpus_per_node", data["gpus_per_node"]),
            intra_node=_link(p, data.get("intra_node"), "intra_node"),
            host_link=_link(p, data.get("host_link"), "host_link"),
            host_ddr_bytes=int(
                _number(p, "host_ddr_bytes", data.get("host_ddr_bytes", gpu.host_ddr_bytes), int)
            ),
            host_ddr_bytes_per_s=float(
                _number(
                    p,
                    "host_ddr_bytes_per_s",
                    data.get("host_ddr_bytes_per_s", gpu.host_ddr_bytes_per_s),
                    float,
                )
            ),
            sources=sources,
        )
    if kind == "cluster":
        _require(p, data, ["node", "num_nodes", "inter_node"])
        sources = _sources(p, data, ["num_nodes", "inter_node.bytes_per_s_per_direction"])
        node = load_system(data["node"])
        if not isinstance(node, Node):
            raise HardwareError(f"{p}: 'node' must name a node description")
        return Cluster(
            name=str(data.get("name", p.stem)),
            node=node,
            num_nodes=_count(p, "num_nodes", data["num_nodes"]),
            inter_node=_link(p, data.get("inter_node"), "inter_node"),
            sources=sources,
        )
    raise HardwareError(f"{p}: 'kind' must be 'node' or 'cluster', got {kind!r}")
