"""Calibration and evaluation data: samples for the model's inputs, checked against its io signature, streamed.

Three kinds of source, all served as a ``CalibrationSet`` that reads samples on demand (never the whole set):

* a ``.npz`` holding one array per model input, named after the input (any name when the model has one input and
  the file one array), first axis = samples replacing the batch axis, or, with one axis more than the input's
  rank, rows that are whole inputs (a scalar, a recurrent state): fed one at a time (an evaluation set adds
  ``labels``); rows are read straight from the archive member, a batch at a time;
* a directory of images (``.png``, ``.jpg``, ...; sorted by name) with a ``--preprocess`` spec such as
  ``resize=224,mean=0.485:0.456:0.406,std=0.229:0.224:0.225,layout=nchw`` (needs Pillow);
* ``file.py:function`` (or ``module:function``; runs that code, and is taken only when written in that form, see
  ``edgec.source_spec``): a function returning an iterable of ``{input name: array}``
  dicts, one sample each (a leading batch axis of 1 is accepted); it is called again for each pass over the data.
"""

from __future__ import annotations

import importlib
import importlib.util
import itertools
import sys
import warnings
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from edgec.errors import CalibrationDataError, UnsafeInputError, UsageError
from edgec.source_spec import parse_source_spec

__all__ = ["MIN_SAMPLES", "CalibrationSet", "load_samples", "npz_shapes", "open_npz", "parse_preprocess"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".ppm", ".pgm", ".tif", ".tiff")
# Fewest calibration samples each range method gives stable ranges with (histogram methods need more).
MIN_SAMPLES = {"minmax": 8, "mse": 16, "entropy": 32, "percentile": 32}
MAX_ROW_BYTES = 256 << 20  # one sample of one input (or the whole labels array), checked from the .npy header

Reader = Callable[[int, int], list]  # (start, stop) -> one array per input holding samples start..stop-1


class CalibrationSet:
    """Samples for every model input, in io order; ``labels`` when the data carry them.

    Built either from in-memory ``arrays`` (one per input, samples on axis 0) or from a ``reader`` that returns
    the rows ``start:stop`` of every input, so large sets are streamed.
    """

    def __init__(self, source: str, arrays: list[np.ndarray] | None = None, labels: np.ndarray | None = None, *,
                 reader: Reader | None = None, count: int | None = None, offset: int = 0, max_batch: int = 0):
        self.source = source
        self.labels = labels
        # 1 when some input's rows are whole inputs (no batch axis to stack samples on); 0 = no limit.
        self.max_batch = max_batch
        if reader is None:
            arrays = list(arrays or [])
            count = int(arrays[0].shape[0]) if arrays else 0

            def reader(start, stop):
                return [a[start:stop] for a in arrays]

        self._reader = reader
        self._count = int(count or 0)
        self._offset = offset

    def __len__(self) -> int:
        return self._count

    @property
    def arrays(self) -> list[np.ndarray]:
        """Every sample in memory (for small sets and tests; large sets should use ``batches``)."""
        return self.read(0, len(self))

    def read(self, start: int, stop: int) -> list[np.ndarray]:
        """Rows ``start:stop`` (relative to this set) of every input."""
        return self._reader(self._offset + start, self._offset + min(stop, len(self)))

    def batches(self, size: int = 1, limit: int | None = None) -> Iterator[list[np.ndarray]]:
        """Consecutive batches of ``size`` samples (the last may be smaller), at most ``limit`` samples."""
        total = len(self) if limit is None else min(limit, len(self))
        size = min(size, self.max_batch) if self.max_batch else size
        for start in range(0, total, size):
            yield self.read(start, min(start + size, total))

    def samples(self, limit: int | None = None) -> Iterator[list[np.ndarray]]:
        """One sample at a time, each with a leading batch axis of 1."""
        return self.batches(1, limit)

    def subset(self, start: int, stop: int) -> CalibrationSet:
        """Samples ``start:stop`` as a set of their own (no copy)."""
        stop = min(stop, len(self))
        labels = None if self.labels is None else self.labels[start:stop]
        return CalibrationSet(self.source, labels=labels, reader=self._reader, count=max(0, stop - start),
                              offset=self._offset + start, max_batch=self.max_batch)

    def take(self, indices) -> CalibrationSet:
        """The samples at ``indices`` (increasing), as a set of their own, read a span at a time."""
        indices = np.asarray(indices, np.int64)
        labels = None if self.labels is None else self.labels[indices]
        base, offset = self._reader, self._offset

        def reader(start, stop):
            picks = indices[start:stop]
            if len(picks) == 0:
                return []
            if len(picks) == 1:  # as the base reads one row: whole-input rows (a state, a scalar) come unbatched
                return base(offset + int(picks[0]), offset + int(picks[0]) + 1)
            rows = base(offset + int(picks[0]), offset + int(picks[-1]) + 1)
            return [r[picks - picks[0]] for r in rows]

        return CalibrationSet(self.source, labels=labels, reader=reader, count=len(indices), max_batch=self.max_batch)

    def random_split(self, fraction: float, seed: int) -> tuple[CalibrationSet, CalibrationSet]:
        """(part, rest) drawn at random (seeded), each in file order: a file ordered by class, source or time
        splits without bias (the first half against the second would hold out one class)."""
        n = len(self)
        cut = max(1, min(n - 1, round(n * fraction))) if n > 1 else n
        chosen = np.zeros(n, bool)
        chosen[np.random.default_rng(seed).permutation(n)[:cut]] = True
        return self.take(np.flatnonzero(chosen)), self.take(np.flatnonzero(~chosen))

    def random_subset(self, count: int, seed: int) -> CalibrationSet:
        """At most ``count`` samples drawn at random (seeded), in file order; the whole set when it is smaller."""
        if len(self) <= count:
            return self
        return self.take(np.sort(np.random.default_rng(seed).permutation(len(self))[:count]))


