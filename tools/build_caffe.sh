#!/usr/bin/env bash
# Build real BVLC Caffe (CPU-only, with pycaffe) into a cache folder outside
# the repo, as a reference to check caffe-surgery's output against.
#
#   tools/build_caffe.sh              build if needed, print the cache folder
#   tools/build_caffe.sh --print-dir  print the folder; exit 1 if not built
#
# Cache: ${CAFFE_SURGERY_CACHE:-$HOME/.cache/caffe-surgery}/caffe-99bd997
# Use:   export CAFFE_PYTHON=/usr/bin/python3
#        export PYTHONPATH=<cache>/python
#        export GLOG_minloglevel=2            # optional: silence Caffe's logs
# <cache>/env holds CAFFE_PYTHON, CAFFE_PYTHONPATH and CAFFE_BIN (tools dir).
#
# Debian 12 only: uses apt packages, and pycaffe runs under Debian's
# /usr/bin/python3 (not a pyenv/venv python). Needs root for apt-get.
# Takes 15-35 min on 2 cores, depending on machine load.
set -euo pipefail

# Source: the BVLC/caffe tree that Debian packaged (caffe 1.0.0+git20180821.
# 99bd997, Debian 11 "bullseye"), fetched with apt-get from Debian's archive
# and pinned by sha256. It is BVLC master as of 2018-08-21 (has Swish and
# Clip). NOT the PyPI sdist brocolli-caffe 9.0.2: despite its "commit
# 9b891540" summary it is a 1.0.0-rc3-based fork (SSD layers, Upsample, ReLU6,
# ...; no Swish/Clip; needs boost_regex), so it is no BVLC reference.
CAFFE_REV=99bd997
DEB_SRC_PKG=caffe
DEB_SRC_VERSION=1.0.0+git20180821.99bd997-8
DEB_SUITE=bullseye
ORIG_TARBALL=caffe_1.0.0+git20180821.99bd997.orig.tar.gz
ORIG_SHA256=e0eb3f06794f7402c77b7dec8e8480273ee1a1bb192e9122b621a69d4147ad0c

CACHE_ROOT="${CAFFE_SURGERY_CACHE:-$HOME/.cache/caffe-surgery}"
DEST="$CACHE_ROOT/caffe-$CAFFE_REV"
STAMP="$DEST/.build-ok"
# Kept across failed runs so a retry resumes make instead of starting over.
WORK="$CACHE_ROOT/.work-caffe-$CAFFE_REV"
PY=/usr/bin/python3   # Debian's python: matches python3-numpy/-protobuf and boost_python

# Build deps; the -dev packages also pull in every runtime lib pycaffe needs.
# python3-skimage (brings scipy) because pycaffe's caffe/io.py imports both at
# `import caffe` time.
APT_PACKAGES=(
  build-essential
  libprotobuf-dev protobuf-compiler
  libgoogle-glog-dev libgflags-dev
  libhdf5-dev
  libboost-system-dev libboost-filesystem-dev libboost-thread-dev libboost-python-dev
  libopenblas-dev
  python3-dev python3-numpy python3-protobuf python3-skimage
)

log() { echo "[build_caffe] $*" >&2; }

# A build counts only with the stamp AND a working `import caffe` (the stamp
# can outlive the apt packages, e.g. a cache restored onto a fresh machine).
is_built() {
  [[ -f "$STAMP" ]] || return 1
  (cd / && GLOG_minloglevel=2 PYTHONPATH="$DEST/python" "$PY" -c 'import caffe') \
    >/dev/null 2>&1
}

print_usage_and_exit() {
  log "BVLC Caffe ($CAFFE_REV, CPU-only) is built in: $DEST"
  log "use it with:"
  log "  export CAFFE_PYTHON=/usr/bin/python3"
  log "  export PYTHONPATH=$DEST/python"
  log "  export GLOG_minloglevel=2   # optional: silence Caffe's logging"
  log "  tools: $DEST/build/tools   (all of this is also in $DEST/env)"
  echo "$DEST"
  exit 0
}

apt_missing() {
  local p
  for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q '^install ok installed$' \
      || echo "$p"
  done
}

