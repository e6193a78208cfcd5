"""Adaptive rounding of int8 weights: each weight rounds up or down as the calibration data say, not to nearest.

Rounding every weight to its nearest grid point minimises the weight error, not the layer's output error. With
``S``, the covariance of a layer's input patches over the calibration data, the output error of rounding one output
channel's weights ``w`` to ``q`` is ``(w - q)^T S (w - q)``. Like AdaRound (Nagel et al. 2020), each weight may go
to the grid point below or above it (so the per-channel scale and the integer range stay those of nearest
rounding); the choice is made column by column, the rounding error of each column being compensated in the
columns not yet rounded through the inverse covariance (the sequential solver of GPTQ/OBQ, Frantar et al. 2022),
then snapped to the two neighbours. The mean part of the error is removed by bias correction (the corrected bias
is stored beside the rounded weights), so the covariance, not the raw second moment, is what the rounding fits.

Measured, kept or not per layer: the covariance is gathered from two halves of the calibration samples; the
rounding is fitted on one and its output error compared with nearest rounding on the other. A layer keeps
adaptive rounding only when that held-out error is lower (the report lists both figures per layer).

Deterministic: float64 sums over the samples in file order and a fixed column order; no random numbers.
Handles Conv (group 1, or depthwise) and Gemm (a bias is where the correction goes; MatMul has none); other
layers round to nearest.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from edgec.compiler.passes import const
from edgec.compiler.quantizers.common import batch_size, make_session, weighted_nodes, with_outputs

__all__ = ["AdaptiveRounding", "apply_rounding", "round_rows"]

DAMPING = 0.01  # of the mean diagonal, added to the covariance before inverting (GPTQ's default)
SAMPLES = 16  # calibration samples the covariances are gathered from (half fit, half check)
MAX_COLUMNS = 4096  # wider inputs round to nearest (the covariance would be too large)


def _grid(weight_rows: np.ndarray, per_channel: bool, qmax: int) -> np.ndarray:
    """Per-row symmetric scale of ``weight_rows`` (rows x columns), as onnxruntime computes it."""
    peak = np.abs(weight_rows).max(1) if per_channel else np.full(len(weight_rows), np.abs(weight_rows).max())
    return (2.0 * peak.astype(np.float32) / np.float32(2 * qmax)).astype(np.float64)


def round_rows(x: np.ndarray, cov: np.ndarray) -> np.ndarray:
    """Integer grid points for ``x`` (rows x columns, in grid units), each the floor or ceiling of its value, chosen
    sequentially to minimise ``sum_rows (x - q) cov (x - q)^T``. ``cov`` is (columns, columns), or (rows, columns,
    columns) for a separate covariance per row (depthwise layers)."""
    per_row = cov.ndim == 3
    k = x.shape[1]
    eye = np.eye(k)
    mean_diag = np.einsum("...ii->...i", cov).mean(-1)
    damped = cov + DAMPING * (mean_diag[..., None, None] if per_row else mean_diag) * eye + 1e-12 * eye
    upper = np.swapaxes(np.linalg.cholesky(np.linalg.inv(damped)), -1, -2)  # Hinv = U^T U, U upper
    low, exact = np.floor(x), np.abs(x - np.round(x)) < 1e-4
    work, q = x.copy(), np.empty_like(x)
    for j in range(k):
        target = work[:, j]
        choice = np.clip(np.round(target), low[:, j], low[:, j] + 1)
        choice = np.where(exact[:, j], np.round(x[:, j]), choice)  # grid points (the peak) stay where they are
        q[:, j] = choice
        diag = upper[:, j, j] if per_row else upper[j, j]
        error = (target - choice) / diag
        if j + 1 < k:
            row = upper[:, j, j + 1:] if per_row else upper[j, j + 1:][None, :]
            work[:, j + 1:] -= error[:, None] * row
    return q


def _patches(node: ir.Node, x: np.ndarray) -> np.ndarray | None:
    """The layer's input patches: (columns, positions), or (channels, taps, positions) for a depthwise Conv."""
    if node.op_type in ("Gemm", "MatMul"):
        return x.reshape(-1, x.shape[-1]).T if node.op_type == "MatMul" or not node.attributes.get_int(
            "transA", 0) else x.T
    weight = const(node.inputs[1])
    attrs = node.attributes
    if weight.ndim != 4 or any(d != 1 for d in attrs.get_ints("dilations", [1, 1])):
        return None
    pads = attrs.get_ints("pads", [0, 0, 0, 0])
    if attrs.get_string("auto_pad", "NOTSET") not in ("NOTSET", "VALID"):
        return None
    sh, sw = attrs.get_ints("strides", [1, 1])
    kh, kw = weight.shape[2:]
    padded = np.pad(x, ((0, 0), (0, 0), (pads[0], pads[2]), (pads[1], pads[3])))
    view = np.lib.stride_tricks.sliding_window_view(padded, (kh, kw), axis=(2, 3))[:, :, ::sh, ::sw]
    # view: (N, C, Ho, Wo, kh, kw)
    group = attrs.get_int("group", 1)
    channels = x.shape[1]
    if group == 1:
        return np.moveaxis(view, (1, 4, 5), (0, 1, 2)).reshape(channels * kh * kw, -1)
    if group == channels == weight.shape[0] and weight.shape[1] == 1:
        return np.moveaxis(view, (1, 4, 5), (0, 1, 2)).reshape(channels, kh * kw, -1)
    return None


