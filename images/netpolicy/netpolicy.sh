#!/bin/sh
# gpuhub's network policy for the users' network (compose service netpolicy).
#
# User servers run code their users write, so what a server can reach over the network is kept to
# what it needs. Docker's own switch for the users' bridge, com.docker.network.bridge.enable_icc=
# false (set in docker-compose.yml), drops new connections between two containers on it, the
# hub's and the proxy's included; everything else (the host, the LAN, other Docker networks'
# published ports, cloud metadata) Docker lets through. This script keeps four sets of rules,
# in chains of its own:
#
# 1. Inside the users' subnet (chain GPUHUB-<hash>, jumped to from DOCKER-USER, the chain Docker
#    keeps for its users and evaluates before its own rules):
#      hub   -> servers      any port (the hub checks that a server is up)
#      proxy -> servers      any port (every browser request)
#      servers -> hub        8081, the hub's API (OAuth, activity)
#      servers -> proxy      80 and 443 (the public entrypoints; Traefik's API port stays closed)
#      replies of the above; anything else (one server to another): dropped
# 2. From the subnet to other addresses, forwarded (chain GPUHUB-<hash>-OUT, from DOCKER-USER):
#    public addresses stay reachable (pip, conda, git, datasets); dropped are the private and
#    special ranges (RFC 1918, 100.64/10, link-local 169.254/16 with every cloud's metadata
#    service, loopback, multicast, reserved), the networks the host is directly connected to
#    whatever their addresses, and so other Docker networks and the ports other stacks publish
#    (Docker translates those to a container's private address before this chain sees them).
#    Kept: DNS (port 53) to any address, because Docker's embedded resolver (127.0.0.11 in the
#    container) forwards a server's queries from the server's own address to the host's
#    resolvers, which are often private; and the hub's and the proxy's own traffic.
# 3. From the subnet to the host itself (chain GPUHUB-<hash>-HOST, jumped to from INPUT: traffic
#    to any of the host's addresses, the bridge's gateway included, never passes FORWARD):
#    dropped, but replies and DNS (port 53, for a resolver on the host), and the hub's and the
#    proxy's traffic.
# 4. IPv6: the users' network has none (no enable_ipv6), but containers and the bridge still get
#    link-local fe80:: addresses, over which servers could reach one another and the host. Every
#    IPv6 packet from the users' bridge is dropped (ip6tables INPUT and FORWARD, chain
#    GPUHUB-<hash>).
#
# It runs in the host's network namespace with NET_ADMIN (and NET_RAW, which iptables needs to
# open its socket), listens on nothing, holds no secret, re-applies the rules every
# GPUHUB_NETPOLICY_SECONDS when they are missing or out of date (after a firewall reload, a dockerd
# restart, a new host network) and removes them when stopped. `check` is the healthcheck.
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
# One set of chains per subnet, so that two stacks on one host (their subnets differ) keep apart.
chain="GPUHUB-$(printf '%s' "$subnet" | md5sum | cut -c1-8)"
chain_out="$chain-OUT"
chain_host="$chain-HOST"
# Never reachable from a server, whatever the host's routes (see 2 above).
SPECIAL="0.0.0.0/8 10.0.0.0/8 100.64.0.0/10 127.0.0.0/8 169.254.0.0/16 172.16.0.0/12 192.0.0.0/24 \
192.168.0.0/16 198.18.0.0/15 224.0.0.0/4 240.0.0.0/4"

case "${GPUHUB_SERVER_TO_SERVER:-false}" in
  true) isolate=0 ;;
  false) isolate=1 ;;
  *) fail "GPUHUB_SERVER_TO_SERVER: '${GPUHUB_SERVER_TO_SERVER}' is not true or false" ;;
esac

# Docker programs the firewall with iptables-nft or iptables-legacy, whichever the host's
# iptables is; use the one that holds Docker's DOCKER-USER chain (and its IPv6 twin).
ipt=
for candidate in iptables-nft iptables-legacy; do
  if "$candidate" -w -n -L DOCKER-USER >/dev/null 2>&1; then ipt=$candidate; break; fi
