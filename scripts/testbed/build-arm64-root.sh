#!/usr/bin/env bash
# Build (once) the emulated aarch64 board of the test farm: a Debian bookworm arm64 root with python3,
# numpy, onnxruntime and openssh-server, run under qemu-user. See ../../TESTBED notes (shared/TESTBED.md).
#
#   scripts/testbed/build-arm64-root.sh [ROOT]     prints ROOT on stdout when it is ready
#
# ROOT defaults to $EDGEC_ARM64_ROOT or /var/cache/edgec/arm64-root: outside the repository, never committed.
# It is rebuilt only when missing or when this recipe (this file and cached-root.sh) changed; concurrent
# callers wait on a lock. The build goes to ROOT.tmp and is renamed into place at the end, so a half-built
# root is never used.
# Also registers qemu-aarch64 with binfmt_misc (needed to run anything in the root), idempotently.
# Exit 3 with a reason on stderr when this machine cannot run it (not root, no binfmt_misc, no qemu).
set -euo pipefail
ROOT=${1:-${EDGEC_ARM64_ROOT:-/var/cache/edgec/arm64-root}}
HERE=$(cd "$(dirname "$0")" && pwd)
RECIPE=$(cat "$HERE/build-arm64-root.sh" "$HERE/cached-root.sh" | sha256sum | cut -c1-16)
. "$HERE/cached-root.sh"
cannot() { echo "edgec testbed: cannot build the arm64 board: $*" >&2; exit 3; }

[ "$(id -u)" = 0 ] || cannot "needs root (mmdebstrap, chroot, binfmt_misc)"
command -v qemu-aarch64-static >/dev/null || cannot "qemu-aarch64-static missing (run scripts/install-system.sh)"
command -v mmdebstrap >/dev/null || cannot "mmdebstrap missing (run scripts/install-system.sh)"

register_binfmt() {
  local dir=/proc/sys/fs/binfmt_misc
  [ -e "$dir/register" ] || mount -t binfmt_misc binfmt_misc "$dir" 2>/dev/null || cannot "binfmt_misc cannot be mounted"
  [ -e "$dir/qemu-aarch64" ] && return 0
  local conf=/usr/lib/binfmt.d/qemu-aarch64.conf
  [ -f "$conf" ] || cannot "$conf missing (qemu-user-static not installed?)"
  # The .conf line is exactly the register format; a concurrent registration gives EEXIST, which is fine.
  grep -v '^#' "$conf" | head -n1 > "$dir/register" 2>/dev/null || [ -e "$dir/qemu-aarch64" ] \
    || cannot "writing $conf into $dir/register failed"
}

# A Raspberry Pi 4 /proc/cpuinfo: onnxruntime >= 1.28 segfaults on import under qemu reading the host's x86 one.
write_cpuinfo() {
  local out=$1 i
  : > "$out"
  for i in 0 1 2 3; do
    printf 'processor\t: %s\nBogoMIPS\t: 108.00\nFeatures\t: fp asimd evtstrm crc32 cpuid\nCPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x0\nCPU part\t: 0xd08\nCPU revision\t: 3\n\n' "$i" >> "$out"
  done
  printf 'Hardware\t: BCM2835\nRevision\t: c03111\nModel\t\t: Raspberry Pi 4 Model B Rev 1.1\n' >> "$out"
}

# Run a command in the root with proc/sys/dev and the fake cpuinfo mounted, in a private mount namespace
# so nothing stays mounted when it ends.
in_root() {
  local root=$1; shift
  unshare -m --propagation private sh -euc '
    r=$1; shift
    mount -t proc proc "$r/proc"; mount --bind /sys "$r/sys"; mount --rbind /dev "$r/dev"
    mount --bind "$r/etc/edgec-cpuinfo" "$r/proc/cpuinfo"
    exec chroot "$r" env -i PATH=/usr/local/bin:/usr/bin:/bin HOME=/root PIP_CONFIG_FILE=/dev/null \
      PIP_CERT=/etc/ssl/certs/host-ca.crt PIP_DISABLE_PIP_VERSION_CHECK=1 "$@"' sh "$root" "$@"
}

register_binfmt
root_cached "$ROOT" "$RECIPE"
echo "edgec testbed: building the arm64 board in $ROOT (a few minutes) ..." >&2
TMP="$ROOT.tmp"
rm -rf "$TMP"
mmdebstrap --quiet --arch=arm64 --variant=minbase \
  --include=python3,python3-venv,python3-pip,ca-certificates,openssh-server bookworm "$TMP" "$(debian_mirror)" >&2
cp /etc/ssl/certs/ca-certificates.crt "$TMP/etc/ssl/certs/host-ca.crt"
write_cpuinfo "$TMP/etc/edgec-cpuinfo"
mkdir -p "$TMP/run/sshd"
in_root "$TMP" python3 -m pip install -q --break-system-packages numpy onnxruntime >&2
in_root "$TMP" python3 -c "import numpy, onnxruntime; print('arm64 board: numpy', numpy.__version__, 'onnxruntime', onnxruntime.__version__)" >&2
root_publish "$ROOT" "$TMP" "$RECIPE"
