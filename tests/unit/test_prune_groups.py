"""Channel dependency groups and the graph edits of filter pruning, on small graphs built with onnx.helper."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgec.compiler.passes.factorize_linear import FactorizeLinear, rank_for_energy
from edgec.compiler.passes.prune_filters import PruneFilters, keep_count
from edgec.compiler.passes.sparsify_weights import SparsifyWeights
from edgec.compiler.pruning.channel_groups import analyse_groups
from edgec.compiler.stages.compress import load_rules
from edgec.errors import UsageError

pytestmark = pytest.mark.unit

RNG = np.random.default_rng(0)


def _w(name, *shape):
    return numpy_helper.from_array(RNG.standard_normal(shape).astype(np.float32), name)


def _model(nodes, inits, out_shape, in_shape=("N", 4, 8, 8)):
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(in_shape))],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(out_shape))], inits)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    proto.ir_version = 8
    model = ir.from_proto(proto)
    from onnx_ir.passes.common import ShapeInferencePass

    return ShapeInferencePass()(model).model


def _run(model, x):
    proto = ir.to_proto(model)
    onnx.checker.check_model(proto, full_check=True)
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


def _conv(name, x, w, out, group=1, pads=(1, 1, 1, 1)):
    return helper.make_node("Conv", [x, w, w + "_b"], [out], name=name, pads=list(pads), group=group)


def _inits(*specs):
    out = []
    for name, shape in specs:
        out += [_w(name, *shape), _w(name + "_b", shape[0])]
    return out


def residual_concat_flatten():
    """conv a -> relu -> (conv b + a) -> depthwise -> concat(with conv c) -> flatten -> gemm."""
    nodes = [
        _conv("a", "x", "wa", "a"), helper.make_node("Relu", ["a"], ["ar"], name="ra"),
        _conv("b", "ar", "wb", "b"), helper.make_node("Add", ["b", "ar"], ["s"], name="add"),
        _conv("dw", "s", "wdw", "d", group=8), _conv("c", "x", "wc", "c"),
        helper.make_node("Concat", ["d", "c"], ["cat"], name="cat", axis=1),
        helper.make_node("MaxPool", ["cat"], ["p"], name="pool", kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Flatten", ["p"], ["f"], name="flat", axis=1),
        helper.make_node("Gemm", ["f", "wg", "wg_b"], ["y"], name="fc", transB=1),
    ]
    inits = _inits(("wa", (8, 4, 3, 3)), ("wb", (8, 8, 3, 3)), ("wdw", (8, 1, 3, 3)), ("wc", (8, 4, 3, 3)),
                   ("wg", (5, 16 * 16)))
    return _model(nodes, inits, ("N", 5))


def test_groups_residual_depthwise_concat_flatten():
    analysis = analyse_groups(residual_concat_flatten().graph)
    by_name = {g.name: g for g in analysis.groups}
    residual = by_name["a"]
    assert sorted(p.name for p in residual.producers) == ["a", "b"]  # the Add ties a and b
    assert not residual.blocked and not by_name["c"].blocked
    assert by_name["fc"].blocked == ["graph output 'y' must keep its channels"]
    kinds = sorted((e.kind, e.node.name) for e in residual.edits)
    assert ("depthwise", "dw") in kinds and ("in", "fc") in kinds and ("in", "b") in kinds
    flat_edit = next(e for e in residual.edits if e.node.name == "fc")
    assert flat_edit.spatial == 16 and len(flat_edit.segments) == 2  # concat of two groups, 4x4 per channel


def test_prune_keeps_graph_valid_and_exact_when_channels_are_dead():
    model = residual_concat_flatten()
    x = RNG.standard_normal((3, 4, 8, 8)).astype(np.float32)
    # Make three residual channels and two of c dead (zero filters, zero bias): pruning them changes nothing.
    for name, dead in (("wa", [1, 4, 6]), ("wb", [1, 4, 6]), ("wdw", [1, 4, 6]), ("wc", [0, 5])):
        for suffix in ("", "_b"):
            value = model.graph.initializers[name + suffix]
            array = value.const_value.numpy().copy()
            array[dead] = 0
            value.const_value = ir.tensor(array, name=name + suffix)
    want = _run(model, x)
    pruning = PruneFilters(0.0, rules=[("a", 0.375), ("c", 0.25)], reconstruct=False)
    pruning(model)
    got = _run(model, x)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    weights = {n.name: n.inputs[1].const_value.shape for n in model.graph if n.op_type in ("Conv", "Gemm")}
    assert weights["a"][0] == weights["b"][0] == weights["b"][1] == 5 and weights["dw"][0] == 5
    assert weights["c"][0] == 6 and weights["fc"][1] == (5 + 6) * 16
    dw = next(n for n in model.graph if n.name == "dw")
    assert dw.attributes.get_int("group") == 5


def test_dynamic_batch_survives_pruning():
    model = residual_concat_flatten()
    PruneFilters(0.5, reconstruct=False, sensitivity=False)(model)
    for batch in (1, 7):
        assert _run(model, RNG.standard_normal((batch, 4, 8, 8)).astype(np.float32)).shape == (batch, 5)


@pytest.mark.parametrize(("op", "reason"), [("LRN", "LRN 'mix' is not channel-wise"),
                                            ("grouped", "Conv 'mix' is grouped (group=2)")])
def test_unsafe_consumers_block_their_group(op, reason):
    mix = (helper.make_node("LRN", ["a"], ["m"], name="mix", size=3) if op == "LRN"
           else _conv("mix", "a", "wm", "m", group=2))
    nodes = [_conv("a", "x", "wa", "a"), mix, helper.make_node("GlobalAveragePool", ["m"], ["y"], name="gap")]
    model = _model(nodes, _inits(("wa", (8, 4, 3, 3)), ("wm", (8, 4, 3, 3))), ("N", 8, 1, 1))
    group = next(g for g in analyse_groups(model.graph).groups if g.name == "a")
    assert reason in group.blocked
    pruning = PruneFilters(0.5, reconstruct=False, sensitivity=False)
    assert not pruning(model).modified
    assert any(reason in note for note in pruning.notes)


def test_keep_count_rounds_to_simd_width_and_never_empties():
    assert keep_count(64, 0.3, 8) == 48 and keep_count(64, 0.3, 1) == 45
    assert keep_count(32, 0.3, 16) == 24 and keep_count(3, 0.99, 4) == 1


def test_rules_file(tmp_path):
    path = tmp_path / "rules.toml"
    path.write_text('default = 0.1\n[[rule]]\nmatch = "conv*"\nratio = 0.5\n')
    assert load_rules(str(path)) == (0.1, [("conv*", 0.5)])
    path.write_text('[[rule]]\nmatch = "conv*"\nratio = 1.5\n')
    with pytest.raises(UsageError, match=r"rules.toml: rule 1 ratio = 1.5"):
        load_rules(str(path))
    path.write_text('layers = 1\n')
    with pytest.raises(UsageError, match="unknown key 'layers'"):
        load_rules(str(path))


def _mlp():
    w1 = RNG.standard_normal((96, 128)).astype(np.float32)
    low = (RNG.standard_normal((128, 8)) @ RNG.standard_normal((8, 80))).astype(np.float32)  # rank 8
    nodes = [helper.make_node("Gemm", ["x", "w1", "b1"], ["h"], name="fc1", transB=1),
             helper.make_node("Relu", ["h"], ["hr"], name="relu"),
             helper.make_node("MatMul", ["hr", "w2"], ["y"], name="fc2")]
    inits = [numpy_helper.from_array(w1, "w1"), _w("b1", 96), numpy_helper.from_array(low[:96], "w2")]
    return _model(nodes, inits, ("N", 80), ("N", 128))


def test_low_rank_keeps_outputs_for_an_exactly_low_rank_weight():
    model = _mlp()
    x = RNG.standard_normal((4, 128)).astype(np.float32)
    want = _run(model, x)
    factor = FactorizeLinear(0.999999)
    assert factor(model).modified
    assert any("fc2: 96x80 -> rank 8" in n for n in factor.notes)
    assert any("fc1: kept" in n for n in factor.notes)  # a full-rank weight saves nothing
    np.testing.assert_allclose(_run(model, x), want, rtol=1e-3, atol=1e-3 * np.abs(want).max())
    assert rank_for_energy(np.array([3.0, 1.0, 0.0]), 0.9) == 1


def test_sparsity_zeroes_the_smallest_weights_per_tensor():
    model = _mlp()
    x = RNG.standard_normal((2, 128)).astype(np.float32)
    SparsifyWeights(0.6)(model)
    assert _run(model, x).shape == (2, 80)
    for node in (n for n in model.graph if n.op_type in ("Gemm", "MatMul")):
        weight = node.inputs[1].const_value.numpy()
        assert abs(float(np.mean(weight == 0)) - 0.6) < 0.01


def test_compress_stage_returns_at_once_when_nothing_is_requested():
    from edgec.compiler.options import CompileOptions
    from edgec.compiler.stages.compress import apply, channel_multiple
    from edgec.targets import load_profile

    model = _mlp()
    assert apply(model, None, load_profile("rpi4"), CompileOptions(), {}) == (model, [])
    assert channel_multiple(load_profile("rpi4")) == 4 and channel_multiple(load_profile("x86-avx2")) == 8


def test_removal_cost_reads_concat_and_flatten_layouts():
    from edgec.compiler.passes.prune_filters import filter_importance, prunable_groups, removal_cost

    model = residual_concat_flatten()
    ir.passes.common.ShapeInferencePass()(model)
    x = RNG.standard_normal((6, 4, 8, 8)).astype(np.float32)
    analysis = analyse_groups(model.graph)
    groups = prunable_groups(analysis)
    costs = removal_cost(model, analysis, groups, [[x]])
    for group in groups:
        assert costs[group.gid].shape == (group.size,) and np.all(costs[group.gid] >= 0)
    # the residual group's consumers read it directly, through the depthwise conv and through the flattened concat:
    # its cost weighs activations, so it is not the L1 ranking
    residual = next(g for g in groups if any(p.name == "a" for p in g.producers))
    assert not np.allclose(costs[residual.gid] / costs[residual.gid].mean(),
                           filter_importance(residual) / filter_importance(residual).mean())
    want = _run(model, x)
    PruneFilters(0.5, batches=[[x]], reconstruct=False, sensitivity=False)(model)
    assert _run(model, x).shape == want.shape
