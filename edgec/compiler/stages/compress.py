"""Compression stage (runs before quantization): filter pruning, magnitude sparsity, low-rank factorisation.

``--prune R`` removes the fraction R of prunable filters (spread over layers by sensitivity) and refits the
consumers on calibration data; ``--prune-rules FILE.toml`` gives per-layer ratios instead; ``--sparsity S`` zeroes
weights for a smaller compressed file; ``--low-rank E`` factorises large Gemm/MatMul weights keeping energy E.

The accuracy guard: the compressed model is scored against the float model (labelled ``--eval-data``, else
held-out calibration samples) with ``edgec.compiler.accuracy``; when the drop exceeds ``--max-accuracy-drop``
(or the profile's budget) every requested strength is halved and retried, twice, before the compile fails.

Rules file::

    default = 0.0            # ratio for groups no rule matches (optional; else --prune or 0)
    [[rule]]
    match = "node_Conv_1*"   # glob on the name of any producer (Conv/Gemm) of a channel group
    ratio = 0.5
"""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import onnx_ir as ir

from edgec import ir as edgec_ir
from edgec.errors import AccuracyBudgetError, UsageError

__all__ = ["apply", "channel_multiple", "load_rules"]

CALIBRATION_LIMIT = 64  # samples used for ranking sensitivity and reconstruction
BACKOFF = (1.0, 0.5, 0.25)


def channel_multiple(profile) -> int:
    """Keep channel counts a multiple of the target's SIMD width in floats (NCHWc blocks, NEON lanes)."""
    features = set(profile.cpu.isa_features)
    if "avx512f" in features:
        return 16
    if features & {"avx2", "avx"}:
        return 8
    return 4 if features & {"neon", "asimd"} else 1


def load_rules(path: str) -> tuple[float | None, list[tuple[str, float]]]:
    """(default ratio or None, [(glob, ratio), ...]) from a rules TOML; errors name the file and key."""
    import tomllib

    file = Path(path)
    try:
        data = tomllib.loads(file.read_text())
    except FileNotFoundError:
        raise UsageError(f"--prune-rules {path}: no such file") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UsageError(f"--prune-rules {path}: not valid TOML ({exc})") from None
    unknown = sorted(set(data) - {"default", "rule"})
    if unknown:
        raise UsageError(f"--prune-rules {path}: unknown key {unknown[0]!r}; use 'default' and [[rule]] tables")
    default = data.get("default")
    rules = []
    for index, rule in enumerate(data.get("rule", [])):
        extra = sorted(set(rule) - {"match", "ratio"}) if isinstance(rule, dict) else ["(not a table)"]
        if extra or not isinstance(rule.get("match"), str):
            raise UsageError(f"--prune-rules {path}: rule {index + 1} needs match = \"glob\" and ratio = 0.x "
                             f"(got keys {sorted(rule) if isinstance(rule, dict) else rule})")
        rules.append((rule["match"], _ratio(path, f"rule {index + 1} ratio", rule.get("ratio"))))
    return (None if default is None else _ratio(path, "default", default)), rules