class _Moments:
    """Running sums of patches and their outer products (float64)."""

    def __init__(self):
        self.total = self.outer = None
        self.count = 0

    def update(self, patches: np.ndarray) -> None:
        patches = patches.astype(np.float64)
        total = patches.sum(-1)
        outer = patches @ np.swapaxes(patches, -1, -2)
        self.total = total if self.total is None else self.total + total
        self.outer = outer if self.outer is None else self.outer + outer
        self.count += patches.shape[-1]

    def covariance(self) -> tuple[np.ndarray, np.ndarray]:
        mean = self.total / max(self.count, 1)
        return self.outer / max(self.count, 1) - mean[..., :, None] * mean[..., None, :], mean


def _layer_rows(node: ir.Node) -> tuple[np.ndarray, int]:
    """The weight as (output channels, columns) matching ``_patches``' column order, and its output axis."""
    weight = const(node.inputs[1]).astype(np.float64)
    if node.op_type == "Conv":
        return weight.reshape(weight.shape[0], -1), 0
    if node.op_type == "Gemm" and node.attributes.get_int("transB", 0):
        return weight, 0
    return weight.T, 1


def _error(delta: np.ndarray, cov: np.ndarray) -> float:
    """Output error power of weight errors ``delta`` (rows x columns) under ``cov``."""
    if cov.ndim == 3:
        return float(np.einsum("ri,rij,rj->", delta, cov, delta))
    return float(np.einsum("ri,ij,rj->", delta, cov, delta))


