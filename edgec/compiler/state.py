"""What one compile's stages and emitter share, built once by the pipeline: ``CompileState``; and the one pass
record type and pass runner every stage uses (``PassRecord``, ``pass_record``, ``run_passes``).

The state replaces a free-form ``context`` dict: each field is written by one place (see its comment) and read by
the later stages, the emitter and the manifest; a misspelt field is an AttributeError (a dataclass with slots),
never a silently new key.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, TypedDict

import onnx_ir as ir

from edgec.compiler.options import CompileOptions
from edgec.targets import TargetProfile

__all__ = ["CompileState", "PassRecord", "pass_record", "run_passes"]


class PassRecord(TypedDict, total=False):
    """One entry of the manifest's ``passes``: what ran, with which settings, whether it changed the model, and
    why (``notes``); node counts for IR passes, ``recovery`` for distillation."""

    name: str
    settings: dict
    modified: bool
    notes: list[str]
    nodes_before: int
    nodes_after: int
    recovery: dict


def pass_record(name: str, settings: dict, notes: list[str], modified: bool = True, **extra) -> PassRecord:
    """A ``PassRecord`` for a step that is not an IR pass (a stage's decision, the emitter, a guard)."""
    return PassRecord(name=name, settings=settings, modified=modified, notes=list(notes), **extra)


def run_passes(model: ir.Model, passes: list) -> tuple[ir.Model, list[PassRecord]]:
    """Run edgec passes in order; (the model, one record per pass with its node counts and notes)."""
    records = []
    for pass_ in passes:
        nodes_before = model.graph.num_nodes()
        result = pass_(model)
        model = result.model
        records.append(pass_record(pass_.name, pass_.settings(), pass_.notes, bool(result.modified),
                                   nodes_before=nodes_before, nodes_after=model.graph.num_nodes()))
    return model, records


@dataclass(slots=True)
class CompileState:
    """One compile's shared state (``edgec.compiler.pipeline.compile_into`` builds it once)."""

    options: CompileOptions
    profile: TargetProfile
    format: str  # the chosen emitter's format; the pipeline changes it only when falling back
    io: dict  # the source model's io signature (the inputs every stage's model keeps)
    progress: Any = None
    report: dict = field(default_factory=dict)  # the compile report: each stage writes its own key
    calibration: Any = None  # --calibration as a CalibrationSet, loaded once (None without it)
    source_quantized: str | None = None  # what marks the source as already quantized (compiled as it is)
    input_sets: list = field(default_factory=list)  # verification input sets; the first is the bundle's reference
    float_model: ir.Model | None = None  # after the float passes: what accuracy is measured against
    precision: str | None = None  # written by the quantize stage (none, fp16, int8, int4), read by the emitter
    quantized: bool = False  # the model that ships runs quantized kernels
    lossy: bool = False  # a stage changed outputs by design (compression): not held to the float tolerance
    float_model_bytes: int | None = None  # the uncompressed float model's size, for the report
    compress_model: bool = False  # store the model deflated (--sparsity)
    _eval_set: Any = field(default=None, repr=False)

    @property
    def budget(self) -> float:
        """The accuracy budget in points: ``--max-accuracy-drop``, else the profile's."""
        if self.options.max_accuracy_drop is not None:
            return self.options.max_accuracy_drop
        return self.profile.quantization.max_accuracy_drop

    def eval_set(self):
        """``--eval-data`` with its labels, loaded on first use and once (None without it)."""
        if self._eval_set is None and self.options.eval_data:
            from edgec.compiler.calibration import load_samples

            self._eval_set = load_samples(self.options.eval_data, self.io["inputs"], need_labels=True,
                                          preprocess=self.options.preprocess)
        return self._eval_set

    def snapshot(self) -> CompileState:
        """A copy to restart the stages from (the format fallback): the report is copied one level deep."""
        return dataclasses.replace(self, report=dict(self.report))
