"""Session fixtures for the corpus tests: real calibration and evaluation samples per corpus model, and each
(model, target, precision) bundle compiled once per session (per xdist worker; tests of one model share an
xdist group, so they share the worker and its bundles)."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgec.examples.corpus import CORPUS, write_calibration

CALIBRATION_SAMPLES = 16
# The large graphs calibrate (and run the int8 guard's per-node checks) on fewer samples: CI time. silero-vad's
# chunks are 32 ms: 16 of them are the stream's opening silence, 64 (2 s) hold speech as well. ddddocr-det keeps
# 16: on 8 its min/max ranges missed the evaluation images' (cosine 0.88-0.90 against 0.95-0.99 on 12-16, the
# compile no slower: 40 s).
SAMPLES = {"ppocr-det": 8, "ppocr-rec": 8, "silero-vad": 64}
EVAL_SAMPLES = 8
VAD_CHUNKS = 150  # 4.8 s of speech-like audio: bursts and pauses (a chunk is 32 ms)


class CorpusBuilds:
    """Compiles on first use and remembers the bundle or the error (a failed compile is not retried)."""

    def __init__(self, root: Path):
        self.root = root
        self._bundles: dict = {}

    def calibration(self, name: str) -> Path:
        path = self.root / f"{name}-calibration.npz"
        if not path.exists():
            write_calibration(CORPUS[name], path, n=SAMPLES.get(name, CALIBRATION_SAMPLES), seed=0)
        return path

    def eval_samples(self, name: str) -> dict:
        model = CORPUS[name]
        return model.samples(VAD_CHUNKS if model.metric == "vad" else EVAL_SAMPLES, seed=1)

    def bundle(self, name: str, target: str, precision: str):
        key = (name, target, precision)
        if key not in self._bundles:
            self._bundles[key] = self._compile(*key)
        result = self._bundles[key]
        if isinstance(result, BaseException):
            raise result
        return result

    def _compile(self, name: str, target: str, precision: str):
        from edgec import api

        model = CORPUS[name]
        options = {"target": target, "quantize": precision, "input_shapes": {k: list(v) for k, v in
                                                                               model.shapes.items()}}
        if precision != "none":
            options["calibration"] = str(self.calibration(name))
        try:
            return api.compile(model.source, self.root / f"{name}-{target}-{precision}", force=True, **options)
        except Exception as exc:  # remembered and re-raised by every test that needs this bundle
            return exc


@pytest.fixture(scope="session")
def corpus_builds(tmp_path_factory) -> CorpusBuilds:
    return CorpusBuilds(tmp_path_factory.mktemp("corpus"))