def _describe(shape) -> list:
    return ["N" if d is None else d for d in shape]


def _check_shape(source: str, meta: dict, shape: tuple) -> None:
    name, want = meta["name"], meta["shape"]
    if want is None:
        return
    if len(shape) != len(want):
        raise CalibrationDataError(f"{source}: array {name!r} has shape {list(shape)}; the model input expects "
                                   f"{len(want)} dimensions {_describe(want)} with samples on the first axis")
    for axis, (got, expect) in enumerate(zip(shape[1:], want[1:]), start=1):
        if expect is not None and got != expect:
            raise CalibrationDataError(f"{source}: array {name!r} has shape {list(shape)}, expected "
                                       f"{_describe(want)} (axis {axis}: {got} != {expect})")


def _whole_rows(source: str, meta: dict, shape: tuple) -> bool:
    """True when every row of an array of ``shape`` is a whole input (one more axis than the input's rank, e.g.
    a scalar or a recurrent state without a batch axis); such rows are fed one sample at a time."""
    want = meta["shape"]
    if want is None or len(shape) != len(want) + 1:
        return False
    for axis, (got, expect) in enumerate(zip(shape[1:], want)):
        if expect is not None and got != expect:
            raise CalibrationDataError(f"{source}: array {meta['name']!r} has shape {list(shape)}: rows of whole "
                                       f"inputs {_describe(want)} expected (axis {axis + 1}: {got} != {expect})")
    return True


def _check_dtype(source: str, meta: dict, dtype: np.dtype) -> bool:
    """True when the samples need a cast to the input's dtype (float to float only)."""
    want = np.dtype(meta["dtype"])
    if want == dtype:
        return False
    if np.issubdtype(dtype, np.floating) and np.issubdtype(want, np.floating):
        return True
    raise CalibrationDataError(f"{source}: array {meta['name']!r} has dtype {dtype}, the model input expects "
                               f"{meta['dtype']}")


def _check_array(source: str, meta: dict, array: np.ndarray) -> np.ndarray:
    _check_shape(source, meta, array.shape)
    return array.astype(meta["dtype"]) if _check_dtype(source, meta, array.dtype) else array


