#!/usr/bin/env bash
# Debian packages the test farm needs. Quick when they are already installed.
set -euo pipefail
need=()
command -v sshd >/dev/null 2>&1 || [ -x /usr/sbin/sshd ] || need+=(openssh-server)
command -v nft >/dev/null 2>&1 || [ -x /usr/sbin/nft ] || need+=(nftables)
command -v ip >/dev/null 2>&1 || [ -x /usr/sbin/ip ] || [ -x /sbin/ip ] || need+=(iproute2)
# The emulated arm64 board (scripts/testbed/build-arm64-root.sh): qemu-user and a Debian arm64 root.
command -v qemu-aarch64-static >/dev/null 2>&1 || need+=(qemu-user-static)
command -v mmdebstrap >/dev/null 2>&1 || need+=(mmdebstrap)
command -v arch-test >/dev/null 2>&1 || need+=(arch-test)  # mmdebstrap needs it for a foreign --arch
command -v chromium >/dev/null 2>&1 || need+=(chromium)  # the report tests open the HTML report headless
# systemd-analyze verify checks the unit of `edgec deploy --service systemd` (no systemd manager needs to run).
command -v systemd-analyze >/dev/null 2>&1 || need+=(systemd)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "edgec: the test farm needs: ${need[*]} (apt-get install -y ${need[*]}, as root)" >&2
    exit 0
  fi
  echo "edgec: installing ${need[*]} ..." >&2
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
