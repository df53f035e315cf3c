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
#
# On a swarm (command `overlay`, one task on every node: docker-compose.swarm.yml) the users'
# network is an overlay: none of the host's chains sees its traffic. On each node Docker keeps
# the overlay in a network namespace of its own (/var/run/docker/netns/1-<network id>), where a
# bridge (br0) joins the node's containers on it and the VXLAN port to the other nodes; frames
# crossing that bridge go through that namespace's iptables FORWARD chain (br_netfilter's
# bridge-nf-call-iptables is 1 there: checked). So the task, itself on the users' network and
# given the node's namespace directory (read-only, at /netns), finds the namespace whose
# bridge holds the users' subnet, and keeps rule set 1 above there, in chain GPUHUB-S2S jumped to
# from FORWARD, with the hub's and the proxy's addresses as Swarm's DNS gives them now (tasks
# get new addresses when replaced: looked up every GPUHUB_NETPOLICY_SECONDS). Every node drops
# what crosses its own bridge, so a connection between servers on two nodes meets the rules
# twice, and one on one node once. IPv6 in that namespace is dropped (the overlay has none).
# The rules stay when the task stops (a server is not left open while the task is replaced);
# they go with the namespace when the network is removed. Capabilities: NET_ADMIN and NET_RAW,
# and SYS_ADMIN, which entering a network namespace (setns) needs. Egress from servers to private
# networks (through each node's docker_gwbridge) is not covered on a swarm yet.
set -eu

say() { echo "gpuhub netpolicy: $*"; }
fail() { echo "gpuhub netpolicy: error: $*" >&2; exit 1; }

case "${1:-run}" in
  overlay|overlay-check)  # the subnet and the addresses are found, not set (below)
    subnet=overlay hub= proxy= ;;
  *)
    subnet=${GPUHUB_USERS_SUBNET:?GPUHUB_USERS_SUBNET is not set}
    hub=${GPUHUB_USERS_HUB_IP:?GPUHUB_USERS_HUB_IP is not set}
    proxy=${GPUHUB_USERS_PROXY_IP:?GPUHUB_USERS_PROXY_IP is not set} ;;
esac
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

# --- on a swarm: the users' overlay network (commands overlay and overlay-check) -------------
netns_dir=${GPUHUB_NETNS_DIR:-/netns}
s2s=GPUHUB-S2S

# a dotted IPv4 address as a number
ip_number() { echo "$1" | awk -F. '{printf "%d\n", (($1 * 256 + $2) * 256 + $3) * 256 + $4}'; }