class _NpyMember:
    """One array of an .npz read row-range by row-range from the archive (no full load)."""

    def __init__(self, path: Path, member: str):
        self.path, self.member = path, member
        with zipfile.ZipFile(path) as archive, archive.open(member) as handle:
            version = np.lib.format.read_magic(handle)
            reader = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                      else np.lib.format.read_array_header_2_0)
            self.shape, fortran, self.dtype = reader(handle)
            self.header_size = handle.tell()
            size = archive.getinfo(member).file_size
        if fortran or self.dtype.hasobject or not self.shape:
            raise CalibrationDataError(f"{path}: array {member[:-4]!r} is Fortran-ordered, a scalar or holds "
                                       "Python objects; save it with np.savez from a C-ordered numeric array")
        self.row_bytes = int(np.prod(self.shape[1:], dtype=np.int64)) * self.dtype.itemsize
        if self.row_bytes > MAX_ROW_BYTES:
            raise CalibrationDataError(f"{path}: array {member[:-4]!r} declares {self.row_bytes} bytes per sample "
                                       f"(shape {list(self.shape)}); the limit is {MAX_ROW_BYTES}")
        if self.row_bytes * self.shape[0] != size - self.header_size:  # checked before anything is allocated
            raise CalibrationDataError(f"{path}: array {member[:-4]!r} declares shape {list(self.shape)} "
                                       f"({self.row_bytes * self.shape[0]} bytes) but holds {size - self.header_size}"
                                       " bytes; the file is truncated or not written by numpy")

    def rows(self, start: int, stop: int) -> np.ndarray:
        try:
            with zipfile.ZipFile(self.path) as archive, archive.open(self.member) as handle:
                handle.seek(self.header_size + start * self.row_bytes)
                data = handle.read((stop - start) * self.row_bytes)
            return np.frombuffer(data, self.dtype).reshape((stop - start, *self.shape[1:])).copy()
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:  # changed or corrupt since opened
            raise CalibrationDataError(f"{self.path}: cannot read rows {start}..{stop} of {self.member[:-4]!r} "
                                       f"({type(exc).__name__}: {exc})") from None


def open_npz(path: Path) -> tuple[dict[str, _NpyMember], np.ndarray | None]:
    """(array name -> member read row-range by row-range, labels or None): headers checked against the file's
    size before anything is allocated (the one reader of untrusted .npz samples)."""
    try:
        with zipfile.ZipFile(path) as archive:
            members = [n for n in archive.namelist() if n.endswith(".npy")]
        arrays = {m[:-4]: _NpyMember(path, m) for m in members}
    except CalibrationDataError:
        raise
    except Exception as exc:  # zipfile/format errors of a corrupt file
        raise CalibrationDataError(f"{path}: not a readable .npz ({type(exc).__name__}: {exc})") from None
    labels = arrays.pop("labels", None)
    if labels is not None and labels.row_bytes * labels.shape[0] > MAX_ROW_BYTES:
        raise CalibrationDataError(f"{path}: 'labels' declares shape {list(labels.shape)}, more than "
                                   f"{MAX_ROW_BYTES} bytes")
    return arrays, (labels.rows(0, labels.shape[0]) if labels is not None else None)


def npz_shapes(path: str | Path) -> dict[str, list[int]]:
    """Shapes of one sample of each array of a calibration .npz (batch 1), keyed by array name, or by
    ``ONLY_INPUT`` when it holds one array: input shapes for a front-end that needs them before lowering."""
    from edgec.compiler.frontends import ONLY_INPUT

    members, _ = open_npz(Path(path))
    shapes = {name: [1, *member.shape[1:]] for name, member in members.items()}
    return {ONLY_INPUT: next(iter(shapes.values()))} if len(shapes) == 1 else shapes


def _load_npz(path: Path, inputs: list[dict]) -> CalibrationSet:
    members, labels = open_npz(path)
    if len(inputs) == 1 and len(members) == 1:  # one array for a one-input model: its name does not matter
        members = {inputs[0]["name"]: next(iter(members.values()))}
    missing = [i["name"] for i in inputs if i["name"] not in members]
    if missing:
        raise CalibrationDataError(f"{path}: no array for model input {missing[0]!r}; arrays present: "
                                   f"{', '.join(sorted(members)) or 'none'}; name arrays after the inputs "
                                   f"({', '.join(i['name'] for i in inputs)})")
    chosen = [members[meta["name"]] for meta in inputs]
    casts, whole = [], []
    for meta, member in zip(inputs, chosen):
        whole.append(_whole_rows(str(path), meta, member.shape))
        if not whole[-1]:
            _check_shape(str(path), meta, member.shape)
        casts.append(meta["dtype"] if _check_dtype(str(path), meta, member.dtype) else None)
    counts = {m.shape[0] for m in chosen}
    if len(counts) > 1:
        raise CalibrationDataError(f"{path}: inputs have different sample counts {sorted(counts)}")

    def reader(start, stop):
        rows = [m.rows(start, stop) if c is None else m.rows(start, stop).astype(c) for m, c in zip(chosen, casts)]
        return [r.reshape(r.shape[1:]) if w and len(r) == 1 else r for r, w in zip(rows, whole)]

    return CalibrationSet(str(path), labels=labels, reader=reader, count=chosen[0].shape[0],
                          max_batch=1 if any(whole) else 0)


