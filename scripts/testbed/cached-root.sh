# Sourced by the build-*-root.sh scripts: a root file system built once outside the repository, rebuilt only
# when its recipe changed, published by rename so a half-built root is never used.
#
#   root_cached ROOT RECIPE      takes ROOT.lock (concurrent builders wait); prints ROOT and exits if it is current
#   root_publish ROOT TMP RECIPE stamps TMP with RECIPE, moves it to ROOT and prints ROOT
#   debian_mirror                the Debian mirror apt on this machine already uses

root_cached() {
  mkdir -p "$(dirname "$1")"
  exec 9>"$1.lock"
  flock 9
  if [ -f "$1/etc/edgec-recipe" ] && [ "$(cat "$1/etc/edgec-recipe")" = "$2" ]; then
    echo "$1"; exit 0
  fi
}

root_publish() {
  echo "$3" > "$2/etc/edgec-recipe"
  rm -rf "$1"
  mv "$2" "$1"
  echo "$1"
}

debian_mirror() {
  # deb822 sources first, then one-line ones; never the security archive.
  local m
  m=$(grep -hE '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{print $2}' | grep -v security | head -n1)
  [ -n "$m" ] || m=$(grep -hE '^deb ' /etc/apt/sources.list 2>/dev/null | awk '{print $2}' | grep -v security | head -n1)
  echo "${m:-http://deb.debian.org/debian}"
}