ensure_apt_packages() {
  local missing
  missing=$(apt_missing)
  [[ -z "$missing" ]] && return 0
  log "installing apt packages:" $missing
  if [[ $(id -u) -ne 0 ]]; then
    log "need root for apt-get install; install these and rerun:" $missing
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  # Package lists may be absent/stale on a fresh machine: update, then install.
  apt-get update -qq
  # shellcheck disable=SC2086
  apt-get install -y -qq --no-install-recommends $missing >/dev/null
}

# Fetch Debian's pristine upstream tarball with apt-get, using a private
# sources list/state/cache so the system's apt configuration is untouched.
fetch_source() {
  local tarball=$1 aptdir
  aptdir=$(mktemp -d)
  mkdir -p "$aptdir/lists/partial" "$aptdir/cache/archives/partial" "$aptdir/get"
  echo "deb-src http://deb.debian.org/debian $DEB_SUITE main" > "$aptdir/sources.list"
  local opts=(
    -o "Dir::Etc::sourcelist=$aptdir/sources.list"
    -o "Dir::Etc::sourceparts=$aptdir/none"
    -o "Dir::State::Lists=$aptdir/lists"
    -o "Dir::Cache=$aptdir/cache"
    -o "APT::Sandbox::User=root"
  )
  log "fetching $DEB_SRC_PKG=$DEB_SRC_VERSION source from Debian $DEB_SUITE"
  apt-get "${opts[@]}" -qq update
  (cd "$aptdir/get" && apt-get "${opts[@]}" -qq source --download-only \
     "$DEB_SRC_PKG=$DEB_SRC_VERSION" >/dev/null)
  mv "$aptdir/get/$ORIG_TARBALL" "$tarball"
  rm -rf "$aptdir"
}

case "${1:-}" in
  --print-dir)
    if is_built; then echo "$DEST"; exit 0; fi
    log "not built: $DEST (run tools/build_caffe.sh)"; exit 1 ;;
  "") ;;
  -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
  *) log "unknown option: $1"; exit 2 ;;
esac

# Fast path: nothing to do.
is_built && print_usage_and_exit

mkdir -p "$CACHE_ROOT"
# One build at a time per cache (concurrent callers would share $WORK).
exec 9>"$CACHE_ROOT/.caffe-$CAFFE_REV.lock"
flock 9
is_built && print_usage_and_exit   # another process may have just built it

ensure_apt_packages
# Built earlier but the runtime libs were missing: installing them may suffice.
if [[ -f "$STAMP" ]]; then
  is_built && print_usage_and_exit
  log "stamp present but 'import caffe' fails with packages installed; rebuilding"
fi

start=$(date +%s)

# Source tarball, kept under downloads/ so a rebuild doesn't refetch it, and
# checked against the pinned hash.
TARBALL="$CACHE_ROOT/downloads/$ORIG_TARBALL"
mkdir -p "$CACHE_ROOT/downloads"
if ! echo "$ORIG_SHA256  $TARBALL" | sha256sum -c --status 2>/dev/null; then
  rm -f "$TARBALL"
  fetch_source "$TARBALL"
fi
echo "$ORIG_SHA256  $TARBALL" | sha256sum -c --status \
  || { log "sha256 mismatch for $TARBALL"; rm -f "$TARBALL"; exit 1; }

# Paths that Debian puts in non-default places.
MULTIARCH=$(dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null || echo "$(uname -m)-linux-gnu")
BLAS_INC=$(dirname "$(dpkg -L libopenblas-pthread-dev 2>/dev/null | grep '/cblas\.h$' | head -n1)")
BLAS_LIBDIR=$(dirname "$(dpkg -L libopenblas-pthread-dev 2>/dev/null | grep '/libopenblas\.so$' | head -n1)")
[[ -f "$BLAS_INC/cblas.h" ]] || BLAS_INC=/usr/include/$MULTIARCH/openblas-pthread
[[ -d "$BLAS_LIBDIR" && "$BLAS_LIBDIR" != . ]] || BLAS_LIBDIR=/usr/lib/$MULTIARCH/openblas-pthread
PYVER=$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
NUMPY_INC=$(cd / && "$PY" -c 'import numpy; print(numpy.get_include())')

