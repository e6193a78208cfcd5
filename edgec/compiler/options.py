"""Typed compile options: what the user asked for, validated once, before any work starts."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Optional, get_args

from edgec.compare import FLOAT_ATOL, FLOAT_RTOL
from edgec.errors import UsageError

__all__ = ["CompileOptions"]

Format = Literal["onnx", "tflite", "auto"]
Quantize = Literal["none", "fp16", "int8", "int4", "auto"]
CalibrationMethod = Literal["minmax", "entropy", "percentile", "mse"]
PruneSpread = Literal["channels", "parameters"]


@dataclass(frozen=True)
class CompileOptions:
    """Everything ``edgec compile`` takes besides the source and the output path.

    ``None`` means "the target profile decides" (format, quantization, calibration method, accuracy budget);
    ``format="auto"`` is the same as None: the profile's format, falling back to the device's other runtime when
    the conversion fails.
    """

    target: str = "host"
    format: Optional[Format] = None
    quantize: Optional[Quantize] = None
    input_shapes: dict = field(default_factory=dict)
    calibration: Optional[str] = None
    calibration_method: Optional[CalibrationMethod] = None
    preprocess: Optional[str] = None
    eval_data: Optional[str] = None
    max_accuracy_drop: Optional[float] = None
    # A fraction of filters, or "auto": the strongest pruning within the accuracy budget (or --max-latency).
    prune: Optional[float | Literal["auto"]] = None
    prune_rules: Optional[str] = None
    # How the global --prune ratio is spread over layers: by sensitivity per channel (None = "channels": faster
    # models at a given ratio) or per parameter a channel holds ("parameters": smaller models for the accuracy)
    prune_spread: Optional[PruneSpread] = None
    sparsity: Optional[float] = None
    low_rank: Optional[float] = None
    # Seconds of distillation after pruning (None = the default when calibration data are given; 0 = off);
    # ``recover_steps`` pins the step count (reproducible runs: the report records the count a budget gave).
    recover_time: Optional[float] = None
    recover_steps: Optional[int] = None
    # Estimated latency (ms, from the target profile) the pruned model must meet; pruning strength is searched.
    max_latency: Optional[float] = None
    # Quantization pass switches; None = the profile's quantization.equalize_layers / bias_correction.
    equalize: Optional[bool] = None
    bias_correction: Optional[bool] = None
    # A float stage matches the source when |a-b| <= atol + rtol * |ref| element by element (edgec.compare).
    rtol: float = FLOAT_RTOL
    atol: float = FLOAT_ATOL
    seed: int = 0
    force: bool = False
    # Compile even when the estimate says the model cannot fit the target's RAM or storage.
    ignore_limits: bool = False
    # Let the source file's own code run (Keras Lambda layers and custom objects, pickles in .pt2 archives,
    # side-effecting SavedModel ops): only for files from someone the user trusts.
    trust_source: bool = False

    def __post_init__(self):
        _choice("--format", self.format, Format)
        _choice("--quantize", self.quantize, Quantize)
        _choice("--calibration-method", self.calibration_method, CalibrationMethod)
        _choice("--prune-spread", self.prune_spread, PruneSpread)
        if self.prune == "auto" and self.prune_rules:
            raise UsageError("--prune auto searches one global ratio; it cannot be combined with --prune-rules")
        _pruning_checks(self)
        for flag, value in (("--prune", None if self.prune == "auto" else self.prune), ("--sparsity", self.sparsity)):
            if value is not None and not 0.0 <= value < 1.0:
                raise UsageError(f"{flag} {value}: must be a fraction in [0, 1), e.g. 0.3")
        if self.low_rank is not None and not 0.0 < self.low_rank <= 1.0:
            raise UsageError(f"--low-rank {self.low_rank}: retained energy must be in (0, 1], e.g. 0.95")
        if self.max_accuracy_drop is not None and not 0.0 <= self.max_accuracy_drop <= 100.0:
            raise UsageError(f"--max-accuracy-drop {self.max_accuracy_drop}: must be within 0..100 points")
        if not 0.0 <= self.rtol < 1.0:
            raise UsageError(f"--rtol {self.rtol}: must be in [0, 1), e.g. 1e-3")
        if not self.atol >= 0.0:
            raise UsageError(f"--atol {self.atol}: must be >= 0, e.g. 1e-4")
        if self.rtol == 0.0 and self.atol == 0.0:
            raise UsageError("--rtol 0 with --atol 0 allows no difference at all; give one of them > 0")


def _pruning_checks(options: CompileOptions) -> None:
    if options.recover_time is not None and not 0.0 <= options.recover_time <= 86400:
        raise UsageError(f"--recover-time {options.recover_time}: give seconds in [0, 86400], e.g. 300 (0 = off)")
    if options.recover_steps is not None and options.recover_steps < 1:
        raise UsageError(f"--recover-steps {options.recover_steps}: must be a positive step count")
    if options.max_latency is not None and not options.max_latency > 0:
        raise UsageError(f"--max-latency {options.max_latency}: must be a positive number of milliseconds")
    if options.prune == "auto" and not (options.calibration or options.eval_data):
        raise UsageError("--prune auto: the search judges each ratio by its accuracy; give --calibration DATA "
                         "(held-out samples are scored) or --eval-data")
    recovering = (options.recover_time or 0) > 0 or options.recover_steps is not None
    if recovering and not options.calibration:
        raise UsageError("--recover-time: recovery fits the pruned model to the float model on calibration "
                         "samples; give --calibration DATA (unlabelled samples are enough)")
    if recovering and not (options.prune or options.prune_rules or options.max_latency):
        raise UsageError("--recover-time: recovery follows pruning; give --prune R, --prune auto or --max-latency")
    if options.prune_spread and not (options.prune or options.max_latency):
        raise UsageError(f"--prune-spread {options.prune_spread}: it spreads the global pruning ratio over the layers; "
                         "give --prune R, --prune auto or --max-latency (a --prune-rules file sets each ratio itself)")


def _choice(flag: str, value, kind) -> None:
    if value is not None and value not in get_args(kind):
        raise UsageError(f"{flag} {value!r}: choose one of {', '.join(get_args(kind))}")