done
ip6t=ip6${ipt#ip}  # iptables-nft -> ip6tables-nft

# The users' bridge: the interface the host routes the subnet to (Docker names it br-<id>).
bridge() { ip -4 -o route show exact "$subnet" table main 2>/dev/null | awk '{for (i = 1; i < NF; i++) if ($i == "dev") print $(i + 1)}' | head -n 1; }

# The networks the host is directly connected to, but the users' own.
# (Addresses as iptables -S prints them: a lone host gets its /32; "default" and the like are skipped.)
connected() {
  ip -4 -o route show scope link table main 2>/dev/null \
    | awk -v own="$subnet" '$1 != own && $1 ~ /^[0-9.]+(\/[0-9]+)?$/ {print ($1 ~ /\//) ? $1 : $1 "/32"}' | sort -u
}

# The rules of each chain, one per line, in the order they must appear (iptables -S prints them so).
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

# RETURN, not ACCEPT: what this chain lets by still meets Docker's own rules after DOCKER-USER.
wanted_out() {
  echo "-A $chain_out -m conntrack --ctstate RELATED,ESTABLISHED -j RETURN"
  echo "-A $chain_out -s $hub/32 -j RETURN"
  echo "-A $chain_out -s $proxy/32 -j RETURN"
  echo "-A $chain_out -p udp -m udp --dport 53 -j RETURN"
  echo "-A $chain_out -p tcp -m tcp --dport 53 -j RETURN"
  for net in $SPECIAL $(connected); do
    echo "-A $chain_out -d $net -j DROP"
  done
}

wanted_host() {
  cat <<RULES
-A $chain_host -m conntrack --ctstate RELATED,ESTABLISHED -j RETURN
-A $chain_host -s $hub/32 -j RETURN
-A $chain_host -s $proxy/32 -j RETURN
-A $chain_host -p udp -m udp --dport 53 -j RETURN
-A $chain_host -p tcp -m tcp --dport 53 -j RETURN
-A $chain_host -j DROP
RULES
}

wanted6() {
  echo "-A $chain -j DROP"
}

# "TOOL TABLE-CHAIN JUMP-RULE" for each jump into our chains; the bridge is looked up each time.
jumps() {
  br=$(bridge)
  echo "$ipt DOCKER-USER -s $subnet -d $subnet -j $chain"
  echo "$ipt DOCKER-USER -s $subnet ! -d $subnet -j $chain_out"
  echo "$ipt INPUT -s $subnet -j $chain_host"
  echo "$ip6t INPUT -i $br -j $chain"
  echo "$ip6t FORWARD -i $br -j $chain"
}

# Our jumps as they stand now, in the same form (to remove stale ones, e.g. an old bridge's).
current_jumps() {
  for tool in "$ipt" "$ip6t"; do
    for parent in DOCKER-USER INPUT FORWARD; do
      $tool -w -S "$parent" 2>/dev/null | grep -E -- "-j ($chain|$chain_out|$chain_host)\$" \
        | sed "s/^-A $parent /$tool $parent /"
    done
  done
}

rules_of() { $1 -w -S "$2" 2>/dev/null | grep -v '^-N'; }

present() {
  [ -n "$ipt" ] && [ -n "$(bridge)" ] || return 1
  [ "$(rules_of "$ipt" "$chain")" = "$(wanted)" ] || return 1
  [ "$(rules_of "$ipt" "$chain_out")" = "$(wanted_out)" ] || return 1
  [ "$(rules_of "$ipt" "$chain_host")" = "$(wanted_host)" ] || return 1
  [ "$(rules_of "$ip6t" "$chain")" = "$(wanted6)" ] || return 1
  [ "$(current_jumps | sort)" = "$(jumps | sort)" ] || return 1
}

fill() {  # fill TOOL CHAIN RULES...: the chain made (if new) and given exactly these rules
  tool=$1 name=$2
  $tool -w -N "$name" 2>/dev/null || true
  $tool -w -F "$name"
  printf '%s\n' "$3" | while read -r rule; do
    # shellcheck disable=SC2086
    $tool -w $rule
  done
}

apply() {
  fill "$ipt" "$chain" "$(wanted)"
  fill "$ipt" "$chain_out" "$(wanted_out)"
  fill "$ipt" "$chain_host" "$(wanted_host)"
  fill "$ip6t" "$chain" "$(wanted6)"
  want=$(jumps)
  current_jumps | while read -r tool parent rule; do
    printf '%s\n' "$want" | grep -qxF -- "$tool $parent $rule" && continue
    # shellcheck disable=SC2086
    $tool -w -D "$parent" $rule
  done
  # inserted first in their parent chains, so that no earlier ACCEPT lets traffic by
  printf '%s\n' "$want" | while read -r tool parent rule; do
    # shellcheck disable=SC2086
    $tool -w -C "$parent" $rule 2>/dev/null || $tool -w -I "$parent" 1 $rule
  done
}

remove() {
  [ -n "$ipt" ] || return 0
  current_jumps | while read -r tool parent rule; do
    # shellcheck disable=SC2086
    $tool -w -D "$parent" $rule 2>/dev/null || true
  done
  for c in "$chain" "$chain_out" "$chain_host"; do
    $ipt -w -F "$c" 2>/dev/null || true
    $ipt -w -X "$c" 2>/dev/null || true
  done
  $ip6t -w -F "$chain" 2>/dev/null || true
  $ip6t -w -X "$chain" 2>/dev/null || true
}

# Bridged traffic meets iptables only with br_netfilter's bridge-nf-call-iptables on (Docker
# turns it on for a network with icc disabled), and ip6tables only with bridge-nf-call-ip6tables.
bridge_filtered() {
  [ "$(cat /proc/sys/net/bridge/bridge-nf-call-iptables 2>/dev/null)" = 1 ] \
    && [ "$(cat /proc/sys/net/bridge/bridge-nf-call-ip6tables 2>/dev/null)" = 1 ]
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
    [ -n "$(bridge)" ] || fail "no host interface routes $subnet (GPUHUB_USERS_SUBNET): \
is the users' network created? (docker compose up creates it)"
    trap 'remove; say "rules removed"; exit 0' TERM INT
    apply
    bridge_filtered || fail "net.bridge.bridge-nf-call-iptables or -ip6tables is not 1: bridged \
traffic bypasses the firewall (load br_netfilter: modprobe br_netfilter; sysctl -w \
net.bridge.bridge-nf-call-iptables=1 net.bridge.bridge-nf-call-ip6tables=1)"
    say "servers in $subnet isolated from one another, the host and private networks ($ipt, chains \
$chain, $chain_out, $chain_host; bridge $(bridge); hub $hub, proxy $proxy)"
    while :; do
      sleep "$interval" & wait $! || true
      if ! present; then
        say "rules missing or out of date (firewall reloaded? host networks changed?): applying them again"
        apply
      fi
    done
    ;;
  *)
    fail "unknown command '$1' (run or check)"
    ;;
esac
