#!/bin/sh
# gpuhub's network policy for the users' network (compose service netpolicy).
#
# User servers share one Docker bridge network. Docker's own switch for it,
# com.docker.network.bridge.enable_icc=false (set in docker-compose.yml), drops every new
# connection between two containers on that bridge, the hub's and the proxy's included. This
# script adds the exceptions, and an explicit drop so that the isolation does not hang on
# Docker's rule alone, in a chain of its own jumped to from DOCKER-USER (the chain Docker keeps
# for its users and evaluates before its own rules):
#
#   hub   -> servers      any port (the hub checks that a server is up)
#   proxy -> servers      any port (every browser request)
#   servers -> hub        8081, the hub's API (OAuth, activity)
#   servers -> proxy      80 and 443 (the public entrypoints; Traefik's API port stays closed)
#   replies of the above
#   anything else inside the subnet: dropped (one server to another)
#
# It runs in the host's network namespace with NET_ADMIN, listens on nothing, holds no secret,
# re-applies the rules every GPUHUB_NETPOLICY_SECONDS (after a firewall reload or a dockerd
# restart they come back) and removes them when stopped. `check` is the healthcheck.
#
# Settings (from docker-compose.yml): GPUHUB_USERS_SUBNET, GPUHUB_USERS_HUB_IP,
# GPUHUB_USERS_PROXY_IP, GPUHUB_SERVER_TO_SERVER (true: no isolation, nothing to do).
set -eu

say() { echo "gpuhub netpolicy: $*"; }
fail() { echo "gpuhub netpolicy: error: $*" >&2; exit 1; }

subnet=${GPUHUB_USERS_SUBNET:?GPUHUB_USERS_SUBNET is not set}
hub=${GPUHUB_USERS_HUB_IP:?GPUHUB_USERS_HUB_IP is not set}
proxy=${GPUHUB_USERS_PROXY_IP:?GPUHUB_USERS_PROXY_IP is not set}
interval=${GPUHUB_NETPOLICY_SECONDS:-5}
# One chain per subnet, so that two stacks on one host (their subnets differ) keep apart.
chain="GPUHUB-$(printf '%s' "$subnet" | md5sum | cut -c1-8)"

case "${GPUHUB_SERVER_TO_SERVER:-false}" in
  true) isolate=0 ;;
  false) isolate=1 ;;
  *) fail "GPUHUB_SERVER_TO_SERVER: '${GPUHUB_SERVER_TO_SERVER}' is not true or false" ;;
esac

# Docker programs the firewall with iptables-nft or iptables-legacy, whichever the host's
# iptables is; use the one that holds Docker's DOCKER-USER chain.
ipt=
for candidate in iptables-nft iptables-legacy; do
  if "$candidate" -w -n -L DOCKER-USER >/dev/null 2>&1; then ipt=$candidate; break; fi
done

# The rules, one per line, in the order they must appear (iptables -S prints them so).
wanted() {
  cat <<RULES
-A $chain -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A $chain -s $hub/32 -j ACCEPT
-A $chain -s $proxy/32 -j ACCEPT
-A $chain -d $hub/32 -p tcp -m tcp --dport 8081 -j ACCEPT
-A $chain -d $proxy/32 -p tcp -m multiport --dports 80,443 -j ACCEPT
-A $chain -j DROP
RULES
}

jump() { echo "-s $subnet -d $subnet -j $chain"; }

present() {
  [ -n "$ipt" ] || return 1
  [ "$($ipt -w -S "$chain" 2>/dev/null | grep -v '^-N')" = "$(wanted)" ] || return 1
  # shellcheck disable=SC2046
  $ipt -w -C DOCKER-USER $(jump) 2>/dev/null
}

apply() {
  $ipt -w -N "$chain" 2>/dev/null || true
  $ipt -w -F "$chain"
  wanted | while read -r rule; do
    # shellcheck disable=SC2086
    $ipt -w $rule
  done
  # shellcheck disable=SC2046
  $ipt -w -C DOCKER-USER $(jump) 2>/dev/null || $ipt -w -I DOCKER-USER 1 $(jump)
}

remove() {
  [ -n "$ipt" ] || return 0
  # shellcheck disable=SC2046
  while $ipt -w -D DOCKER-USER $(jump) 2>/dev/null; do :; done
  $ipt -w -F "$chain" 2>/dev/null || true
  $ipt -w -X "$chain" 2>/dev/null || true
}

# Bridged traffic meets iptables only with br_netfilter's bridge-nf-call-iptables on (Docker
# turns it on for a network with icc disabled).
bridge_filtered() {
  [ "$(cat /proc/sys/net/bridge/bridge-nf-call-iptables 2>/dev/null)" = 1 ]
}

case "${1:-run}" in
  check)
    [ "$isolate" = 0 ] && exit 0
    present && bridge_filtered
    ;;
  run)
    if [ "$isolate" = 0 ]; then
      say "GPUHUB_SERVER_TO_SERVER=true: user servers may connect to one another; no rules set"
      trap 'exit 0' TERM INT
      while :; do sleep 3600 & wait $! || true; done
    fi
    [ -n "$ipt" ] || fail "Docker's DOCKER-USER chain is in neither iptables-nft nor iptables-legacy: \
is Docker's iptables integration off (\"iptables\": false) or on its nftables backend? Isolating \
user servers needs it; GPUHUB_SERVER_TO_SERVER=true runs without isolation"
    trap 'remove; say "rules removed"; exit 0' TERM INT
    apply
    bridge_filtered || fail "net.bridge.bridge-nf-call-iptables is not 1: bridged traffic bypasses \
iptables (load br_netfilter: modprobe br_netfilter; sysctl -w net.bridge.bridge-nf-call-iptables=1)"
    say "servers in $subnet isolated from one another ($ipt, chain $chain; hub $hub, proxy $proxy)"
    while :; do
      sleep "$interval" & wait $! || true
      if ! present; then
        say "rules missing or changed (firewall reloaded?): applying them again"
        apply
      fi
    done
    ;;
  *)
    fail "unknown command '$1' (run or check)"
    ;;
esac