def parse_preprocess(spec: str | None) -> dict:
    """``resize=224,mean=a:b:c,std=a:b:c,layout=nchw,scale=255`` -> settings dict (defaults filled in)."""
    settings = {"resize": None, "mean": [0.0], "std": [1.0], "layout": "nchw", "scale": 255.0, "mode": "RGB"}
    for item in filter(None, (spec or "").split(",")):
        key, _, value = item.partition("=")
        key = key.strip()
        try:
            if key == "resize":
                dims = [int(v) for v in value.lower().split("x")]
                settings["resize"] = dims * 2 if len(dims) == 1 else dims
            elif key in ("mean", "std"):
                settings[key] = [float(v) for v in value.split(":")]
            elif key == "scale":
                settings["scale"] = float(value)
            elif key in ("layout", "mode") and value:
                settings[key] = value.lower() if key == "layout" else value.upper()
            else:
                raise ValueError(key)
        except ValueError:
            raise UsageError(f"--preprocess {spec!r}: cannot read {item!r}; expected e.g. resize=224,"
                             "mean=0.485:0.456:0.406,std=0.229:0.224:0.225,layout=nchw") from None
    if settings["layout"] not in ("nchw", "nhwc"):
        raise UsageError(f"--preprocess {spec!r}: layout must be nchw or nhwc")
    if settings["mode"] not in ("RGB", "L"):
        raise UsageError(f"--preprocess {spec!r}: mode must be RGB or L")
    return settings


MAX_IMAGE_PIXELS = 64_000_000  # 8000 x 8000: larger calibration images are refused before they are decoded


def _image_array(path: Path, settings: dict) -> np.ndarray:
    import warnings

    from PIL import Image

    Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                if image.width * image.height > MAX_IMAGE_PIXELS:
                    raise Image.DecompressionBombError(f"{image.width}x{image.height} pixels")
                image = image.convert(settings["mode"])
                if settings["resize"]:
                    height, width = settings["resize"]
                    image = image.resize((width, height), Image.Resampling.BILINEAR)
                array = np.asarray(image, dtype=np.float32) / settings["scale"]
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise CalibrationDataError(f"{path}: image too large ({exc}; limit {MAX_IMAGE_PIXELS} pixels); resize "
                                   "it first") from None
    except (OSError, ValueError, SyntaxError) as exc:  # PIL's UnidentifiedImageError is an OSError
        raise CalibrationDataError(f"{path}: not a readable image ({type(exc).__name__}: {exc}); remove it or "
                                   "replace it") from None
    if array.ndim == 2:
        array = array[:, :, None]
    array = (array - np.float32(settings["mean"])) / np.float32(settings["std"])
    return np.ascontiguousarray(array.transpose(2, 0, 1) if settings["layout"] == "nchw" else array)


def _load_images(path: Path, inputs: list[dict], preprocess: str | None) -> CalibrationSet:
    if len(inputs) != 1:
        raise CalibrationDataError(f"{path}: an image directory feeds a single-input model; this one has "
                                   f"{len(inputs)} inputs: give a .npz or file.py:function")
    try:
        import PIL  # noqa: F401
    except ImportError:
        raise CalibrationDataError(f"{path}: reading images needs Pillow (pip install Pillow), or give a .npz"
                                   ) from None
    files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise CalibrationDataError(f"{path}: holds no images ({', '.join(IMAGE_SUFFIXES)})")
    settings = parse_preprocess(preprocess)
    meta = inputs[0]
    first = _image_array(files[0], settings)
    _check_shape(f"{files[0]} (after --preprocess)", meta, (1, *first.shape))

    def reader(start, stop):
        return [np.stack([_image_array(f, settings) for f in files[start:stop]]).astype(meta["dtype"])]

    return CalibrationSet(str(path), reader=reader, count=len(files))


