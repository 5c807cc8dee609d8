"""Planner benchmarks: solve time, gap and the margin over every baseline, at the issue's sizes.

    python benchmarks/planners.py [--time-limit 60] [--only moe|moe-e2e|sp|sp-topology] [--write]

MoE: the EPLB README example (2 layers x 12 experts on 8 GPUs x 2 slots) at gap 0.1% and 0,
each layer's plan, lower bound and gap beside every baseline; then Zipf(alpha) loads (0, 1.01, 1.2) over 256 experts x 32 GPUs x 61 layers
(DeepSeek-V3 sized: 8 slots per GPU, or 9 with DeepSeek's 32 redundant
experts; also alpha 0.5), 4 nodes; one run with inter-layer affinity; plus 8x4 and 64x8.
``milp`` counts the layers handed to the MILP.
SP: log-normal(5.95, 1.26) lengths (FlexSP's Wikipedia fit) on Llama-3-8B / H100
(peak profile), 64 and 32 GPUs, each SP kind.  SP over a topology (FlexSP-like, also
``--only sp-topology``): 64 H100 in 8 nodes of 8 (examples/dgx-h100-x8.yaml), a long-tailed batch
of 512 lengths log-normal(8.0, 1.6) clipped to [128, 256K] (seed 0), each kind, both profiles, with
and without micro-batches, and the same batch priced as one NVLink node of 64.
MoE end to end (``--only moe-e2e``; :mod:`perfmodel.planners.moe_e2e`): the seed papers' settings
(MoETuner's two nodes, ExFlow's 32 GPUs) planned, then the plan, contiguous and the EPLB-style
placements priced by ``analyze`` and ``simulate`` with ``--moe-placement``; ``--write`` stores the plans and
their numbers in ``docs/planners-moe-e2e.json`` and the table in ``docs/planners.md``.
Prints what it measured; nothing is cached.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np
from _host import cpu_model  # this folder, on the path when run as a script
import pulp

from perfmodel.planners.moe import MoEProblem, plan_moe
from perfmodel.planners.solver import SolverOptions
from perfmodel.planners.synthetic import lognormal_lengths, markov_affinity, zipf_loads

# deepseek-ai/EPLB README example: 2 layers x 12 experts, 16 physical slots on 8 GPUs in 2 nodes
EPLB_README = [
    [90, 132, 40, 61, 104, 165, 39, 4, 73, 56, 183, 86],
    [20, 107, 104, 64, 19, 197, 187, 157, 172, 86, 16, 27],
]


def moe_published(limit: float):
    print(
        "\nMoE placement, EPLB README example (2 layers x 12 experts, 8 GPUs x 2 slots, 2 nodes): max GPU load"
    )
    names = ("contiguous", "round_robin", "greedy_lpt", "eplb_hierarchical", "greedy_replicated")
    print(
        f"{'gap_rel':>7} {'layer':>5} {'plan':>7} {'bound':>8} {'gap':>7} {'closed by':>11} "
        + " ".join(f"{n:>17}" for n in names)
    )
    for gap in (1e-3, 0.0):
        t0 = time.perf_counter()
        plan = plan_moe(
            MoEProblem(np.array(EPLB_README, float), 8, 2, 2), SolverOptions(time_limit_s=limit, gap_rel=gap)
        )
        wall = time.perf_counter() - t0
        d = plan.to_dict()
        for l, layer in enumerate(d["layers"]):
            print(
                f"{gap:>7g} {l:>5} {layer['max_gpu_load']:>7.1f} {layer['lower_bound']:>8.2f} {layer['gap']:>7.2%} "
                f"{layer['method']!s:>11} "
                + " ".join(f"{d['baselines'][n]['layers'][l]['max_gpu_load']:>17.1f}" for n in names)
            )
        print(f"{'':>7} {'all':>5} status {d['solver']['status']}, {wall:.3f} s wall", flush=True)


def moe_rows(limit: float):
    cases = [
        (8, 4, 1, 2, 0, 1.01, False),
        (8, 4, 1, 3, 0, 1.01, False),
        (64, 8, 4, 8, 2, 1.01, False),
        (64, 8, 4, 9, 2, 1.01, False),
    ]
    cases += [(256, 32, 61, s, 4, a, False) for s in (8, 9) for a in (0.0, 0.5, 1.01, 1.2)]
    cases += [(256, 32, 61, 9, 4, 1.01, True)]
    print("\nMoE placement (tokens: sum over layers of the max GPU load)")
    print(
        f"{'E x G x L':>13} {'slots':>5} {'alpha':>5} {'aff':>3} {'status':>30} {'proven':>7} {'milp':>4} {'s':>6} "
        f"{'gap':>7} {'median':>7} {'bound':>11} {'plan':>11} {'contig':>7} {'rr':>7} {'lpt':>7} {'eplb':>7} {'greedy+rep':>10} {'xnode':>7}"
    )
    for e, g, l, s, nodes, alpha, aff in cases:
        loads = zipf_loads(e, l, alpha, tokens=200_000, top_k=min(8, e // 4), seed=11)
        r = markov_affinity(loads, seed=11) if aff else None
        t0 = time.perf_counter()
        plan = plan_moe(MoEProblem(loads, g, s, max(nodes, 1), r), SolverOptions(time_limit_s=limit))
        wall = time.perf_counter() - t0
        d = plan.to_dict()
        ours = d["total"]["max_gpu_load"]
        ratio = lambda name: d["baselines"][name]["total"]["max_gpu_load"] / ours
        xnode = ""
        if aff:
            xnode = f"{d['baselines']['eplb_hierarchical']['total']['weighted_traffic'] / d['total']['weighted_traffic']:.2f}x"
        print(
            f"{e:>4}x{g:>3}x{l:>3} {s:>5} {alpha:>5} {'yes' if aff else 'no':>3} {d['solver']['status']:>30} "
            f"{d['solver']['layers_proven_optimal']:>3}/{l:<3} {d['solver']['milp_layers']:>4} {wall:>6.1f} {d['solver']['gap']:>7.2%} "
            f"{float(np.median([x['gap'] for x in d['layers']])):>7.2%} {d['total']['lower_bound']:>11,.0f} {ours:>11,.0f} "
            f"{ratio('contiguous'):>6.3f}x {ratio('round_robin'):>6.3f}x {ratio('greedy_lpt'):>6.3f}x "
            f"{ratio('eplb_hierarchical'):>6.3f}x {ratio('greedy_replicated'):>9.3f}x {xnode:>7}",
            flush=True,
        )


def sp_rows(limit: float):
    import perfmodel
    from perfmodel.planners.sp import build_instance, plan_sp
    from perfmodel.planners.sp_cost import SpCostModel, SpKind

    model = perfmodel.load_model("llama-3-8b")
    gpu = perfmodel.load_gpu("h100-sxm-80gb")
    prof = perfmodel.peak_profile(gpu)
    print("\nSP split, Llama-3-8B on H100 (peak profile); lengths log-normal(5.95, 1.26) clipped to [16, 1M]")
    print(
        f"{'seqs':>5} {'GPUs':>4} {'kind':>8} {'status':>30} {'s':>6} {'makespan s':>10} {'bound s':>9} {'gap':>7} "
        f"{'best static':>14} {'worst static':>13}"
    )
    for n, gpus, kind in [
        (270, 64, SpKind.ULYSSES),
        (270, 64, SpKind.RING),
        (270, 64, SpKind.HYBRID),
        (1000, 32, SpKind.ULYSSES),
    ]:
        lengths = lognormal_lengths(n, max_len=1_000_000, seed=5)
        t0 = time.perf_counter()
        inst = build_instance(lengths, gpus, SpCostModel(model, gpu, prof, kind))
        plan = plan_sp(inst, SolverOptions(time_limit_s=limit))
        wall = time.perf_counter() - t0
        st = {k: v for k, v in plan.baselines.items() if v is not None}
        bk, bv = min(st.items(), key=lambda kv: kv[1])
        wk, wv = max(st.items(), key=lambda kv: kv[1])
        print(
            f"{n:>5} {gpus:>4} {kind.value:>8} {plan.solver['status']:>30} {wall:>6.1f} {plan.makespan_s:>10.4f} "
            f"{plan.lower_bound_s:>9.4f} {plan.solver['gap']:>7.2%} {bk[10:]:>4}: {bv / plan.makespan_s:.3f}x "
            f"{wk[10:]:>4}: {wv / plan.makespan_s:.3f}x",
            flush=True,
        )


def sp_topology_rows(limit: float):
    import perfmodel
    from perfmodel.calibration import resolve_profile
    from perfmodel.comm import Topology, resolve_topology
    from perfmodel.planners.sp import build_instance, plan_sp
    from perfmodel.planners.sp_cost import SpCostModel, SpKind

    model = perfmodel.load_model("llama-3-8b")
    gpu = perfmodel.load_gpu("h100-sxm-80gb")
    system = os.path.join(
        os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples", "dgx-h100-x8.yaml"
    )
    topo = resolve_topology(system, gpu, 64)
    one_node = Topology("one NVLink node of 64", gpu.name, 64, 1, topo.intra, None)
    batches = {
        "lognormal(8.0,1.6)x512": lognormal_lengths(512, 8.0, 1.6, min_len=128, max_len=262_144, seed=0),
        "wikipedia-fit x4096": lognormal_lengths(4096, min_len=128, max_len=262_144, seed=0),
    }
    print(
        "\nSP over a topology (FlexSP-like): Llama-3-8B, 64 H100 in 8 nodes of 8 (NVLink 450 GB/s, one 50 GB/s NIC "
        "per GPU); gain = static makespan / plan makespan; 'bound allows' = best static / lower bound"
    )
    for name, lengths in batches.items():
        print(
            f"batch {name}: {len(lengths)} sequences, {int(lengths.sum()):,} tokens, max {int(lengths.max()):,}, "
            f"{int((lengths > 65_536).sum())} over 64K"
        )
    degrees = (1, 2, 4, 8, 16, 32, 64)
    print(
        f"{'batch':>22} {'profile':>10} {'kind':>7} {'topology':>8} {'mb':>3} {'status':>30} {'s':>5} {'plan s':>7} "
        f"{'bound s':>7} {'gap':>6} {'bound allows':>12} " + " ".join(f"{'vs ' + str(d):>6}" for d in degrees)
    )
    rows = [
        ("lognormal(8.0,1.6)x512", mode, kind, True, mb)
        for mode in ("calibrated", "peak")
        for kind in (SpKind.AUTO, SpKind.ULYSSES, SpKind.RING, SpKind.HYBRID)
        for mb in (False,)
    ]
    rows += [
        ("lognormal(8.0,1.6)x512", "calibrated", SpKind.AUTO, True, True),
        ("lognormal(8.0,1.6)x512", "calibrated", SpKind.AUTO, False, False),
        ("wikipedia-fit x4096", "calibrated", SpKind.AUTO, True, False),
    ]
    for name, mode, kind, on_topo, mb in rows:
        t0 = time.perf_counter()
        cost = SpCostModel(
            model, gpu, resolve_profile(gpu, mode), kind, topology=topo if on_topo else one_node
        )
        plan = plan_sp(
            build_instance(batches[name], 64, cost), SolverOptions(time_limit_s=limit), micro_batches=mb
        )
        wall = time.perf_counter() - t0
        st = {int(k[10:]): v for k, v in plan.baselines.items() if v is not None}
        best = min(st.values())
        gains = " ".join(f"{st[d] / plan.makespan_s:>5.3f}x" if d in st else f"{'-':>6}" for d in degrees)
        print(
            f"{name:>22} {mode:>10} {kind.value:>7} {'8x8' if on_topo else '1x64':>8} {'yes' if mb else 'no':>3} "
            f"{plan.solver['status']:>30} {wall:>5.1f} {plan.makespan_s:>7.3f} {plan.lower_bound_s:>7.3f} "
            f"{plan.solver['gap']:>6.2%} {best / plan.lower_bound_s:>11.3f}x {gains}",
            flush=True,
        )


def moe_e2e_rows(limit: float, write: bool):
    from perfmodel.planners import moe_e2e

    print(
        "\nMoE placement end to end: the seed papers' settings, plan vs contiguous and EPLB-style "
        "(analyze and simulate with --moe-placement)"
    )
    t0 = time.perf_counter()
    results = moe_e2e.run(time_limit_s=limit)
    print(f"planned and priced in {time.perf_counter() - t0:.1f} s")
    print(moe_e2e.render(results), flush=True)
    if write:
        moe_e2e.store(results)
        moe_e2e.write_doc(results)
        print(f"wrote {moe_e2e.DATA_JSON} and the table in {moe_e2e.DOC_MD}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--time-limit", type=float, default=60.0)
    ap.add_argument("--only", choices=["moe", "moe-e2e", "sp", "sp-topology"], default=None)
    ap.add_argument(
        "--write", action="store_true", help="with moe-e2e: store its plans, numbers and docs table"
    )
    args = ap.parse_args()
    from importlib.metadata import version

    import highspy  # noqa: F401

    print(
        f"date {datetime.date.today()}; {cpu_model()}; {platform.machine()} {os.cpu_count()} CPUs; Python {platform.python_version()}; "
        f"PuLP {pulp.__version__}; highspy {version('highspy')}; numpy {np.__version__}; "
        f"time limit {args.time_limit:g} s per plan; HiGHS, 1 thread, gap 0.1% unless stated"
    )
    if args.only in (None, "moe"):
        moe_published(args.time_limit)
        moe_rows(args.time_limit)
    if args.only in (None, "moe-e2e"):
        moe_e2e_rows(args.time_limit, args.write)
    if args.only in (None, "sp"):
        sp_rows(args.time_limit)
    if args.only in (None, "sp", "sp-topology"):
        sp_topology_rows(args.time_limit)


if __name__ == "__main__":
    main()
