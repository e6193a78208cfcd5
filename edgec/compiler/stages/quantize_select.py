"""Which layers to measure together, and the float layers worth their cost whatever the accuracy budget says.

* **Sensitivity groups.** A layer's sensitivity is the output noise of the model with only that layer quantized.
  onnxruntime folds a Relu/Clip that follows a quantized Conv into the output's quantization range (the range of
  the activation's output); quantizing the Conv *alone* instead quantizes its pre-activation output with the
  pre-activation range, an error the fully quantized model never makes (EfficientNet-Lite2's stem measured 9x the
  whole int8 model's noise that way). So a layer is measured together with the Relu/Clip it alone feeds.
* **Cheap float layers.** Some layers carry a large share of the int8 model's output noise for a tiny share of its
  cost (a stem Conv on 3 input channels, a first depthwise Conv: a few hundred weights, where a per-tensor range
  spans channels of very different scales). Those are kept in float even when the budget holds: a layer whose
  noise share (its noise alone / the int8 model's noise) is at least ``WORTH`` times its cost share
  (``quantize_cost``), cheapest-per-noise first, up to ``CHEAP_LIMIT`` of the model's cost in all. The choice is
  measured: kept only when the model's output noise falls by at least ``MIN_GAIN``, else undone.
"""

from __future__ import annotations

from edgec.compiler.quantizers.scope import GROUP_PREFIX
from edgec.compiler.stages.quantize_evidence import decide

__all__ = ["CHEAP_LIMIT", "MIN_GAIN", "WORTH", "buy_cheap_layers", "sensitivity_groups"]

WORTH = 20.0  # noise share per cost share a float layer must reach to be kept float regardless of the budget
CHEAP_LIMIT = 0.03  # at most this share of the model's cost (size + time) goes to such layers
MIN_GAIN = 0.25  # the measured output noise must fall by this fraction, else the cheap layers are undone
ACTIVATIONS = ("Relu", "Clip")


def sensitivity_groups(model, names) -> dict[str, set[str]]:
    """Node name -> the nodes quantized together to measure it: itself and a Relu/Clip that only it feeds."""
    groups = {}
    wanted = set(names)
    for node in model.graph:
        if node.name not in wanted:
            continue
        group = {node.name}
        users = [user for user, _ in node.outputs[0].uses()] if node.outputs else []
        if len(users) == 1 and users[0].op_type in ACTIVATIONS:
            group.add(users[0].name)
        groups[node.name] = group
    return groups


def cheap_candidates(candidates: list[str], costs: dict) -> list[str]:
    """The weighted layers cheap enough to be considered at all (each within ``CHEAP_LIMIT``). Op-type groups
    (``ops:Add``: every Add of the model) are not: their cost is a rough count of output elements with no bytes,
    so any noise makes them look worth it: EfficientNet-Lite2 kept every Add and Clip float and fell to 0.923
    agreement (benchmarks/quant_real.py), where choosing among weighted layers only had reached 0.957."""
    return [name for name in candidates
            if name in costs and costs[name]["cost"] <= CHEAP_LIMIT and not name.startswith(GROUP_PREFIX)]


def choose_cheap(sensitivity: dict, costs: dict, noise: float) -> list[str]:
    """The layers worth keeping float for their noise share per cost share, best first, within ``CHEAP_LIMIT``."""
    ratio = {name: sensitivity[name]["noise"] / max(noise, 1e-30) / max(costs[name]["cost"], 1e-9)
             for name in sensitivity if name in costs}
    chosen, spent = [], 0.0
    for name in sorted(ratio, key=lambda n: (-ratio[n], n)):
        if ratio[name] < WORTH or spent + costs[name]["cost"] > CHEAP_LIMIT:
            break
        chosen.append(name)
        spent += costs[name]["cost"]
    return chosen


def buy_cheap_layers(quantizer, score, measure, full: tuple, costs: dict, candidates: list[str],
                     sensitivity: dict, tried: list[dict], row) -> tuple[list[str], tuple, list[str]]:
    """(cheap float layers, (proto, measured, evidence) to continue from, notes).

    ``score(proto)``: the measure of a quantized model; ``measure(names)``: sensitivities of ``names`` (cached by the caller); ``full``: (proto, measured, evidence) of
    the fully quantized model; ``row(step, change, measured, evidence)``: a row of the guard's table.
    """
    _, measured, evidence = full
    missing = [n for n in cheap_candidates(candidates, costs) if n not in sensitivity]
    sensitivity.update(measure(missing))
    chosen = choose_cheap({n: sensitivity[n] for n in cheap_candidates(candidates, costs)}, costs,
                          measured["noise"])
    if not chosen:
        return [], full, [f"no layer carries {WORTH:g}x its cost share of the int8 output noise: none kept "
                          "float for its cost"]
    trial = quantizer.quantize(exclude=chosen)
    result = score(trial)
    verdict = decide(result, evidence["budget"])
    share = sum(costs[n]["cost"] for n in chosen)
    kept = result["noise"] <= (1.0 - MIN_GAIN) * measured["noise"]
    tried.append(row(len(tried), f"{len(chosen)} cheap layers in float ({', '.join(chosen)}; "
                                 f"{share:.2%} of the cost): {'kept' if kept else 'undone'}", result, verdict))
    note = (f"cheap float layers {', '.join(chosen)} ({share:.2%} of the model's cost): output noise "
            f"{measured['noise']:.2e} -> {result['noise']:.2e}, {'kept' if kept else 'undone'} (kept when it "
            f"falls by {MIN_GAIN:.0%})")
    if not kept:
        return [], full, [note]
    return chosen, (trial, result, verdict), [note]

