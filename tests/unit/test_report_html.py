"""Report building blocks without models: generic rendering of unknown keys, escaping, variant parsing, the
checks that a variant got what it asked for, and atomic writing."""

import pytest

from edgec.api._sweep import check_applied, parse_variants
from edgec.errors import CompileError, InputError, UsageError
from edgec.report import write_report
from edgec.report.data import describe_precision
from edgec.report.html import generic, ms, page

pytestmark = pytest.mark.unit


def test_unknown_report_sections_render_as_tables_and_lists():
    section = {"summary": "2 layers kept in float",
               "nodes": [{"node": "conv1", "precision": "int8", "reason": "within budget"},
                         {"node": "head", "precision": "fp32", "reason": "sensitivity 3.1 points"}],
               "by_layer": {"conv1": {"bytes": 1024, "ratio": 0.25}, "head": {"bytes": 4096, "ratio": 1.0}},
               "deep": {"a": {"b": [1, 2, {"c": "d"}]}}}
    out = generic(section)
    for text in ("<th>node</th>", "<td>conv1</td>", "sensitivity 3.1 points", "<th>ratio</th>", "<td>0.25</td>",
                 "<td>head</td>", "2 layers kept in float", "<dt>c</dt>"):
        assert text in out, text


def test_text_from_manifests_is_escaped():
    out = generic({"note": "<script>alert(1)</script>", "rows": [{"name": "a&b"}]})
    assert "<script>" not in out and "&lt;script&gt;" in out and "a&amp;b" in out
    html = page("t <x>", "sub", [("s", "Sec", "<p>body</p>")])
    assert "<title>t &lt;x&gt;</title>" in html and "<script" not in html and "http" not in html


def test_latencies_keep_four_significant_digits():
    assert ms(0.0033251) == "0.003325" and ms(44.1234) == "44.12" and ms(None) == "-"


def test_variants_parse_into_compile_options():
    fp32, int8, pruned, tfl = parse_variants("fp32, int8,prune30+int8,int8+tflite")
    assert fp32.options == {"quantize": "none"} and int8.options == {"quantize": "int8"}
    assert pruned.options == {"quantize": "int8", "prune": 0.3} and pruned.label == "prune30+int8"
    assert tfl.options == {"quantize": "int8", "format": "tflite"}
    assert parse_variants("sparse50")[0].options == {"quantize": "none", "sparsity": 0.5}


@pytest.mark.parametrize("spec, match", [("fp32,int9", "unknown part 'int9'"), ("int8,int8", "appears twice"),
                                         (",", "no variant given"), ("prune300", "unknown part")])
def test_bad_variant_lists_say_what_is_wrong(spec, match):
    with pytest.raises(UsageError, match=match):
        parse_variants(spec)


def manifest(precision=None, passes=(), rtol=1e-3):
    report = {"quantization": {"precision": precision, "reason": "no calibration data: kept float"}} if precision \
        else {}
    return {"report": report, "passes": list(passes), "reference": {"rtol": rtol}}


def test_precision_is_read_from_the_report_then_from_the_tolerance():
    assert describe_precision(manifest("int8")) == "int8"
    assert describe_precision(manifest("none")) == "fp32"
    assert describe_precision({"report": {"tflite": {"variant": "fp16"}, "quantization": {"precision": "int8"}}}) \
        == "fp16"
    assert describe_precision(manifest(rtol=5e-2)) == "quantized"
    assert describe_precision(manifest("int8", [{"name": "prune-filters", "modified": True}])) == "int8+pruned"


def test_a_variant_whose_capability_is_missing_fails_with_the_reason():
    int8, pruned = parse_variants("int8,prune30")
    check_applied(int8, manifest("int8"))
    with pytest.raises(CompileError, match=r"asked for int8 but the bundle is fp32 \(no calibration data"):
        check_applied(int8, manifest("none"))
    with pytest.raises(CompileError, match=r"asked for prune 0\.3 but no pass changed"):
        check_applied(pruned, manifest("none", [{"name": "prune-filters", "modified": False}]))
    check_applied(pruned, manifest("none", [{"name": "prune-filters", "modified": True}]))


def test_reports_are_written_whole_or_not_at_all(tmp_path):
    path = write_report(tmp_path / "sub" / "r.html", "<html></html>")
    assert path.read_text() == "<html></html>" and not list(path.parent.glob(".*tmp*"))
    (tmp_path / "dir.html").mkdir()
    with pytest.raises(InputError, match=r"dir\.html: cannot write the report"):
        write_report(tmp_path / "dir.html", "x")
    assert not list(tmp_path.glob(".dir.html.tmp*"))


def test_accuracy_is_the_sweep_measurement_else_the_compile_guards_score():
    from edgec.report.data import BundleInfo, accuracy_of

    def info(manifest, metrics=None):
        return BundleInfo(bundle_id="b", name="m", label="m", format="onnx", target="host", precision="int8",
                          model_bytes=1, source="m|", manifest=manifest, metrics=metrics or {})

    guard = {"report": {"accuracy": {"metric": "top-1 accuracy", "score": 97.5, "float_score": 98.0, "drop": 0.5}}}
    assert accuracy_of(info(guard)) == (97.5, "top-1 accuracy")
    assert accuracy_of(info(guard, {"accuracy": 91.0, "accuracy_metric": "agreement"})) == (91.0, "agreement")
    assert accuracy_of(info({"report": {"accuracy": {"summary": "accuracy not measured", "measured": False}}})) \
        == (None, "")
