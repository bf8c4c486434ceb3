#!/usr/bin/env bash
# Builds the .deb (dpkg-deb) and, where rpmbuild is installed, the .rpm.
#
#   packaging/build.sh [--bin PATH] [--out DIR]
#
# Without --bin it builds target/release/eniroute first. Both packages carry
# the same files: the agent, its systemd unit, the commented default
# configuration, the systemd-networkd drop-in that keeps networkd from
# wiping eniroute's rules, and the rt_protos name that makes `ip rule` say
# "eniroute" instead of 233.
set -euo pipefail
cd "$(dirname "$0")/.."

bin=""
out="target/packages"
while [ $# -gt 0 ]; do
    case "$1" in
        --bin) bin="$2"; shift 2 ;;
        --out) out="$2"; shift 2 ;;
        *) echo "usage: $0 [--bin PATH] [--out DIR]" >&2; exit 2 ;;
    esac
done
if [ -z "$bin" ]; then
    cargo build --release --bin eniroute
    bin=target/release/eniroute
fi

version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)
stage="$out/root"
rm -rf "$stage"
mkdir -p "$stage"
install -D -m 0755 "$bin" "$stage/usr/bin/eniroute"
install -D -m 0644 systemd/eniroute.service "$stage/usr/lib/systemd/system/eniroute.service"
install -D -m 0644 packaging/config.toml "$stage/etc/eniroute/config.toml"
install -D -m 0644 packaging/networkd/10-eniroute.conf "$stage/usr/lib/systemd/networkd.conf.d/10-eniroute.conf"
install -D -m 0644 packaging/iproute2/eniroute.conf "$stage/etc/iproute2/rt_protos.d/eniroute.conf"
install -D -m 0644 README.md "$stage/usr/share/doc/eniroute/README.md"
install -D -m 0644 docs/CONFIG.md "$stage/usr/share/doc/eniroute/CONFIG.md"

# --- .deb -----------------------------------------------------------------
deb_arch=$(dpkg --print-architecture 2>/dev/null || echo amd64)
debroot="$out/deb"
rm -rf "$debroot"
cp -a "$stage" "$debroot"
mkdir -p "$debroot/DEBIAN"
cat > "$debroot/DEBIAN/control" <<CONTROL
Package: eniroute
Version: $version
Architecture: $deb_arch
Maintainer: eniroute maintainers <eniroute@localhost>
Section: net
Priority: optional
Depends: libc6
Description: every ENI of a multi-homed EC2 instance routes its own traffic
 eniroute reads EC2 instance metadata (IMDSv2) and programs addresses, one
 route table per ENI and source-based ip rules through netlink, and keeps
 them right as ENIs and addresses come and go.
CONTROL
printf '/etc/eniroute/config.toml\n/etc/iproute2/rt_protos.d/eniroute.conf\n' > "$debroot/DEBIAN/conffiles"
cat > "$debroot/DEBIAN/postinst" <<'SCRIPT'
#!/bin/sh
set -e
if [ "$1" = configure ] && command -v systemctl >/dev/null 2>&1; then
    systemctl enable eniroute.service >/dev/null 2>&1 || true
    # Inside an image build (no running systemd) the unit starts at boot.
    if [ -d /run/systemd/system ]; then
        systemctl daemon-reload || true
        systemctl restart eniroute.service || true
    fi
fi
SCRIPT
cat > "$debroot/DEBIAN/prerm" <<'SCRIPT'
#!/bin/sh
set -e
# Stopping leaves routing in place; `eniroute cleanup` removes it.
if [ "$1" = remove ] && [ -d /run/systemd/system ]; then
    systemctl disable --now eniroute.service >/dev/null 2>&1 || true
fi
SCRIPT
chmod 0755 "$debroot/DEBIAN/postinst" "$debroot/DEBIAN/prerm"
deb="$out/eniroute_${version}_${deb_arch}.deb"
dpkg-deb --root-owner-group --build "$debroot" "$deb" >/dev/null
echo "built $deb"

# --- .rpm -----------------------------------------------------------------
if ! command -v rpmbuild >/dev/null 2>&1; then
    echo "rpmbuild not installed: no .rpm (apt-get install rpm)"
    exit 0
fi
rpm_arch=$(uname -m)
top="$(cd "$out" && pwd)/rpmbuild"
rm -rf "$top"
mkdir -p "$top/SPECS"
cat > "$top/SPECS/eniroute.spec" <<SPEC
Name: eniroute
Version: $version
Release: 1
Summary: Every ENI of a multi-homed EC2 instance routes its own traffic
License: Apache-2.0
BuildArch: $rpm_arch

%description
eniroute reads EC2 instance metadata (IMDSv2) and programs addresses, one
route table per ENI and source-based ip rules through netlink.

%install
cp -a $(cd "$stage" && pwd)/. %{buildroot}/

%files
/usr/bin/eniroute
/usr/lib/systemd/system/eniroute.service
%config(noreplace) /etc/eniroute/config.toml
/usr/lib/systemd/networkd.conf.d/10-eniroute.conf
%config(noreplace) /etc/iproute2/rt_protos.d/eniroute.conf
%doc /usr/share/doc/eniroute/README.md
%doc /usr/share/doc/eniroute/CONFIG.md

%post
systemctl enable eniroute.service >/dev/null 2>&1 || :

%preun
if [ \$1 -eq 0 ]; then systemctl disable --now eniroute.service >/dev/null 2>&1 || :; fi
SPEC
rpmbuild --quiet -bb --define "_topdir $top" "$top/SPECS/eniroute.spec"
find "$top/RPMS" -name '*.rpm' -exec cp {} "$out/" \;
echo "built $(ls "$out"/*.rpm)"
