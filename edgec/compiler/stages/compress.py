"""Compression stage (runs before quantization): filter pruning, magnitude sparsity, low-rank factorisation.

``--prune R`` removes the fraction R of prunable filters (spread over layers by sensitivity) and refits the
consumers on calibration data, then distills the float model into the pruned one for ``--recover-time`` seconds
(``edgec.compiler.recover``; one budget per compile); ``--prune auto`` and ``--max-latency MS`` search the ratio
(``prune_search``); ``--prune-rules FILE.toml`` gives per-layer ratios instead; ``--sparsity S`` zeroes
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
from edgec.compiler.state import CompileState, PassRecord, pass_record, run_passes
from edgec.errors import AccuracyBudgetError, UsageError

__all__ = ["Trials", "apply", "channel_multiple", "load_rules", "within_budget"]

# Samples the pruning pass and distillation see, read once for both (the pass's cost and sensitivity use the first
# few; its least-squares refit all of them, its rows spread over more images within the same row budget).
# EfficientNet-Lite2 at 15% fewer parameters, agreement on other crops of the calibration photos / crops of other
# photos (hand-runs, no recovery): 64 samples 0.848 / 0.762, 256 samples 0.887 / 0.785; at 30% 0.805 -> 0.844
# (other photos 0.688 both). The pass takes twice the time.
CALIBRATION_LIMIT = 256
DEFAULT_RECOVER_SECONDS = 180.0
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


def _batch_size(io: dict) -> int:
    shapes = [meta["shape"] for meta in io["inputs"]]
    return 16 if all(s and s[0] is None for s in shapes) else (shapes[0][0] if shapes and shapes[0] else 1)


def _data(model: ir.Model, io: dict, state: CompileState):
    """(calibration set or None, Evaluator or None, what the guard measures on, notes)."""
    from edgec.compiler import verify
    from edgec.compiler.accuracy import Evaluator

    options, samples = state.options, state.calibration
    batch = _batch_size(io)
    reference = verify.ir_runner(model, "float IR")
    evaluator, measured_on, notes = None, "not measured (no --eval-data, too few calibration samples)", []
    if options.eval_data:
        evaluator = Evaluator(reference, state.eval_set(), batch)
        measured_on = f"labelled evaluation data {options.eval_data}"
    elif samples is not None and len(samples) >= 2:
        samples, held = samples.random_split(0.5, options.seed)  # a file ordered by class splits without bias
        evaluator, measured_on = Evaluator(reference, held, batch), (f"{len(held)} held-out calibration samples "
                                                                     f"(drawn at random, seed {options.seed})")
    if samples is None:
        notes.append("no --calibration: uniform ratios and no reconstruction (both need real samples); give "
                     "--calibration for sensitivity-spread ratios and least-squares reconstruction")
    return samples, evaluator, measured_on, notes


def within_budget(measured: dict | None, budget: float) -> bool:
    """The accuracy guard's verdict on one candidate (the one place that rule lives for compression): the
    quantization guard's evidence rule (``quantize_evidence.decide``), so a candidate is refused only on an interval
    wholly above the budget and an undecided one goes by its estimate."""
    if measured is None:
        return True
    from edgec.compiler.stages.quantize_evidence import decide

    return decide(measured, budget)["accept"]


def _passes(options, profile, batches, factor: float, rules, ratio: float | None, cache: dict) -> list:
    from edgec.compiler.passes.factorize_linear import FactorizeLinear
    from edgec.compiler.passes.prune_filters import PruneFilters
    from edgec.compiler.passes.sparsify_weights import SparsifyWeights

    passes = []
    if ratio is not None or options.prune or rules is not None:
        default, table = rules if rules is not None else (None, None)
        base = ratio if ratio is not None else default if default is not None else options.prune or 0.0
        scaled = None if table is None else [(glob, r * factor) for glob, r in table]
        passes.append(PruneFilters(base * factor, scaled, batches, channel_multiple=channel_multiple(profile),
                                   seed=options.seed, sensitivity_cache=cache,
                                   spread=options.prune_spread or "channels"))
    if options.low_rank:
        passes.append(FactorizeLinear(1.0 - (1.0 - options.low_rank) * factor))
    if options.sparsity:
        passes.append(SparsifyWeights(options.sparsity * factor))
    return passes


class Trials:
    """Compressed candidates of one model: each pruned, recovered and measured under the same settings."""

    def __init__(self, model: ir.Model, options, profile, progress, rules, samples, evaluator, batch: int):
        self.model, self.proto, self.options, self.profile = model, edgec_ir.to_proto(model), options, profile
        self.rules, self.evaluator, self.progress = rules, evaluator, progress
        self.batches = [] if samples is None else list(samples.batches(batch, limit=CALIBRATION_LIMIT))
        self.cache: dict = {}  # sensitivities measured once, reused by every trial
        self.spent = 0.0  # seconds of recovery so far: the guard's retries share one --recover-time

    def recover_seconds(self) -> float:
        """The distillation budget: --recover-time, else the default when there are calibration samples."""
        if self.options.recover_time is not None:
            return self.options.recover_time
        return DEFAULT_RECOVER_SECONDS if self.batches else 0.0

    def measure(self, candidate: ir.Model) -> dict | None:
        from edgec.compiler import verify

        return None if self.evaluator is None else self.evaluator.measure(verify.ir_runner(candidate, "compressed IR"))

    def run(self, factor: float = 1.0, ratio: float | None = None, seconds: float | None = None):
        """(candidate, pass records, passes, accuracy measure or None) at ``factor`` x the strength / ``ratio``."""
        passes = _passes(self.options, self.profile, self.batches, factor, self.rules, ratio, self.cache)
        model, records = run_passes(edgec_ir.from_proto(self.proto), passes)
        seconds = max(0.0, self.recover_seconds() - self.spent) if seconds is None else seconds
        pruned = next((p for p in passes if getattr(p, "kept_inputs", None)), None)
        if pruned is not None and (seconds > 0 or self.options.recover_steps):
            records.append(self._recover(model, pruned, seconds))
        return model, records, passes, self.measure(model)

    def _recover(self, model: ir.Model, pruned, seconds: float) -> PassRecord:
        from edgec.compiler.recover import recover

        if self.options.sparsity:
            return pass_record("recover-distill", {}, ["recovery skipped: training would refill the zeros --sparsity "
                                                       "made"], False)
        say = self.progress.info if self.progress is not None else None
        result = recover(self.model, model, self.batches, pruned.kept_inputs, seconds, self.options.seed,
                         self.options.recover_steps, self.measure, say)
        self.spent += result.seconds
        return pass_record("recover-distill",
                           {"seconds": round(seconds), "steps": self.options.recover_steps, "seed": self.options.seed},
                           result.notes + [_stage_line(stage) for stage in result.stages], result.applied,
                           recovery=result.as_report())


def _stage_line(stage: dict) -> str:
    score = f"{stage.get('metric', 'score')} {stage['score']:.2f}" if "score" in stage else ""
    return f"after {stage['stage']}: {score}, relative error {stage.get('rel_error', float('nan')):.4f}"


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


def _guarded(trials: Trials, budget: float, notes: list):
    """The requested strength, halved while the guard refuses it: (factor, candidate, records, passes, measured)."""
    for factor in BACKOFF:
        candidate, records, passes, measured = trials.run(factor)
        if within_budget(measured, budget):
            return factor, candidate, records, passes, measured
        notes.append(f"strength x{factor:g}: {trials.evaluator.summary(measured)}: over the {budget:g}-point budget")
    raise AccuracyBudgetError(
        f"compression: {trials.evaluator.summary(measured)} exceeds --max-accuracy-drop {budget:g} even at "
        f"{BACKOFF[-1]:g}x the requested strength; lower --prune/--sparsity, raise --low-rank, or raise the budget")


def apply(model: ir.Model, source, profile, options, state: CompileState):
    """Run the requested compression passes under the accuracy guard; see the module docstring."""
    if not (options.prune or options.prune_rules or options.sparsity or options.low_rank or options.max_latency):
        return model, []
    from edgec.compiler.stages import prune_search

    rules = load_rules(options.prune_rules) if options.prune_rules else None
    io = edgec_ir.io_signature(model, source.layouts)
    samples, evaluator, measured_on, notes = _data(model, io, state)
    budget = state.budget
    trials = Trials(model, options, profile, state.progress, rules, samples, evaluator, _batch_size(io))
    search = None
    if options.prune == "auto" or options.max_latency:
        factor, (candidate, records, passes, measured), search = 1.0, *prune_search.search(trials, budget, io)
        notes.extend(search["notes"])
    else:
        factor, candidate, records, passes, measured = _guarded(trials, budget, notes)
    changed = any(r["modified"] for r in records)
    # outputs differ from the source by design: the emitted model is not held to the float tolerance; the guard
    # above bounds the loss instead
    state.lossy = changed
    if not changed:
        notes.append(f"nothing was compressed at strength x{factor:g} (groups too small or all kept)")
    state.float_model_bytes = len(trials.proto.SerializeToString())
    report = {"strength": factor, "parameters_before": _parameters(model), "parameters_after": _parameters(candidate),
              "size": _sizes(model, candidate), "notes": notes}
    for pass_ in passes:
        if getattr(pass_, "summary", None):
            report["pruning"] = pass_.summary
    for record in records:
        if "recovery" in record:
            report["recovery"] = record["recovery"]
    if search is not None:
        report["search"] = {k: v for k, v in search.items() if k != "notes"}
    report["accuracy"] = ({"summary": evaluator.summary(measured) + f"; budget {budget:g} points; measured on "
                           f"{measured_on}", "budget": budget, **measured} if measured
                          else {"summary": f"accuracy not measured: {measured_on}"})
    state.report["compression"] = report
    records.append(pass_record("compression-guard", {"max_accuracy_drop": budget},
                               [*notes, report["accuracy"]["summary"]], factor < 1))
    return candidate, records
