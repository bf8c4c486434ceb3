#!/bin/sh
# keepalived notify_master for a floating ENI: when this instance becomes
# MASTER, EC2 detaches the ENI from wherever it is (forcibly: the other
# instance is presumed dead) and attaches it here, and eniroute routes it as
# soon as the attach is accepted.
#
#   vrrp_instance service {
#       ...
#       notify_master "/usr/local/sbin/notify-master-eni.sh eni-0123456789abcdef0"
#   }
#
# Needs the instance profile permissions in iam-policy.json (the ENI part).
set -u
ENI=${1:?usage: notify-master-eni.sh ENI_ID [DEVICE_INDEX]}
DEVICE=${2:-}

log() { logger -t eniroute-failover -- "$*"; echo "$*" >&2; }

attempt=1
while :; do
    if [ -n "$DEVICE" ]; then
        eniroute takeover --eni "$ENI" --force-detach --device-index "$DEVICE"
    else
        eniroute takeover --eni "$ENI" --force-detach
    fi
    rc=$?
    case $rc in
        0) log "took over $ENI"; exit 0 ;;
        # Throttled or EC2 failing (1, 8), or detached but not attached here
        # yet (9: the ENI is attached nowhere, so trying again is the fix).
        1|8|9) ;;
        # Bad input such as an ENI of another availability zone (2),
        # metadata or credentials (5), permission denied (6), still in use (7).
        *) log "takeover of $ENI failed for good (exit $rc)"; exit "$rc" ;;
    esac
    if [ "$attempt" -ge 5 ]; then
        log "takeover of $ENI still failing after $attempt attempts (exit $rc)"
        exit "$rc"
    fi
    attempt=$((attempt + 1))
    sleep 2
done
