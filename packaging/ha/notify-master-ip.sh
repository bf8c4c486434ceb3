#!/bin/sh
# keepalived notify_master for a floating secondary private IP: when this
# instance becomes MASTER, EC2 moves the address to one of its ENIs and
# eniroute routes it at once (before instance metadata shows it).
#
#   vrrp_instance service {
#       ...
#       notify_master "/usr/local/sbin/notify-master-ip.sh 10.0.3.100"
#   }
#
# Needs the instance profile permissions in iam-policy.json (the IP part).
set -u
ADDR=${1:?usage: notify-master-ip.sh ADDR [ENI_ID]}
ENI=${2:-}

log() { logger -t eniroute-failover -- "$*"; echo "$*" >&2; }

attempt=1
while :; do
    if [ -n "$ENI" ]; then
        eniroute takeover --ip "$ADDR" --eni "$ENI"
    else
        eniroute takeover --ip "$ADDR"
    fi
    rc=$?
    case $rc in
        0) log "took over $ADDR"; exit 0 ;;
        # Throttled, or EC2 unreachable or failing: worth another try; half
        # way (9: an IPv6 address unassigned from its holder, not yet
        # assigned here) is finished by the same takeover.
        1|8|9) ;;
        # Bad input (2), metadata or credentials (5), permission denied (6),
        # address held elsewhere without reassignment (7): retrying will not
        # help; say so and let keepalived's state show the failure.
        *) log "takeover of $ADDR failed for good (exit $rc)"; exit "$rc" ;;
    esac
    if [ "$attempt" -ge 5 ]; then
        log "takeover of $ADDR still failing after $attempt attempts (exit $rc)"
        exit "$rc"
    fi
    attempt=$((attempt + 1))
    sleep 2
done
