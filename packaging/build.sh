#!/usr/bin/env bash
# Builds the .deb and, where rpmbuild is installed, the .rpm.
#
#   packaging/build.sh [--bin PATH] [--out DIR] [--revision N] [--gen PATH]
#
# --bin       the agent to package (default: builds target/release/eniroute)
# --out       where the packages go (default: target/packages)
# --revision  package revision instead of the changelog's (e.g. to build a
#             newer package for an upgrade test)
# --gen       an eniroute-gen binary (default: builds it from the lab crate)
#
# What goes where is described in Cargo.toml, [package.metadata.deb] and
# [package.metadata.generate-rpm], with cargo-deb's and cargo-generate-rpm's
# keys. This script does what those tools do with them: the binary stripped,
# Depends computed by dpkg-shlibdeps (so the glibc version the binary needs
# is stated; a static binary has none), rpm's requirements computed by
# rpmbuild from the ELF file, the architecture read from the binary's ELF
# header (an aarch64 build is arm64 / aarch64 whatever the build host is),
# man page and changelog compressed, md5sums.
# A script rather than cargo-deb: cargo-deb and cargo-generate-rpm are
# compiled from source (minutes of CI on two cores for every fresh machine)
# and their systemd scriptlets differ from the ones here (cargo-deb restarts
# a stopped unit on upgrade); dpkg-deb, dpkg-shlibdeps and rpmbuild are
# what they call anyway.
set -euo pipefail
cd "$(dirname "$0")/.."

bin=""
out="target/packages"
revision=""
gen=""
while [ $# -gt 0 ]; do
    case "$1" in
        --bin) bin="$2"; shift 2 ;;
        --out) out="$2"; shift 2 ;;
        --revision) revision="$2"; shift 2 ;;
        --gen) gen="$2"; shift 2 ;;
        *) echo "usage: $0 [--bin PATH] [--out DIR] [--revision N] [--gen PATH]" >&2; exit 2 ;;
    esac
done
cargo=${CARGO:-cargo}
target_dir=${CARGO_TARGET_DIR:-target}
if [ -z "$bin" ]; then
    "$cargo" build --release --bin eniroute
    bin="$target_dir/release/eniroute"
fi
if [ -z "$gen" ]; then
    "$cargo" build --quiet -p eniroute-lab --bin eniroute-gen
    gen="$target_dir/debug/eniroute-gen"
fi
mkdir -p "$out"
out=$(cd "$out" && pwd)

