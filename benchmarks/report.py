"""How well the report's regression statistic separates real slow-downs from run-to-run noise, in the same run.

One small model is compiled and benchmarked ``REPEATS`` times back to back with the local agent (real runs, real
noise of this machine). Every consecutive pair of runs is then judged three ways:

* ``edgec``: the report's statistic (bootstrap interval of the change in medians, 5% threshold, widened by the
  run-to-run spread of earlier runs, as ``edgec report`` does);
* ``mean > 5%``: the naive rule, the mean grew by more than 5%;
* ``p50 > 5%``: the median grew by more than 5%, no noise estimate.

False positives: pairs of unchanged runs flagged. Detection: the later run's latencies scaled by 1.05/1.10/1.20
(an injected slow-down that keeps the run's own noise), flagged. Also the time to render the report.

Goals: edgec's statistic flags at most 10% of unchanged pairs and detects at least 90% of +20% slow-downs.

Run: ``.venv/bin/python -m benchmarks.report``. Writes build/bench/report.json.
"""

from __future__ import annotations

import copy
import json
import tempfile
import time
from pathlib import Path

from benchmarks._goals import goal, print_goals

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "build" / "bench" / "report.json"
REPEATS = 10
SLOWDOWNS = (1.05, 1.10, 1.20)


def _model(path: Path) -> Path:
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.normal(0, 0.1, shape).astype(np.float32), name)
             for name, shape in (("w1", (1024, 1024)), ("w2", (10, 1024)))]
    nodes = [helper.make_node("Gemm", ["x", "w1"], ["h"], transB=1), helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("Gemm", ["r", "w2"], ["y"], transB=1)]
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1024])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def _scaled(doc: dict, factor: float) -> dict:
    from edgec.device_agent.stats import latency_stats

    out = copy.deepcopy(doc)
    out["latency_samples_ms"] = [s * factor for s in doc["latency_samples_ms"]]
    out["latency_ms"] = latency_stats([round(s * 1e6) for s in out["latency_samples_ms"]])
    return out


def _rules(history: list[dict], base: dict, new: dict) -> dict[str, bool]:
    from edgec.report.regression import compare_latency, history_threshold

    threshold = history_threshold([d["latency_ms"]["p50"] for d in history])
    grew = {k: new["latency_ms"][k] / base["latency_ms"][k] - 1 for k in ("mean", "p50")}
    return {"edgec": compare_latency(base, new, min_change=threshold).flagged,
            "mean > 5%": grew["mean"] > 0.05, "p50 > 5%": grew["p50"] > 0.05}


def _judge(docs: list[dict]) -> dict[str, dict[str, float]]:
    rows: dict[str, dict[str, list[bool]]] = {}
    for k in range(1, len(docs)):
        history, base = docs[:k], docs[k - 1]
        cases = {"unchanged (false positive)": docs[k], **{f"+{(f - 1) * 100:.0f}% (detected)": _scaled(docs[k], f)
                                                           for f in SLOWDOWNS}}
        for case, new in cases.items():
            for rule, flagged in _rules(history, base, new).items():
                rows.setdefault(case, {}).setdefault(rule, []).append(flagged)
    return {case: {rule: sum(v) / len(v) for rule, v in by_rule.items()} for case, by_rule in rows.items()}


# Goals: edgec's statistic flags at most 10% of unchanged pairs and detects at least 90% of +20% slow-downs.
MAX_FALSE_POSITIVES, MIN_DETECTED_20 = 0.10, 0.90


def main(argv: list[str] | None = None) -> dict:
    from edgec import api
    from edgec.deploy.results import ResultsStore
    from edgec.report import collect, render_results_report

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        bundle = api.compile(str(_model(tmp / "mlp.onnx")), tmp / "mlp", target="host", format="onnx")
        options = {"runs": 200, "warmup": 20, "power": "none", "idle_s": 0.0, "threads": 1}
        docs = [api.bench(bundle.path, **options).result for _ in range(REPEATS)]
        rates = _judge(docs)
        with ResultsStore(tmp / "results.db") as store:
            for doc in docs:
                store.record(bundle_id=doc["bundle_id"], device="local", result=doc)
            start = time.perf_counter()
            render_results_report(collect(store))
            render_s = time.perf_counter() - start
    medians = [d["latency_ms"]["p50"] for d in docs]
    rules = list(next(iter(rates.values())))
    print(f"{REPEATS} runs of 200 inferences; medians {min(medians):.4f}-{max(medians):.4f} ms "
          f"(spread {max(medians) / min(medians) - 1:+.1%})")
    print(f"{'case':30}" + "".join(f"{r:>12}" for r in rules))
    for case, by_rule in rates.items():
        print(f"{case:30}" + "".join(f"{by_rule[r]:>12.0%}" for r in rules))
    print(f"report of {REPEATS} runs rendered in {render_s:.2f} s")
    false_positives, detected = rates["unchanged (false positive)"]["edgec"], rates["+20% (detected)"]["edgec"]
    goals = [goal(f"edgec flags at most {MAX_FALSE_POSITIVES:.0%} of unchanged pairs",
                  false_positives <= MAX_FALSE_POSITIVES, f"{false_positives:.0%}"),
             goal(f"edgec detects at least {MIN_DETECTED_20:.0%} of +20% slow-downs", detected >= MIN_DETECTED_20,
                  f"{detected:.0%}")]
    print_goals(goals)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps({"repeats": REPEATS, "medians_ms": medians, "flag_rates": rates,
                               "render_s": render_s, "goals": goals}, indent=2, sort_keys=True) + "\n")
    return {"flag_rates": rates, "goals": goals}


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
