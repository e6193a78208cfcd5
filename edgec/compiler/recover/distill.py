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
LEARNING_RATE = 5e-4  # Adam; on a tiny pruned net 1e-4 barely moved it in 400 steps, 1e-3 gained most
FEATURE_SHARE = 0.4  # of the steps: the feature stage; the rest is end-to-end
WRITE_BACK_RTOL = 1e-3
TIMED_STEPS = 2
MAX_EPOCHS = 40  # a small net on few samples needs no more, whatever the budget
# Below this many weights one thread: a second one spends more on synchronisation than it saves (a tiny MobileNet
# step took 2.6 s with two threads on a busy 2-core machine, 0.1 s with one).
SMALL_MODEL = 1_000_000


@dataclass
class RecoveryResult:
    """What recovery did: per-stage scores (``stages``), steps run, notes; ``applied`` when weights changed."""

    stages: list = field(default_factory=list)
    steps: int = 0
    planned_steps: int = 0
    seconds: float = 0.0
    applied: bool = False
    kept_stage: str = ""
    notes: list = field(default_factory=list)

    def as_report(self) -> dict:
        return {"stages": self.stages, "steps": self.steps, "planned_steps": self.planned_steps,
                "applied": self.applied, "kept_stage": self.kept_stage, "notes": self.notes}  # no wall time: a manifest is reproducible


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
    def __init__(self, teacher, student, data: list[np.ndarray], points, seed: int, lr: float):
        import torch

        self.torch, self.teacher, self.student, self.data = torch, teacher, student, data
        self.generator = torch.Generator().manual_seed(seed)
        self.points = points
        self.optimizer = torch.optim.Adam(student.parameters(), lr=lr)
        self.lr = lr
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


def _held_out_error(student, teacher, held: list[np.ndarray]) -> float:
    """Relative L2 distance of the student's outputs from the float model's on samples it never trained on."""
    torch = student.torch
    inputs = [torch.from_numpy(x) for x in held]
    with torch.no_grad():
        want, got = teacher.run(inputs)[0], student.run(inputs)[0]
    num = sum(float(((g - w).double() ** 2).sum()) for g, w in zip(got, want))
    den = sum(float((w.double() ** 2).sum()) for w in want)
    return float(np.sqrt(num / den)) if den > 0 else float(np.sqrt(num))


def recover(original: ir.Model, pruned: ir.Model, batches: list, kept_inputs: dict, seconds: float, seed: int = 0,
            steps: int | None = None, measure: Callable | None = None, progress=None,
            lr: float = LEARNING_RATE) -> RecoveryResult:
    """Fit ``pruned`` in place to ``original`` on ``batches`` within ``seconds``; see the module docstring.

    An eighth of the samples (16 or more) is held out: the stage whose outputs are closest to the float model's
    there is kept, so recovery never leaves the model further from float on unseen samples than it found it.
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

    threads = torch.get_num_threads()
    if sum(p.numel() for p in student.parameters()) < SMALL_MODEL:
        torch.set_num_threads(1)
    try:
        return _recover(teacher, student, pruned, batches, kept_inputs, seconds, seed, steps, measure, progress, lr,
                        result)
    finally:
        torch.set_num_threads(threads)


def _recover(teacher, student, pruned, batches, kept_inputs, seconds, seed, steps, measure, progress, lr, result):
    import torch

    data = _stack(batches)
    count = len(data[0])
    cut = count - (count // 8 if count >= 16 else 0)
    held = [x[cut:] for x in data] if cut < count else [x[: min(count, 8)] for x in data]
    torch.manual_seed(seed)
    trainer = _Trainer(teacher, student, [x[:cut] for x in data], feature_points(student, teacher, kept_inputs),
                       seed, lr)
    snapshots = []

    def checkpoint(stage: str) -> None:
        weights = student.weights()
        snapshots.append((_held_out_error(student, teacher, held), stage, weights))
        entry = {"stage": stage, "held_out_rel_error": round(snapshots[-1][0], 6)}
        if measure is not None:
            copy = edgec_ir.from_proto(edgec_ir.to_proto(pruned))
            _write_back(copy, weights)
            entry.update(measure(copy))
        result.stages.append(entry)

    checkpoint("pruned + least squares")
    cap = max(TIMED_STEPS, MAX_EPOCHS * cut // BATCH)
    _train(trainer, result, seconds, steps, cap, progress, checkpoint)
    checkpoint("end-to-end distillation")
    error, stage, weights = min(snapshots, key=lambda snap: snap[0])
    for name, value in weights.items():
        student.params[name].data = torch.from_numpy(value)
    _write_back(pruned, weights)
    diff = _check_written(student, pruned, [x[:2] for x in data])
    if diff > WRITE_BACK_RTOL:
        raise RuntimeError(f"recovered weights written back to ONNX differ from the torch model by {diff:.2e}")
    result.applied, result.kept_stage = stage != snapshots[0][1], stage
    result.notes.append(f"{result.steps} distillation steps of {BATCH} samples on {cut} calibration samples "
                        f"({len(trainer.points)} feature points); kept the weights after {stage} (relative output "
                        f"error {error:.4f} on {len(held[0])} held-out samples, {snapshots[0][0]:.4f} before); "
                        f"written back to ONNX (max relative difference to torch {diff:.1e})")
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
        lr = trainer.lr * (1.0 if planned is None else 0.5 * (1 + math.cos(math.pi * done / planned)))
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