# Our own Makefile.config: CPU only, no OpenCV/LevelDB/LMDB (not needed for
# nets/prototxt/caffemodel work), Debian's OpenBLAS, HDF5 and python paths.
CONFIG=$(cat <<EOF
CPU_ONLY := 1
USE_OPENCV := 0
USE_LEVELDB := 0
USE_LMDB := 0
BLAS := open
BLAS_INCLUDE := $BLAS_INC
BLAS_LIB := $BLAS_LIBDIR
PYTHON_LIBRARIES := boost_python${PYVER//./} python$PYVER
PYTHON_INCLUDE := /usr/include/python$PYVER $NUMPY_INC
PYTHON_LIB := /usr/lib/$MULTIARCH
WITH_PYTHON_LAYER := 1
INCLUDE_DIRS := \$(PYTHON_INCLUDE) /usr/include/hdf5/serial
LIBRARY_DIRS := \$(PYTHON_LIB) /usr/lib/$MULTIARCH/hdf5/serial
BUILD_DIR := build
DISTRIBUTE_DIR := distribute
Q ?= @
EOF
)

# Reuse a work tree left by a failed run only if it was fully unpacked from
# the same tarball with the same config (make then resumes where it stopped).
SRC="$WORK/caffe-$CAFFE_REV"
if [[ ! -f "$WORK/.unpacked" || "$(cat "$WORK/.unpacked")" != "$ORIG_SHA256" ]] \
   || ! cmp -s <(echo "$CONFIG") "$SRC/Makefile.config"; then
  rm -rf "$WORK"
  mkdir -p "$SRC"
  tar -xzf "$TARBALL" -C "$SRC"
  # protobuf >= 3.11 (Debian 12 has 3.21) has a one-argument
  # SetTotalBytesLimit; Caffe passes two.
  sed -i -E 's/SetTotalBytesLimit\(([^,()]+), *[^()]+\)/SetTotalBytesLimit(\1)/' \
    "$SRC/src/caffe/util/io.cpp"
  if grep -qE 'SetTotalBytesLimit\([^)]*,' "$SRC/src/caffe/util/io.cpp"; then
    log "failed to patch SetTotalBytesLimit in io.cpp"; exit 1
  fi
  echo "$CONFIG" > "$SRC/Makefile.config"
  echo "$ORIG_SHA256" > "$WORK/.unpacked"
else
  log "resuming the build left in $WORK"
fi

# `all` = libcaffe + tools (incl. upgrade_net_proto_text) + examples;
# `pycaffe` = python/caffe/_caffe.so + caffe_pb2.py.
JOBS=$(nproc 2>/dev/null || echo 2)
log "building Caffe in $SRC with make -j$JOBS (log: $WORK/make.log)"
make -C "$SRC" -j"$JOBS" all pycaffe >"$WORK/make.log" 2>&1 \
  || { tail -n 40 "$WORK/make.log" >&2; log "make failed (log above; rerun to resume)"; exit 1; }

# Check the result works before publishing it.
[[ -x "$SRC/build/tools/upgrade_net_proto_text" ]] \
  || { log "upgrade_net_proto_text missing"; exit 1; }
(cd / && GLOG_minloglevel=2 PYTHONPATH="$SRC/python" "$PY" -c 'import caffe') \
  || { log "built, but 'import caffe' fails"; exit 1; }

# Object files are only needed to rebuild; drop them to keep the cache small.
find "$SRC/.build_release" \( -name '*.o' -o -name '*.d' \) -delete
cp "$WORK/make.log" "$SRC/.build_release/make.log"

cat > "$SRC/env" <<EOF
CAFFE_PYTHON=$PY
CAFFE_PYTHONPATH=$DEST/python
CAFFE_BIN=$DEST/build/tools
EOF
echo "rev=$CAFFE_REV source=${DEB_SRC_PKG}_$DEB_SRC_VERSION built=$(date -u +%FT%TZ)" \
  > "$SRC/.build-ok"

# Publish with a rename on the same filesystem: $DEST is either absent or
# complete, never half-built. rpaths are $ORIGIN-relative, so moving is safe.
if [[ -e "$DEST" ]]; then
  mv "$DEST" "$WORK/old"
fi
mv "$SRC" "$DEST"
rm -rf "$WORK"

is_built || { log "'import caffe' fails after moving into $DEST"; exit 1; }
log "build took $(( $(date +%s) - start )) s"
print_usage_and_exit