def _ratio(path: str, where: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
        raise UsageError(f"--prune-rules {path}: {where} = {value!r}; must be a fraction in [0, 1), e.g. 0.3")
    return float(value)


def _samples(options, io: dict, context: dict):
    if context.get("calibration") is None and options.calibration:
        from edgec.compiler.calibration import load_samples

        context["calibration"] = load_samples(options.calibration, io["inputs"], preprocess=options.preprocess)
    return context.get("calibration")


def _batch_size(io: dict) -> int:
    shapes = [meta["shape"] for meta in io["inputs"]]
    return 16 if all(s and s[0] is None for s in shapes) else (shapes[0][0] if shapes and shapes[0] else 1)


def _data(model: ir.Model, options, io: dict, context: dict):
    """(calibration batches, Evaluator or None, what the guard measures on, notes)."""
    from edgec.compiler import verify
    from edgec.compiler.accuracy import Evaluator
    from edgec.compiler.calibration import load_samples

    samples = _samples(options, io, context)
    batch = _batch_size(io)
    reference = verify.ir_runner(model, "float IR")
    evaluator, measured_on, notes = None, "not measured (no --eval-data, too few calibration samples)", []
    if options.eval_data:
        data = load_samples(options.eval_data, io["inputs"], need_labels=True, preprocess=options.preprocess)
        evaluator, measured_on = Evaluator(reference, data, batch), f"labelled evaluation data {options.eval_data}"
    elif samples is not None and len(samples) >= 2:
        samples, held = samples.split(0.5)
        evaluator, measured_on = Evaluator(reference, held, batch), f"{len(held)} held-out calibration samples"
    if samples is None:
        notes.append("no --calibration: uniform ratios and no reconstruction (both need real samples); give "
                     "--calibration for sensitivity-spread ratios and least-squares reconstruction")
        return [], evaluator, measured_on, notes
    return list(samples.batches(batch, limit=CALIBRATION_LIMIT)), evaluator, measured_on, notes


def _passes(options, profile, batches, factor: float, rules) -> list:
    from edgec.compiler.passes.factorize_linear import FactorizeLinear
    from edgec.compiler.passes.prune_filters import PruneFilters
    from edgec.compiler.passes.sparsify_weights import SparsifyWeights

    passes = []
    if options.prune or rules is not None:
        default, table = rules if rules is not None else (None, None)
        ratio = (default if default is not None else options.prune or 0.0) * factor
        scaled = None if table is None else [(glob, r * factor) for glob, r in table]
        passes.append(PruneFilters(ratio, scaled, batches, channel_multiple=channel_multiple(profile),
                                   seed=options.seed))
    if options.low_rank:
        passes.append(FactorizeLinear(1.0 - (1.0 - options.low_rank) * factor))
    if options.sparsity:
        passes.append(SparsifyWeights(options.sparsity * factor))
    return passes


def _record(pass_, result_modified: bool, before: int, after: int) -> dict:
    return {"name": pass_.name, "settings": pass_.settings(), "modified": bool(result_modified),
            "nodes_before": before, "nodes_after": after, "notes": list(pass_.notes)}


def _attempt(proto, options, profile, batches, factor, rules):
    model = edgec_ir.from_proto(proto)
    records, passes = [], _passes(options, profile, batches, factor, rules)
    for pass_ in passes:
        before = model.graph.num_nodes()
        result = pass_(model)
        model = result.model
        records.append(_record(pass_, result.modified, before, model.graph.num_nodes()))
    return model, records, passes


def _sizes(before: ir.Model, after: ir.Model) -> dict:
    raw_before = edgec_ir.to_proto(before).SerializeToString(deterministic=True)
    raw_after = edgec_ir.to_proto(after).SerializeToString(deterministic=True)
    return {"float_model_bytes": len(raw_before), "compressed_model_bytes": len(raw_after),
            "float_model_deflated_bytes": len(zlib.compress(raw_before, 9)),
            "compressed_model_deflated_bytes": len(zlib.compress(raw_after, 9)),
            "deflate": "zlib level 9 of the serialized ONNX IR (what a deflate-compressed transfer/store holds)"}


def _parameters(model: ir.Model) -> int:
    return int(sum(np.prod(v.const_value.shape) for v in model.graph.initializers.values()
                   if v.const_value is not None))


def apply(model: ir.Model, source, profile, options, context: dict):
    """Run the requested compression passes under the accuracy guard; see the module docstring."""
    if not (options.prune or options.prune_rules or options.sparsity or options.low_rank):
        return model, []
    rules = load_rules(options.prune_rules) if options.prune_rules else None
    io = edgec_ir.io_signature(model, source.layouts)
    batches, evaluator, measured_on, notes = _data(model, options, io, context)
    budget = profile.quantization.max_accuracy_drop if options.max_accuracy_drop is None else options.max_accuracy_drop
    proto = edgec_ir.to_proto(model)
    for factor in BACKOFF:
        candidate, records, passes = _attempt(proto, options, profile, batches, factor, rules)
        measured = None
        if evaluator is not None:
            from edgec.compiler import verify

            measured = evaluator.measure(verify.ir_runner(candidate, "compressed IR"))
        if measured is None or measured["drop"] <= budget:
            break
        notes.append(f"strength x{factor:g}: {evaluator.summary(measured)}: over the {budget:g}-point budget")
    else:
        raise AccuracyBudgetError(
            f"compression: {evaluator.summary(measured)} exceeds --max-accuracy-drop {budget:g} even at "
            f"{BACKOFF[-1]:g}x the requested strength; lower --prune/--sparsity, raise --low-rank, or raise the budget")
    changed = any(r["modified"] for r in records)
    # outputs differ from the source by design: the emitted model is not held to the float tolerance; the guard
    # above bounds the loss instead
    context["lossy"] = changed
    if not changed:
        notes.append(f"nothing was compressed at strength x{factor:g} (groups too small or all kept)")
    context["float_model_bytes"] = len(proto.SerializeToString())
    report = {"strength": factor, "parameters_before": _parameters(model), "parameters_after": _parameters(candidate),
              "size": _sizes(model, candidate), "notes": notes}
    for pass_ in passes:
        if getattr(pass_, "summary", None):
            report["pruning"] = pass_.summary
    report["accuracy"] = ({"summary": evaluator.summary(measured) + f"; budget {budget:g} points; measured on "
                           f"{measured_on}", "budget": budget, **measured} if measured
                          else {"summary": f"accuracy not measured: {measured_on}"})
    context["report"]["compression"] = report
    records.append({"name": "compression-guard", "settings": {"max_accuracy_drop": budget}, "modified": factor < 1,
                    "notes": [*notes, report["accuracy"]["summary"]]})
    return candidate, records