# --- Cargo.toml metadata ----------------------------------------------------
# The value of a one-line string key in a [section].
meta() {
    awk -v sec="[$1]" -v key="$2" '
        /^\[/ { in_sec = ($0 == sec); next }
        in_sec && index($0, key " = \"") == 1 {
            v = substr($0, length(key) + 5); sub(/"$/, "", v); print v; exit
        }' Cargo.toml
}
# The lines of a multi-line ("""…""") string or of an array, one a line.
meta_block() {
    awk -v sec="[$1]" -v key="$2" '
        /^\[/ && !inside { in_sec = ($0 == sec); next }
        in_sec && !inside && (index($0, key " = \"\"\"") == 1 || $0 == key " = [") { inside = 1; next }
        inside && ($0 == "]" || $0 ~ /"""$/) { if ($0 != "]") { v = $0; sub(/"""$/, "", v); print v }; exit }
        inside { print }' Cargo.toml
}
# Every `name = "value"` line of a [section], as "name value" (the
# dependency tables of cargo-generate-rpm: obsoletes, conflicts).
meta_pairs() {
    awk -v sec="[$1]" '
        /^\[/ { in_sec = ($0 == sec); next }
        in_sec && $2 == "=" { v = $0; sub(/^[^"]*"/, "", v); sub(/"$/, "", v); print $1, v }' Cargo.toml
}
# Field N (1-based) of a quoted-string array line such as ["a", "b", "644"].
field() { awk -F'"' -v n="$1" '{ print $(2 * n) }'; }
# The value of key K in an inline table line such as { source = "a", … }.
inline() { sed -n "s/.*[{ ,]$1 = \\(\"\\([^\"]*\\)\"\\|\\(true\\)\\).*/\\2\\3/p"; }

upstream=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)
maintainer=$(meta package.metadata.deb maintainer)
changelog=$(meta package.metadata.deb changelog)
scripts=$(meta package.metadata.deb maintainer-scripts)

# The changelog's first entry names the version and dates the build, so a
# rebuild of the same sources yields the same files.
first=$(head -n1 "$changelog")
version=$(printf '%s\n' "$first" | sed -n 's/^eniroute (\([^)]*\)).*/\1/p')
if [ "${version%-*}" != "$upstream" ]; then
    echo "$changelog: the first entry is $version, Cargo.toml says $upstream: add an entry" >&2
    exit 1
fi
[ -n "$revision" ] || revision=${version##*-}
version="$upstream-$revision"
date=$(sed -n 's/^ -- .*>  //p' "$changelog" | head -n1)
export SOURCE_DATE_EPOCH
SOURCE_DATE_EPOCH=$(date -d "$date" +%s)
man_date=$(date -u -d "@$SOURCE_DATE_EPOCH" +%Y-%m-%d)

# --- the binary -------------------------------------------------------------
# The architecture is the one the binary was built for: the ELF header's
# class (byte 4) and machine (bytes 18-19, little-endian here).
if [ "$(head -c4 "$bin" | od -An -c | tr -d ' ')" != '177ELF' ]; then
    echo "$bin: not an ELF executable" >&2
    exit 1
fi
class=$(od -An -t u1 -j4 -N1 "$bin" | tr -d ' ')
machine=$(od -An -t u2 -j18 -N2 "$bin" | tr -d ' ')
case "$class/$machine" in
    2/62) deb_arch=amd64; rpm_arch=x86_64; triple=x86_64-linux-gnu ;;
    2/183) deb_arch=arm64; rpm_arch=aarch64; triple=aarch64-linux-gnu ;;
    *) echo "$bin: ELF class $class machine $machine is not a supported architecture" >&2; exit 1 ;;
esac
# A cross build's own strip where installed; binutils' generic ELF support
# strips symbols of either architecture otherwise.
strip_tool=strip
command -v "$triple-strip" >/dev/null 2>&1 && strip_tool="$triple-strip"

gendir="$out/gen"
rm -rf "$gendir"
"$gen" --out "$gendir" --date "$man_date" >/dev/null

# The source of an asset: the agent and the generated files stand in for
# the placeholders that Cargo.toml names.
source_of() {
    case "$1" in
        target/release/eniroute) printf '%s\n' "$bin" ;;
        target/gen/*) printf '%s\n' "$gendir/${1#target/gen/}" ;;
        *) printf '%s\n' "$1" ;;
    esac
}
# Installs one file; the agent is stripped, man pages compressed as
# dh_compress does (gzip -9n: no name, no timestamp).
stage_file() { # SRC ROOT DEST MODE
    local dest="$2/${3#/}"
    install -D -m "$4" "$1" "$dest"
    case "$3" in
        */bin/*) "$strip_tool" --strip-all --remove-section=.comment "$dest" ;;
        */share/man/*) gzip -9n "$dest" ;;
    esac
}

# --- .deb -------------------------------------------------------------------
debroot="$out/deb"
rm -rf "$debroot"
mkdir -p "$debroot/DEBIAN"
while IFS= read -r line; do
    [ -n "$line" ] || continue
    stage_file "$(source_of "$(field 1 <<<"$line")")" "$debroot" \
        "$(field 2 <<<"$line")" "$(field 3 <<<"$line")"
done < <(meta_block package.metadata.deb assets)
install -D -m 0644 "$changelog" "$debroot/usr/share/doc/eniroute/changelog.Debian"
gzip -9n "$debroot/usr/share/doc/eniroute/changelog.Debian"

# dpkg-shlibdeps reads the package list of a source tree: give it one. A
# static binary (a musl build) needs no library, so $auto is empty.
depends=""
if readelf -d "$debroot/usr/bin/eniroute" | grep -q '(NEEDED)'; then
    shlibs=$(mktemp -d)
    mkdir -p "$shlibs/debian"
    printf 'Source: eniroute\n\nPackage: eniroute\nArchitecture: any\n' > "$shlibs/debian/control"
    depends=$(cd "$shlibs" && DEB_HOST_ARCH="$deb_arch" dpkg-shlibdeps -O "$debroot/usr/bin/eniroute" 2>/dev/null \
        | sed -n 's/^shlibs:Depends=//p')
    rm -rf "$shlibs"
    if [ -z "$depends" ]; then
        echo "dpkg-shlibdeps found no dependencies for $bin ($deb_arch); a cross build needs that architecture's libc6 installed (dpkg --add-architecture)" >&2
        exit 1
    fi
fi
depends=$(meta package.metadata.deb depends | sed "s/\$auto/$depends/; s/^, *//; s/, *\$//")

installed_size=$(du -sk --exclude=DEBIAN "$debroot" | cut -f1)
{
    echo "Package: eniroute"
    echo "Version: $version"
    echo "Architecture: $deb_arch"
    echo "Maintainer: $maintainer"
    echo "Installed-Size: $installed_size"
    echo "Depends: $depends"
    echo "Section: $(meta package.metadata.deb section)"
    echo "Priority: $(meta package.metadata.deb priority)"
    echo "Description: $(meta package.metadata.generate-rpm summary | sed 's/^Every/every/')"
    meta_block package.metadata.deb extended-description | sed 's/^$/./; s/^/ /'
} > "$debroot/DEBIAN/control"
sed -n 's/^conf-files = \[\(.*\)\]$/\1/p' Cargo.toml | tr -d '" ' | tr ',' '\n' \
    > "$debroot/DEBIAN/conffiles"
for s in postinst prerm postrm; do
    install -m 0755 "$scripts/$s" "$debroot/DEBIAN/$s"
done
(cd "$debroot" && find . -path ./DEBIAN -prune -o -type f -printf '%P\n' | LC_ALL=C sort \
    | xargs md5sum) > "$debroot/DEBIAN/md5sums"
deb="$out/eniroute_${version}_${deb_arch}.deb"
dpkg-deb --root-owner-group -Zxz --build "$debroot" "$deb" >/dev/null
echo "built $deb"

# --- .rpm -------------------------------------------------------------------
if ! command -v rpmbuild >/dev/null 2>&1; then
    echo "rpmbuild not installed: no .rpm (apt-get install rpm)"
    exit 0
fi
top="$out/rpmbuild"
rm -rf "$top"
mkdir -p "$top/SPECS" "$top/root"
files=""
dirs=""
while IFS= read -r line; do
    [ -n "$line" ] || continue
    src=$(source_of "$(inline source <<<"$line")")
    dest=$(inline dest <<<"$line")
    stage_file "$src" "$top/root" "$dest" "$(inline mode <<<"$line")"
    case "$dest" in */share/man/*) dest="$dest.gz" ;; esac
    attr=""
    [ "$(inline config <<<"$line")" = noreplace ] && attr="%config(noreplace) "
    [ "$(inline doc <<<"$line")" = true ] && attr="%doc "
    [ "$(inline license <<<"$line")" = true ] && attr="%license "
    files+="$attr$dest"$'\n'
    # Directories that are the package's own are removed with it.
    case "$(dirname "$dest")" in
        */eniroute) case "$dirs" in *"$(dirname "$dest")"*) ;; *) dirs+="%dir $(dirname "$dest")"$'\n' ;; esac ;;
    esac
