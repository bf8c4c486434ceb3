#!/bin/sh
# Bakes eniroute into an AMI: run as root on the build instance (Packer's
# shell provisioner, EC2 Image Builder's ExecuteBash, or by hand), then
# create the image. Instances launched from it configure every ENI at boot,
# before network-online.target, with no user data needed.
#
#   ami-bake.sh /path/to/eniroute_0.1.0-1_amd64.deb   (or the .rpm)
set -eu
pkg=$1

case "$pkg" in
  *.deb) DEBIAN_FRONTEND=noninteractive apt-get install -y "$pkg" ;;
  *.rpm) dnf install -y "$pkg" ;;
esac

# Ubuntu: cloud-init renders policy routing of its own for secondary NICs
# (netplan routing-policy, tables 101, 102, ...) on every new instance. Only
# one agent should route the ENIs: switch cloud-init's off. The primary NIC
# and DHCP on the secondary ones are unaffected by eniroute; eniroute adds a
# secondary ENI's primary address itself when DHCP did not.
if [ -d /etc/cloud/cloud.cfg.d ]; then
  cat > /etc/cloud/cloud.cfg.d/99-eniroute.cfg <<'CFG'
# eniroute routes every ENI; cloud-init configures the primary NIC only.
datasource:
  Ec2:
    apply_full_imds_network_config: false
CFG
fi

# The unit is enabled by the package; it starts at boot of each instance.
# Stop it on the build instance so its state under /run does not matter,
# and leave no instance-specific state in the image.
systemctl stop eniroute.service 2>/dev/null || :
systemctl is-enabled eniroute.service
cloud-init clean --logs 2>/dev/null || :