def _import_function(spec: str) -> Callable:
    source = parse_source_spec(spec)
    target, func = source.location, source.function
    try:
        if target.endswith(".py"):
            file = Path(target)
            if not file.is_file():
                raise CalibrationDataError(f"{spec}: no such file {target}")
            module_spec = importlib.util.spec_from_file_location(f"_edgec_calibration_{file.stem}", file)
            module = importlib.util.module_from_spec(module_spec)
            sys.modules.setdefault(module_spec.name, module)
            module_spec.loader.exec_module(module)
        else:
            module = importlib.import_module(target)
    except (CalibrationDataError, UnsafeInputError):
        raise
    except Exception as exc:
        raise CalibrationDataError(f"{spec}: importing {target} failed ({type(exc).__name__}: {exc})") from None
    if not callable(getattr(module, func, None)):
        raise CalibrationDataError(f"{spec}: {target} has no function {func!r}")
    return getattr(module, func)


def _sample_arrays(spec: str, index: int, sample, inputs: list[dict]) -> list[np.ndarray]:
    if not isinstance(sample, dict):
        raise CalibrationDataError(f"{spec}: sample {index} is a {type(sample).__name__}, expected a dict "
                                   f"{{input name: array}} for inputs {[i['name'] for i in inputs]}")
    arrays = []
    for meta in inputs:
        if meta["name"] not in sample:
            raise CalibrationDataError(f"{spec}: sample {index} has no {meta['name']!r} (keys: "
                                       f"{', '.join(sorted(map(str, sample)))})")
        array = np.asarray(sample[meta["name"]])
        if meta["shape"] is not None and array.ndim == len(meta["shape"]) - 1:
            array = array[None]
        arrays.append(_check_array(f"{spec} sample {index}", meta, array))
    return arrays


def _load_function(spec: str, inputs: list[dict]) -> CalibrationSet:
    function = _import_function(spec)

    def stream(start, stop):
        try:
            iterable = iter(function())
        except TypeError:
            raise CalibrationDataError(f"{spec}: the function must return an iterable of input dicts") from None
        return ((start + k, s) for k, s in enumerate(itertools.islice(iterable, start, stop)))

    count = sum(1 for _ in stream(0, None))  # one streaming pass to count (nothing kept)

    def reader(start, stop):
        rows = [_sample_arrays(spec, i, s, inputs) for i, s in stream(start, stop)]
        return [np.concatenate([r[k] for r in rows]) for k in range(len(inputs))] if rows else []

    return CalibrationSet(spec, reader=reader, count=count)


def load_samples(path: str | Path, inputs: list[dict], need_labels: bool = False,
                 preprocess: str | None = None) -> CalibrationSet:
    """Open samples for ``inputs`` (io-signature entries); errors name the array and the fix."""
    spec = str(path)
    path = Path(spec)
    if path.is_dir():
        samples = _load_images(path, inputs, preprocess)
    elif parse_source_spec(spec).is_function:
        samples = _load_function(spec, inputs)
    elif not path.exists():
        raise CalibrationDataError(f"{path}: no such file")
    elif path.suffix != ".npz":
        raise CalibrationDataError(f"{path}: expected a .npz with one array per model input "
                                   f"({', '.join(i['name'] for i in inputs)}), an image directory or "
                                   "file.py:function")
    else:
        samples = _load_npz(path, inputs)
    if len(samples) == 0:
        raise CalibrationDataError(f"{spec}: holds no samples")
    if need_labels and samples.labels is None:
        raise CalibrationDataError(f"{spec}: evaluation data need a 'labels' array")
    if samples.labels is not None and samples.labels.shape[0] != len(samples):
        raise CalibrationDataError(f"{spec}: 'labels' has {samples.labels.shape[0]} entries for {len(samples)} "
                                   "samples")
    return samples


def warn_if_few(samples: CalibrationSet, method: str) -> str | None:
    """A warning (also returned for the report) when ``samples`` are too few for ``method``."""
    need = MIN_SAMPLES.get(method, 8)
    if len(samples) >= need:
        return None
    message = (f"{samples.source}: only {len(samples)} calibration samples; {method} calibration wants at least "
               f"{need} for stable ranges")
    warnings.warn(message, stacklevel=2)
    return message
