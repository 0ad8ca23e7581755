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

# The mirror the system already uses for the main Debian archive (never the
# security archive), from its deb822 or one-line apt sources.
debian_mirror() {
	local f m=
	for f in /etc/apt/sources.list.d/*.sources; do
		[ -f "$f" ] || continue
		m=$(awk '/^URIs:/ { for (i = 2; i <= NF; i++) if ($i !~ /security/) { print $i; exit } }' "$f")
		[ -n "$m" ] && break
	done
	if [ -z "$m" ] && [ -f /etc/apt/sources.list ]; then
		m=$(awk '$1 == "deb" && $0 !~ /security/ { for (i = 2; i <= NF; i++) if ($i ~ /:\/\//) { print $i; exit } }' /etc/apt/sources.list)
	fi
	echo "$m"
}
