"""Pruning to a budget: ``--prune auto`` (accuracy) and ``--max-latency MS`` (the target's estimated latency).

``--prune auto`` bisects the global ratio: each probe is pruned, refitted and briefly distilled (an equal share
of the recovery budget), then scored by the accuracy guard; the strongest ratio within the budget is pruned again
with the full recovery budget (distillation keeps the stage closest to float in output error, which is not the
guard's metric: when that run measures over the budget, the probe's model at the same ratio, which held, is
kept). ``--max-latency`` bisects the ratio on the latency estimate of ``edgec.targets.estimate`` (cheap: no
recovery) for the weakest pruning that meets it; the guard then judges that one model. Both record the
ratio-versus-fidelity (or -latency) curve they explored in the compile report.

On a profile without ``[performance.measured]`` the estimate is a roofline one: the search proceeds and says so.
"""

from __future__ import annotations

from edgec import ir as edgec_ir
from edgec.errors import AccuracyBudgetError, ResourceLimitError, UsageError

__all__ = ["estimated_ms", "search"]

MAX_RATIO = 0.8
AUTO_PROBES = 5  # bisection steps: the ratio is found to within MAX_RATIO / 2**5 = 0.025
LATENCY_PROBES = 7
PROBE_SHARE = 0.1  # of the recovery budget, for each accuracy probe


def estimated_ms(model, profile, io: dict) -> tuple[float, str]:
    """(latency in ms, basis) of an IR model on the profile, batch 1."""
    from edgec.targets.estimate import estimate_model

    shapes = [[1 if d is None else d for d in meta["shape"]] for meta in io["inputs"]]
    doc = estimate_model(edgec_ir.to_proto(model), profile, input_shapes=shapes)
    return float(doc["latency_ms"]), doc["latency_basis"]


def _point(ratio: float, candidate, measured: dict | None, latency: float | None = None) -> dict:
    from edgec.compiler.stages.compress import _parameters

    point = {"ratio": round(ratio, 4), "parameters": _parameters(candidate)}
    if measured is not None:
        point.update(score=measured["score"], drop=measured["drop"], metric=measured["metric"])
    if latency is not None:
        point["estimated_ms"] = round(latency, 4)
    return point


def search(trials, budget: float, io: dict):
    """((candidate, records, passes, measure), search report) for ``--prune auto`` or ``--max-latency``."""
    if trials.options.max_latency:
        return _latency_search(trials, budget, io)
    return _accuracy_search(trials, budget)


def _accuracy_search(trials, budget: float):
    from edgec.compiler.stages.compress import within_budget

    if trials.evaluator is None:
        raise UsageError("--prune auto: nothing to judge the accuracy on; give --calibration (held-out samples are "
                         "scored) or --eval-data")
    seconds = trials.recover_seconds()
    low, high, curve, kept = 0.0, MAX_RATIO, [], None
    for _ in range(AUTO_PROBES):
        ratio = (low + high) / 2
        probe = trials.run(ratio=ratio, seconds=seconds * PROBE_SHARE)
        curve.append({**_point(ratio, probe[0], probe[3]), "within_budget": within_budget(probe[3], budget)})
        low, high = (ratio, high) if curve[-1]["within_budget"] else (low, ratio)
        kept = probe if curve[-1]["within_budget"] else kept  # the strongest probe within the budget so far
    notes = [f"--prune auto: {len(curve)} probes (each with {seconds * PROBE_SHARE:.0f} s of recovery); the "
             f"strongest ratio within the {budget:g}-point budget is {low:g}"]
    if low == 0.0:
        notes.append("--prune auto: every probed ratio exceeded the budget: nothing pruned")
    final = trials.run(ratio=low, seconds=seconds)
    if not within_budget(final[3], budget):
        # the probe at this ratio was within the budget; its shorter recovery is what differs
        notes.append(f"--prune auto: ratio {low:g} with full recovery measured {final[3]['drop']:.2f} points; "
                     + ("kept the probe's model at that ratio (within the budget)" if kept is not None
                        else "falling back to no pruning"))
        final = kept if kept is not None else trials.run(ratio=0.0, seconds=0.0)
    return final, {"mode": "auto", "budget": budget, "ratio": round(low, 4), "curve": curve, "notes": notes}


def _latency_search(trials, budget: float, io: dict):
    from edgec.compiler.stages.compress import within_budget

    limit, profile = trials.options.max_latency, trials.profile
    unpruned, basis = estimated_ms(trials.model, profile, io)
    notes = [f"--max-latency {limit:g} ms: estimated {unpruned:.4g} ms unpruned on {profile.name} ({basis})"]
    notice = None
    if profile.performance.measured is None:
        notice = (f"--max-latency: {profile.name} is not calibrated: the latency is a roofline estimate; "
                  f"proceeding (for a measured one: `edgec targets calibrate --device DEVICE --base {profile.name} "
                  "--as NAME`, then --target NAME)")
        notes.append(notice)
    curve, low, high = [{"ratio": 0.0, "estimated_ms": round(unpruned, 4)}], 0.0, MAX_RATIO
    if unpruned > limit:
        strongest = _latency_probe(trials, MAX_RATIO, io, curve)
        if strongest > limit:
            raise ResourceLimitError(
                f"--max-latency {limit:g} ms is out of reach on {profile.name}: estimated {unpruned:.4g} ms "
                f"unpruned and {strongest:.4g} ms at the strongest pruning ({MAX_RATIO:g}); raise --max-latency "
                "or choose a faster target")
        for _ in range(LATENCY_PROBES):
            ratio = (low + high) / 2
            low, high = (ratio, high) if _latency_probe(trials, ratio, io, curve) > limit else (low, ratio)
    else:
        high = 0.0
        notes.append("--max-latency: met without pruning")
    final = trials.run(ratio=high)
    if not within_budget(final[3], budget):
        raise AccuracyBudgetError(
            f"--max-latency {limit:g} ms needs pruning ratio {high:g}, which costs "
            f"{trials.evaluator.summary(final[3])}: over the {budget:g}-point budget; raise --max-latency or "
            "--max-accuracy-drop")
    notes.append(f"--max-latency: ratio {high:g} is the weakest pruning estimated within {limit:g} ms")
    curve.sort(key=lambda p: p["ratio"])
    return final, {"mode": "max-latency", "max_latency_ms": limit, "basis": basis, "ratio": round(high, 4),
                   "curve": curve, "notes": notes, **({"notice": notice} if notice else {})}


def _latency_probe(trials, ratio: float, io: dict, curve: list) -> float:
    from edgec.compiler.passes.prune_filters import PruneFilters
    from edgec.compiler.stages.compress import channel_multiple

    model = edgec_ir.from_proto(trials.proto)
    PruneFilters(ratio, None, trials.batches, reconstruct=False, channel_multiple=channel_multiple(trials.profile),
                 seed=trials.options.seed, sensitivity_cache=trials.cache)(model)
    latency = estimated_ms(model, trials.profile, io)[0]
    curve.append(_point(ratio, model, None, latency))
    return latency