done < <(meta_block package.metadata.generate-rpm assets)

# rpm's %changelog from the Debian one: "* DATE NAME - VERSION", "- item".
rpm_changelog=$(awk '
    /^eniroute \(/ { v = $2; gsub(/[()]/, "", v); n = 0; next }
    /^  \* / { items[++n] = "- " substr($0, 5); next }
    /^    / { items[n] = items[n] "\n  " substr($0, 5); next }
    /^ -- / {
        who = $0; sub(/^ -- /, "", who); sub(/>  .*/, ">", who)
        split(substr($0, index($0, ">  ") + 3), d, /[ ,]+/)
        printf "* %s %s %s %s %s - %s\n", d[1], d[3], d[2], d[4], who, v
        for (i = 1; i <= n; i++) print items[i]
        print ""
    }' "$changelog")

{
    echo "Name: eniroute"
    echo "Version: $upstream"
    echo "Release: $revision"
    echo "Summary: $(meta package.metadata.generate-rpm summary)"
    echo "License: Apache-2.0"
    for tag in obsoletes:Obsoletes conflicts:Conflicts; do
        meta_pairs "package.metadata.generate-rpm.${tag%%:*}" | while read -r name version; do
            if [ "$version" = "*" ]; then
                echo "${tag#*:}: $name"
            else
                echo "${tag#*:}: $name $version"
            fi
        done
    done
    # Stripping and compressing are done above, the same for both packages.
    echo "%global __os_install_post %{nil}"
    echo "%global _build_id_links none"
    echo
    echo "%description"
    meta_block package.metadata.deb extended-description
    echo
    echo "%install"
    echo "cp -a $top/root/. %{buildroot}/"
    echo
    echo "%files"
    printf '%s' "$dirs$files"
    for s in post:post_install_script preun:pre_uninstall_script postun:post_uninstall_script \
        posttrans:post_trans_script; do
        echo
        echo "%${s%%:*}"
        cat "$(meta package.metadata.generate-rpm "${s#*:}")"
    done
    echo
    echo "%changelog"
    printf '%s\n' "$rpm_changelog"
} > "$top/SPECS/eniroute.spec"
rpmbuild --quiet -bb --target "$rpm_arch" --define "_topdir $top" \
    --define "use_source_date_epoch_as_buildtime 1" --define "clamp_mtime_to_source_date_epoch 1" \
    "$top/SPECS/eniroute.spec"
rpm="$out/eniroute-$upstream-$revision.$rpm_arch.rpm"
cp "$top/RPMS/$rpm_arch/eniroute-$upstream-$revision.$rpm_arch.rpm" "$rpm"
echo "built $rpm"
