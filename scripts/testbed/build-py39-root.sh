#!/usr/bin/env bash
# Build (once) a Debian bullseye amd64 root whose python3 is CPython 3.9: the oldest Python the device agent
# supports, as Raspberry Pi OS bullseye ships it. numpy, onnxruntime and ai-edge-litert wheels for cp39 are put
# in /opt/edgec-py39 by this host's pip (--target, for Python 3.9); no pip runs inside the root. The tests run
# the agent zipapp there with chroot (tests/integration/test_agent_py39.py).
#
#   scripts/testbed/build-py39-root.sh [ROOT]     prints ROOT on stdout when it is ready
#
# ROOT defaults to $EDGEC_PY39_ROOT or /var/cache/edgec/py39-root: outside the repository, never committed.
# It is rebuilt only when missing or when this recipe (this file and cached-root.sh) changed; concurrent
# callers wait on a lock; the build goes to ROOT.tmp and is renamed into place at the end. $PYTHON (default
# python3) is the interpreter whose pip fetches the wheels. Exit 3 with a reason on stderr when this machine
# cannot build it.
set -euo pipefail
ROOT=${1:-${EDGEC_PY39_ROOT:-/var/cache/edgec/py39-root}}
PYTHON=${PYTHON:-python3}
HERE=$(cd "$(dirname "$0")" && pwd)
RECIPE=$(cat "$HERE/build-py39-root.sh" "$HERE/cached-root.sh" | sha256sum | cut -c1-16)
. "$HERE/cached-root.sh"
cannot() { echo "edgec testbed: cannot build the Python 3.9 root: $*" >&2; exit 3; }

[ "$(id -u)" = 0 ] || cannot "needs root (mmdebstrap, chroot)"
command -v mmdebstrap >/dev/null || cannot "mmdebstrap missing (run scripts/install-system.sh)"
"$PYTHON" -m pip --version >/dev/null 2>&1 || cannot "$PYTHON has no pip to fetch the cp39 wheels"

root_cached "$ROOT" "$RECIPE"
echo "edgec testbed: building the Python 3.9 root in $ROOT (a minute or two) ..." >&2
TMP="$ROOT.tmp"
rm -rf "$TMP"
mmdebstrap --quiet --variant=minbase --include=python3 bullseye "$TMP" "$(debian_mirror)" >&2
platforms=()
for tag in manylinux2014_x86_64 manylinux_2_17_x86_64 manylinux_2_27_x86_64 manylinux_2_28_x86_64; do
  platforms+=(--platform "$tag")
done
"$PYTHON" -m pip install --quiet --disable-pip-version-check --target "$TMP/opt/edgec-py39" --python-version 3.9 \
  --implementation cp --abi cp39 "${platforms[@]}" --only-binary=:all: --no-warn-conflicts \
  numpy onnxruntime ai-edge-litert >&2
unshare -m --propagation private sh -euc '
  mount -t proc proc "$1/proc"
  exec chroot "$1" env -i PATH=/usr/bin:/bin PYTHONPATH=/opt/edgec-py39 python3 -c "
import sys, numpy, onnxruntime, ai_edge_litert.interpreter
assert sys.version_info[:2] == (3, 9), sys.version
print(\"py39 root: Python\", sys.version.split()[0], \"numpy\", numpy.__version__, \"onnxruntime\", onnxruntime.__version__)
"' sh "$TMP" >&2
root_publish "$ROOT" "$TMP" "$RECIPE"
