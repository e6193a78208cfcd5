"""Recovery by distillation on unlabelled calibration samples, within a time budget.

After pruning (and its least-squares refit) the pruned model's layer weights are fitted so that its intermediate
features and its outputs match the float model's on the calibration samples, in torch (``_torch_graph``), then
written back into the ONNX graph by initializer name. Two stages, each reported with its gain:

1. **feature matching**: the input of every dense layer (Conv with group=1, Gemm, MatMul) is pulled towards the
   float model's on the kept channels (MSE normalised per feature); every layer learns from its own target, as in
   block-wise reconstruction, but all at once.
2. **end-to-end**: KL divergence of the outputs (softmax for a classifier, else MSE) plus the feature term.

Deterministic for a seed and a step count: the budget is turned into a step count after timing the first steps
(recorded in the report; ``steps=`` pins it). Inputs are augmented by horizontal flips of image-like tensors.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import onnx_ir as ir

from edgec import ir as edgec_ir

__all__ = ["RecoveryResult", "feature_points", "recover"]

BATCH = 8
LEARNING_RATE = 1e-4
FEATURE_SHARE = 0.4  # of the steps: the feature stage; the rest is end-to-end
WRITE_BACK_RTOL = 1e-3
TIMED_STEPS = 2
MAX_EPOCHS = 40  # a small net on few samples needs no more, whatever the budget


@dataclass
class RecoveryResult:
    """What recovery did: per-stage scores (``stages``), steps run, notes; ``applied`` when weights changed."""

    stages: list = field(default_factory=list)
    steps: int = 0
    planned_steps: int = 0
    seconds: float = 0.0
    applied: bool = False
    notes: list = field(default_factory=list)

    def as_report(self) -> dict:
        return {"stages": self.stages, "steps": self.steps, "planned_steps": self.planned_steps,
                "applied": self.applied, "notes": self.notes}  # no wall time: a manifest is reproducible


def feature_points(student, teacher, kept_inputs: dict) -> list[tuple[str, object]]:
    """(value name, kept channel indices or None) for the input of every dense layer both graphs share."""
    points: dict = {}  # a value read by several layers counts once
    produced = {out for n in teacher.nodes for out in n.output}
    for index, node in enumerate(student.nodes):
        if node.op_type not in ("Conv", "Gemm", "MatMul") or node.input[0] in student.inputs:
            continue
        if node.op_type == "Conv" and student.attrs[index].get("group", 1) != 1:
            continue
        if node.input[0] in produced:
            points[node.input[0]] = kept_inputs.get(node.input[0])
    return list(points.items())


def _stack(batches: list) -> list[np.ndarray]:
    return [np.concatenate([batch[k] for batch in batches]) for k in range(len(batches[0]))]


class _Trainer:
    def __init__(self, teacher, student, data: list[np.ndarray], points, seed: int):
        import torch

        self.torch, self.teacher, self.student, self.data = torch, teacher, student, data
        self.generator = torch.Generator().manual_seed(seed)
        self.points = points
        self.optimizer = torch.optim.Adam(student.parameters(), lr=LEARNING_RATE)
        self.count = len(data[0])

    def _batch(self) -> list:
        torch = self.torch
        index = torch.randperm(self.count, generator=self.generator)[:BATCH]
        inputs = [torch.from_numpy(array[index.numpy()]) for array in self.data]
        flips = torch.rand(len(index), generator=self.generator) < 0.5
        return [torch.where(flips.view(-1, *[1] * (x.dim() - 1)), x.flip(-1), x)
                if x.dim() == 4 and x.is_floating_point() else x for x in inputs]

    def _features(self, teacher_feats: dict, student_feats: dict):
        terms = []
        for name, kept in self.points:
            target = teacher_feats[name]
            if kept is not None:
                target = target.index_select(1, self.torch.as_tensor(kept))
            got = student_feats[name]
            if got.shape != target.shape:
                continue
            terms.append(((got - target) ** 2).mean() / (target.pow(2).mean() + 1e-8))
        return sum(terms) / len(terms) if terms else self.torch.zeros(())

    def _outputs(self, teacher_out: list, student_out: list):
        torch = self.torch
        loss = torch.zeros(())
        for want, got in zip(teacher_out, student_out):
            if want.dim() == 2 and want.shape[1] >= 2:
                loss = loss + torch.nn.functional.kl_div(torch.log_softmax(got, 1), torch.log_softmax(want, 1),
                                                         reduction="batchmean", log_target=True)
            else:
                loss = loss + ((got - want) ** 2).mean() / (want.pow(2).mean() + 1e-8)
        return loss

    def step(self, end_to_end: bool, lr: float) -> float:
        torch = self.torch
        inputs = self._batch()
        names = tuple(name for name, _ in self.points)
        with torch.no_grad():
            teacher_out, teacher_feats = self.teacher.run(inputs, names)
        student_out, student_feats = self.student.run(inputs, names)
        loss = self._features(teacher_feats, student_feats)
        if end_to_end:
            loss = loss + self._outputs(teacher_out, student_out)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        return float(loss.detach())


def _write_back(model: ir.Model, weights: dict[str, np.ndarray]) -> None:
    for name, array in weights.items():
        value = model.graph.initializers[name]
        value.const_value = ir.tensor(array.astype(value.const_value.numpy().dtype), name=name)


def _check_written(student, model: ir.Model, sample: list[np.ndarray]) -> float:
    """Relative difference between the torch student and onnxruntime running the written-back graph."""
    from edgec.compiler.frontends.onnx import ort_runner

    torch = student.torch
    with torch.no_grad():
        want = [t.numpy() for t in student.run([torch.from_numpy(x) for x in sample])[0]]
    got = ort_runner(edgec_ir.to_proto(model).SerializeToString(), "recovered model")(sample)
    return max(float(np.max(np.abs(w - g)) / (np.max(np.abs(w)) or 1.0)) for w, g in zip(want, got))


def recover(original: ir.Model, pruned: ir.Model, batches: list, kept_inputs: dict, seconds: float, seed: int = 0,
            steps: int | None = None, measure: Callable | None = None, progress=None) -> RecoveryResult:
    """Fit ``pruned`` in place to ``original`` on ``batches`` within ``seconds``; see the module docstring.

    ``measure(model) -> dict`` scores a model (the stage's accuracy evaluator); ``progress(line)`` reports.
    """
    from edgec.compiler.recover._torch_graph import TorchGraph, UnsupportedGraph

    result = RecoveryResult()
    try:
        teacher = TorchGraph(edgec_ir.to_proto(original), trainable=False)
        student = TorchGraph(edgec_ir.to_proto(pruned))
    except UnsupportedGraph as exc:
        result.notes.append(f"recovery skipped: the graph holds {exc}")
        return result
    import torch

    data = _stack(batches)
    torch.manual_seed(seed)
    trainer = _Trainer(teacher, student, data, feature_points(student, teacher, kept_inputs), seed)
    if measure is not None:
        result.stages.append({"stage": "pruned + least squares", **measure(pruned)})
    def checkpoint(stage: str) -> None:
        if measure is not None:
            copy = edgec_ir.from_proto(edgec_ir.to_proto(pruned))
            _write_back(copy, student.weights())
            result.stages.append({"stage": stage, **measure(copy)})

    cap = max(TIMED_STEPS, MAX_EPOCHS * len(data[0]) // BATCH)
    _train(trainer, result, seconds, steps, cap, progress, checkpoint)
    weights = student.weights()
    _write_back(pruned, weights)
    diff = _check_written(student, pruned, [x[:2] for x in data])
    if diff > WRITE_BACK_RTOL:
        raise RuntimeError(f"recovered weights written back to ONNX differ from the torch model by {diff:.2e}")
    result.applied = True
    result.notes.append(f"{result.steps} distillation steps of {BATCH} samples on {len(data[0])} calibration "
                        f"samples ({len(trainer.points)} feature points); written back "
                        f"to ONNX (max relative difference to torch {diff:.1e})")
    if measure is not None:
        result.stages.append({"stage": "end-to-end distillation", **measure(pruned)})
    return result


def _train(trainer: _Trainer, result: RecoveryResult, seconds: float, steps: int | None, cap: int, progress,
           checkpoint: Callable) -> None:
    start = time.perf_counter()
    planned = steps
    done, loss, switched = 0, 0.0, False
    while planned is None or done < planned:
        feature_stage = planned is None or done < FEATURE_SHARE * planned
        if not feature_stage and not switched:
            switched, paused = True, time.perf_counter()
            checkpoint("feature matching")
            start += time.perf_counter() - paused  # scoring is not training time
        lr = LEARNING_RATE if planned is None else LEARNING_RATE * 0.5 * (1 + math.cos(math.pi * done / planned))
        loss = trainer.step(not feature_stage, lr)
        done += 1
        elapsed = time.perf_counter() - start
        if planned is None and done >= TIMED_STEPS:
            planned = max(done, min(cap, int(seconds / (elapsed / done))))
        if steps is None and elapsed >= seconds:
            if done < planned:
                result.notes.append(f"stopped at step {done} of {planned}: the time budget ran out")
            break
        if progress is not None and (done % 25 == 0 or done == planned):
            progress(f"recovery step {done}/{planned}, loss {loss:.4f}, {elapsed:.0f} s")
    result.steps, result.planned_steps, result.seconds = done, planned or done, time.perf_counter() - start