# in_subnet ADDRESS A.B.C.D/N: whether ADDRESS is in the subnet
in_subnet() {
  bits=${2#*/}
  size=$(( 1 << (32 - bits) ))
  [ $(( $(ip_number "$1") / size )) -eq $(( $(ip_number "${2%/*}") / size )) ]
}

# the addresses NAME has now, one per line (Swarm's DNS: a dnsrr service's tasks)
addresses() { getent ahostsv4 "$1" 2>/dev/null | awk '{print $1}' | sort -u; }

# the subnet (A.B.C.D/N, network address) of this task's interface that holds ADDRESS
own_subnet() {
  ip -4 -o addr show 2>/dev/null | awk '{print $4}' | while read -r cidr; do
    if in_subnet "$1" "$cidr"; then
      bits=${cidr#*/}; size=$(( 1 << (32 - bits) )); n=$(( $(ip_number "${cidr%/*}") / size * size ))
      echo "$(( n >> 24 & 255 )).$(( n >> 16 & 255 )).$(( n >> 8 & 255 )).$(( n & 255 ))/$bits"
      break
    fi
  done
}

# the overlay's namespace file on this node: Docker names it 1-<network id> (a container's own
# is named after its sandbox), and its bridge (br0) has an address in SUBNET, the gateway.
# (Every function here keeps to `if`: under `set -e` a loop whose last test fails ends the script.)
overlay_netns() {
  for ns in "$netns_dir"/1-*; do
    [ -e "$ns" ] || continue
    for cidr in $(nsenter --net="$ns" ip -4 -o addr show 2>/dev/null | awk '$2 ~ /^br/ {print $4}'); do
      if in_subnet "${cidr%/*}" "$1"; then
        echo "$ns"
        return 0
      fi
    done
  done
}

# the rules of chain GPUHUB-S2S for SUBNET, the hub's addresses HUBS and the proxy's PROXIES
wanted_overlay() {
  echo "-A $s2s -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT"
  for a in $2 $3; do echo "-A $s2s -s $a/32 -j ACCEPT"; done
  for a in $2; do echo "-A $s2s -d $a/32 -p tcp -m tcp --dport 8081 -j ACCEPT"; done
  for a in $3; do echo "-A $s2s -d $a/32 -p tcp -m multiport --dports 80,443 -j ACCEPT"; done
  echo "-A $s2s -j DROP"
}

# in_ns NS COMMAND...: COMMAND in the overlay's namespace
in_ns() { ns=$1; shift; nsenter --net="$ns" "$@"; }

# the iptables variant for NS (ipt, ip6t): the one that holds our chain already, else the first
# that works there (Docker keeps no chains in an overlay's namespace)
overlay_iptables() {
  for candidate in iptables-nft iptables-legacy; do
    in_ns "$1" "$candidate" -w -S "$s2s" >/dev/null 2>&1 || continue
    ipt=$candidate; ip6t=ip6${candidate#ip}; return 0
  done
  for candidate in iptables-nft iptables-legacy; do
    in_ns "$1" "$candidate" -w -S FORWARD >/dev/null 2>&1 || continue
    ipt=$candidate; ip6t=ip6${candidate#ip}; return 0
  done
  return 1
}

overlay_present() {  # overlay_present NS SUBNET HUBS PROXIES
  [ "$(in_ns "$1" "$ipt" -w -S "$s2s" 2>/dev/null | grep -v '^-N')" = "$(wanted_overlay "$2" "$3" "$4")" ] || return 1
  [ "$(in_ns "$1" "$ipt" -w -S FORWARD 2>/dev/null | grep -- "-j $s2s\$")" = "-A FORWARD -s $2 -d $2 -j $s2s" ] || return 1
  [ "$(in_ns "$1" "$ip6t" -w -S "$s2s" 2>/dev/null | grep -v '^-N')" = "-A $s2s -j DROP" ] || return 1
  [ "$(in_ns "$1" "$ip6t" -w -S FORWARD 2>/dev/null | grep -- "-j $s2s\$")" = "-A FORWARD -j $s2s" ]
}

overlay_apply() {  # overlay_apply NS SUBNET HUBS PROXIES
  fill "in_ns $1 $ipt" "$s2s" "$(wanted_overlay "$2" "$3" "$4")"
  fill "in_ns $1 $ip6t" "$s2s" "-A $s2s -j DROP"
  in_ns "$1" "$ipt" -w -S FORWARD | grep -- "-j $s2s\$" | grep -vxF -- "-A FORWARD -s $2 -d $2 -j $s2s" \
    | sed 's/^-A FORWARD //' | while read -r rule; do
      # shellcheck disable=SC2086
      in_ns "$1" "$ipt" -w -D FORWARD $rule
    done
  in_ns "$1" "$ipt" -w -C FORWARD -s "$2" -d "$2" -j "$s2s" 2>/dev/null \
    || in_ns "$1" "$ipt" -w -I FORWARD 1 -s "$2" -d "$2" -j "$s2s"
  in_ns "$1" "$ip6t" -w -C FORWARD -j "$s2s" 2>/dev/null || in_ns "$1" "$ip6t" -w -I FORWARD 1 -j "$s2s"
}

overlay() {
  mode=$1
  if [ "$isolate" = 0 ]; then
    [ "$mode" = overlay-check ] && exit 0
    say "GPUHUB_SERVER_TO_SERVER=true: user servers may connect to one another; no rules set"
    trap 'exit 0' TERM INT
    while :; do sleep 3600 & wait $! || true; done
  fi
  [ -d "$netns_dir" ] || fail "$netns_dir is not there: mount the node's /var/run/docker/netns \
(Docker's exec root, netns) there (docker-compose.swarm.yml, GPUHUB_DOCKER_NETNS_DIR)"
  last=
  trap 'say "stopped; the rules stay in the overlay namespace"; exit 0' TERM INT
  while :; do
    hubs=$(addresses hub); proxies=$(addresses proxy)
    problem=
    if [ -z "$hubs" ] || [ -z "$proxies" ]; then
      problem="the hub's or the proxy's address is not known yet (Swarm's DNS: hub '$hubs', proxy '$proxies')"
    else
      subnet=$(own_subnet "$(echo "$hubs" | head -n 1)")
      ns=
      [ -n "$subnet" ] && ns=$(overlay_netns "$subnet")
      if [ -z "$subnet" ]; then
        problem="this task has no address in the hub's subnet: is it on the users' network?"
      elif [ -z "$ns" ]; then
        problem="no network namespace in $netns_dir has a bridge in $subnet (is GPUHUB_DOCKER_NETNS_DIR \
the node's Docker exec root's netns directory?)"
      elif ! overlay_iptables "$ns"; then
        problem="neither iptables-nft nor iptables-legacy works in the overlay's namespace $ns"
      elif [ "$(in_ns "$ns" cat /proc/sys/net/bridge/bridge-nf-call-iptables 2>/dev/null)" != 1 ]; then
        problem="net.bridge.bridge-nf-call-iptables is not 1 in the overlay's namespace $ns: its \
bridged traffic bypasses iptables (load br_netfilter on the node: modprobe br_netfilter)"
      fi
    fi
    if [ "$mode" = overlay-check ]; then
      [ -z "$problem" ] && overlay_present "$ns" "$subnet" "$hubs" "$proxies"
      exit
    fi
    if [ -n "$problem" ]; then
      [ "$problem" != "$last" ] && echo "gpuhub netpolicy: waiting: $problem" >&2
      last=$problem
    elif ! overlay_present "$ns" "$subnet" "$hubs" "$proxies"; then
      overlay_apply "$ns" "$subnet" "$hubs" "$proxies"
      say "servers in $subnet kept from one another in $ns (chain $s2s; hub $(echo $hubs), proxy $(echo $proxies))"
      last=
    fi
    sleep "$interval" & wait $! || true
  done
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
  overlay|overlay-check)
    overlay "$1"
    ;;
  *)
    fail "unknown command '$1' (run, check, overlay or overlay-check)"
    ;;
esac
