# Shared settings for the dmabuf-rw scripts (sourced, not run).
top=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cache=${XDG_CACHE_HOME:-$HOME/.cache}/dmabuf-rw
build=$top/build
tree=$build/linux
patches=$top/kernel/patches
configs=$top/kernel/configs
jobs=${JOBS:-$(nproc)}

export CCACHE_DIR=${CCACHE_DIR:-$cache/ccache}
export CCACHE_BASEDIR=$top
export CCACHE_NOHASHDIR=1
export CCACHE_MAXSIZE=${CCACHE_MAXSIZE:-8G}

die() { echo "${0##*/}: $*" >&2; exit 1; }
msg() { echo "${0##*/}: $*" >&2; }
