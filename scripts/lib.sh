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

# The mirror the system already uses for the main Debian archive.  First
# what apt says of the sources it has fetched (origin and label Debian,
# component main: never the security archive or a third party), else the
# sources themselves: the first with component main and the system's
# release among its suites (os-release's VERSION_CODENAME; on testing or
# sid, whose sources may name another suite, any), in debian.sources,
# then sources.list, then the other deb822 files.  APT_ETC and OS_RELEASE
# (default /etc/apt, /etc/os-release) are for tests: with APT_ETC set,
# apt is not asked.
debian_mirror() {
	local etc=${APT_ETC:-/etc/apt} codename= f files=() m= rel
	if [ -z "${APT_ETC:-}" ]; then
		m=$(apt-cache policy 2>/dev/null | awk '
			$1 ~ /^-?[0-9]+$/ && $2 ~ /:\/\// { u = $2; next }
			u != "" && $1 == "release" && /[ ,]o=Debian(,|$)/ && /[ ,]l=Debian(,|$)/ &&
			    /[ ,]c=main(,|$)/ { print u; exit }')
		[ -z "$m" ] || { echo "$m"; return; }
	fi
	codename=$(. "${OS_RELEASE:-/etc/os-release}" 2>/dev/null && echo "${VERSION_CODENAME:-}")
	for f in "$etc"/sources.list.d/*.sources; do
		[ -f "$f" ] && [ "$f" != "$etc/sources.list.d/debian.sources" ] && files+=("$f")
	done
	for rel in "$codename" ""; do
		[ -z "$m" ] && [ -f "$etc/sources.list.d/debian.sources" ] &&
			m=$(deb822_mirror "$rel" "$etc/sources.list.d/debian.sources")
		[ -z "$m" ] && [ -f "$etc/sources.list" ] && m=$(awk -v rel="$rel" '
			$1 == "deb" && $0 !~ /security/ {
				sub(/^[ \t]*deb[ \t]+(\[[^]]*\][ \t]+)?/, "")
				if (rel != "" && $2 != rel)
					next
				for (i = 3; i <= NF; i++)
					if ($i == "main") { print $1; exit }
			}' "$etc/sources.list")
		[ -z "$m" ] && [ ${#files[@]} -gt 0 ] && m=$(deb822_mirror "$rel" "${files[@]}")
	done
	echo "$m"
}

# The first URI of deb822 sources FILES... whose stanza is enabled, of type
# deb, with component main and suite REL (any if empty), never security.
deb822_mirror() {
	local rel=$1
	shift
	awk -v rel="$rel" '
		function stanza() {
			if (!found && !off && uris != "" && types ~ /(^| )deb( |$)/ &&
			    comps ~ /(^| )main( |$)/ && (rel == "" || suites ~ ("(^| )" rel "( |$)"))) {
				n = split(uris, u, " ")
				for (i = 1; i <= n; i++)
					if (u[i] !~ /security/) { print u[i]; found = 1; exit }
			}
			uris = suites = comps = types = ""; off = 0
		}
		FNR == 1 { stanza() }
		/^[ \t]*$/ { stanza(); next }
		/^URIs:/ { uris = $0; sub(/^URIs:[ \t]*/, "", uris); gsub(/\t/, " ", uris) }
		/^Suites:/ { suites = $0; sub(/^Suites:[ \t]*/, "", suites); gsub(/\t/, " ", suites) }
		/^Components:/ { comps = $0; sub(/^Components:[ \t]*/, "", comps); gsub(/\t/, " ", comps) }
		/^Types:/ { types = $0; sub(/^Types:[ \t]*/, "", types); gsub(/\t/, " ", types) }
		/^Enabled:[ \t]*[Nn]o/ { off = 1 }
		END { stanza() }' "$@"
}

# A private apt configuration in DIR (emptied first) that sees one suite of
# the system's Debian mirror, for TYPES "deb" or "deb-src", without touching
# the system's apt state.  Sets the array apt_opts for apt-get/apt-cache.
private_apt() {
	local dir=$1 types=$2 suite=$3 mirror
	local keyring=/usr/share/keyrings/debian-archive-keyring.gpg
	mirror=$(debian_mirror)
	[ -n "$mirror" ] || { msg "no Debian mirror found in the system's apt sources"; return 1; }
	[ -f "$keyring" ] || { msg "missing $keyring (package debian-archive-keyring)"; return 1; }
	rm -rf "${dir:?}"/*
	mkdir -p "$dir/parts" "$dir/lists/partial" "$dir/cache/archives/partial"
	cat > "$dir/parts/extra.sources" <<SRC
Types: $types
URIs: $mirror
Suites: $suite
Components: main
Signed-By: $keyring
SRC
	apt_opts=(-o "Dir::Etc::SourceList=/dev/null"
		  -o "Dir::Etc::SourceParts=$dir/parts"
		  -o "Dir::State::Lists=$dir/lists"
		  -o "Dir::Cache=$dir/cache"
		  -o "Dir::State::status=/var/lib/dpkg/status"
		  -o "APT::Get::List-Cleanup=0"
		  -o "APT::Sandbox::User=root")
}

# The series is grouped by the tree each part goes to: kernel/patches/series
# lists the groups (directories of kernel/patches) in the order they apply,
# each with the groups it needs; a group holds 0000-cover-letter.patch and
# its patches.
series_file=$patches/series
series_groups() {
	[ -f "$series_file" ] || return 0
	awk '!/^#/ && NF { print $1 }' "$series_file"
}
series_group_deps() {
	awk -v g="$1" '!/^#/ && $1 == g { for (i = 2; i <= NF && $i !~ /^#/; i++) print $i }' "$series_file"
}
# The patch files of one group (no cover letter), or of the whole series.
group_patches() {
	local p
	for p in "$patches/$1"/[0-9][0-9][0-9][0-9]-*.patch; do
		[ -f "$p" ] || continue
		case $p in */0000-cover-letter.patch) continue ;; esac
		echo "$p"
	done
}
series_patches() {
	local g
	for g in $(series_groups); do group_patches "$g"; done
}

# The objects of the C files the work tree's commit $2 changed since base
# that the kernel of flavour $1 builds (as built with the whole series):
# single-object builds of files a flavour does not configure would fail.
series_objects() {
	local f
	for f in $(git -C "$tree" diff --name-only --diff-filter=AM base "$2" -- '*.c'); do
		[ -f "$build/obj-$1/${f%.c}.o" ] && echo "${f%.c}.o"
	done
}