class AdaptiveRounding:
    """Adaptive rounding (and the matching bias correction) of every eligible weighted layer, computed once.

    Args:
        model: the float IR the int8 quantizer will quantize.
        samples: calibration samples (the first ``SAMPLES`` are used, alternately to fit and to check).
        per_channel, reduce_range: how the quantizer's symmetric int8 weights are scaled.
        names: the layers to consider (default: every weighted node).

    After construction, ``replacements`` maps node name -> (weight, bias) to substitute for the layers where the
    rounding was kept, and ``rows`` holds, per considered layer, the held-out output error of nearest and of
    adaptive rounding and whether it was kept.
    """

    def __init__(self, model: ir.Model, samples, per_channel: bool = True, reduce_range: bool = False,
                 names=None, limit: int = SAMPLES):
        self.qmax = 64 if reduce_range else 127  # onnxruntime's symmetric int8 weight range
        self.per_channel = per_channel
        nodes = [n for n in weighted_nodes(model) if names is None or n.name in set(names)]
        self.replacements: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self.rows: list[dict] = []
        moments = self._gather(model, nodes, samples, limit)
        for node in nodes:
            if node.name in moments:
                self._round(node, *moments[node.name])

    def _gather(self, model, nodes, samples, limit) -> dict[str, tuple[_Moments, _Moments]]:
        eligible = {}
        for node in nodes:
            rows, _ = _layer_rows(node)
            if rows.shape[1] <= MAX_COLUMNS and node.op_type in ("Conv", "Gemm") and node.inputs[0] is not None:
                eligible[node.name] = node
        names = sorted({n.inputs[0].name for n in eligible.values()})
        session = make_session(with_outputs(model, names))
        feeds = [i.name for i in session.get_inputs()]
        found = {name: (_Moments(), _Moments()) for name in eligible}
        for index, batch in enumerate(samples.batches(batch_size(model, 1), limit)):
            values = dict(zip(names, session.run(names, dict(zip(feeds, batch)))))
            for name, node in eligible.items():
                patches = _patches(node, values[node.inputs[0].name])
                if patches is None:
                    found.pop(name, None)
                    continue
                if name in found:
                    found[name][index % 2].update(patches)
        return {k: v for k, v in found.items() if v[0].count and v[1].count}

    def _round(self, node: ir.Node, fit: _Moments, check: _Moments) -> None:
        rows, axis = _layer_rows(node)
        scale = _grid(rows, self.per_channel, self.qmax)
        safe = np.where(scale > 0, scale, 1.0)[:, None]
        x = rows / safe
        cov_fit, _ = fit.covariance()
        cov_check, _ = check.covariance()
        nearest = np.clip(np.round(x), -self.qmax, self.qmax)
        adaptive = np.clip(round_rows(x, cov_fit), -self.qmax, self.qmax)
        before = _error((x - nearest) * safe, cov_check)
        after = _error((x - adaptive) * safe, cov_check)
        kept = after < before
        self.rows.append({"node": node.name, "nearest_error": before, "adaptive_error": after, "kept": bool(kept)})
        if not kept:
            return
        rounded = adaptive * safe
        mean = (fit.total + check.total) / (fit.count + check.count)
        shift = np.einsum("rc,rc->r", rounded - rows, mean) if mean.ndim == 2 else (rounded - rows) @ mean
        weight = const(node.inputs[1])
        bias = const(node.inputs[2]) if len(node.inputs) > 2 and node.inputs[2] is not None else None
        base = np.zeros(len(rows)) if bias is None else bias.astype(np.float64)
        new_weight = (rounded if axis == 0 else rounded.T).reshape(weight.shape).astype(weight.dtype)
        self.replacements[node.name] = (new_weight, (base - shift).astype(weight.dtype))

    def summary(self) -> str:
        kept = [r for r in self.rows if r["kept"]]
        before = sum(r["nearest_error"] for r in self.rows)
        after = sum(r["adaptive_error"] if r["kept"] else r["nearest_error"] for r in self.rows)
        return (f"adaptive rounding kept on {len(kept)} of {len(self.rows)} layers (held-out output error "
                f"{after / max(before, 1e-30):.2f}x of nearest rounding, summed over layers)")


def apply_rounding(model: ir.Model, replacements: dict, skip=()) -> int:
    """Give the layers in ``replacements`` (and not in ``skip``) their rounded weights and corrected biases."""
    from edgec.compiler.quantizers.common import replace_const

    done = 0
    for node in weighted_nodes(model):
        if node.name in replacements and node.name not in set(skip):
            weight, bias = replacements[node.name]
            replace_const(model.graph, node, 1, weight, "ar_weight")
            replace_const(model.graph, node, 2, bias, "ar_bias")
            done += 1
    return done
