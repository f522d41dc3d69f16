#!/usr/bin/env bash
# NSG benchmark (issue 4): time to apply a change with 10,000 NSG rules in
# force, and TCP throughput between two stand-in VMs (network namespaces on a
# nimbus bridge) with 10 vs 10,000 rules in force. Medians of several runs.
#
# Azure allows priorities 100-4096 per direction, so one NSG holds at most
# 7,994 rules; the 10,000 rules are split over the subnet's NSG and the
# server NIC's NSG (5,000 each, half inbound, half outbound). Each apply
# regenerates and applies the whole ruleset (all 10,000 rules) in one nft
# transaction. Runs as root; everything lives in private namespaces.
set -euo pipefail
cd "$(dirname "$0")/../.."

RUNS=${RUNS:-5}
SECONDS_PER_RUN=${SECONDS_PER_RUN:-3}
TOOL="python3 scripts/bench/nsg_tool.py"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
cargo build --release -q -p netd --bin nimbus-netd
NETD="$CARGO_TARGET_DIR/release/nimbus-netd"

P="nimbus-bench-$$"
STATE=$(mktemp -d)
SOCK="$STATE/netd.sock"
cleanup() {
  [ -n "${NETD_PID:-}" ] && kill "$NETD_PID" 2>/dev/null || true
  wait 2>/dev/null || true
  for ns in "$P-h" "$P-client" "$P-server"; do ip netns del "$ns" 2>/dev/null || true; done
  rm -rf "$STATE"
}
trap cleanup EXIT

for ns in "$P-h" "$P-client" "$P-server"; do ip netns add "$ns"; ip -n "$ns" link set lo up; done
ip netns exec "$P-h" "$NETD" --state-dir "$STATE" >"$STATE/log" 2>&1 &
NETD_PID=$!
for _ in $(seq 100); do [ -S "$SOCK" ] && break; sleep 0.05; done

call() { $TOOL call "$SOCK" "$1" >/dev/null; }
call '{"op":"nsg_create","name":"subnet-nsg"}'
call '{"op":"nsg_create","name":"nic-nsg"}'
call '{"op":"vnet_create","name":"bench","address_space":["10.9.0.0/16"]}'
call '{"op":"subnet_create","vnet":"bench","name":"s","cidr":"10.9.1.0/24","nsg":"subnet-nsg"}'
call "{\"op\":\"nic_create\",\"name\":\"server\",\"vnet\":\"bench\",\"subnet\":\"s\",\"nsg\":\"nic-nsg\",\"attach_netns\":\"$P-server\"}"
call "{\"op\":\"nic_create\",\"name\":\"client\",\"vnet\":\"bench\",\"subnet\":\"s\",\"attach_netns\":\"$P-client\"}"
SERVER_IP=$(ip -n "$P-server" -4 -o addr show dev eth0 | awk '{print $4}' | cut -d/ -f1)
sleep 1  # bridge ports reach forwarding (linkwatch)

median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

throughput() {
  local port=$((20000 + RANDOM % 20000)) out="$STATE/recv.$RANDOM"
  ip netns exec "$P-server" $TOOL recv "$port" >"$out" &
  local pid=$!
  for _ in $(seq 200); do grep -q ready "$out" 2>/dev/null && break; sleep 0.02; done
  ip netns exec "$P-client" $TOOL send "$SERVER_IP" "$port" "$SECONDS_PER_RUN"
  wait "$pid"
  tail -n1 "$out"
}

rules_in_force() {
  $TOOL call "$SOCK" '{"op":"nsg_list"}' | python3 -c 'import json,sys; print(sum(n["rules"] for n in json.load(sys.stdin)))'
}

# 10 rules in force (5 + 5).
$TOOL replace "$SOCK" subnet-nsg 6 1 >/dev/null
$TOOL replace "$SOCK" nic-nsg 4 2 >/dev/null
echo "[bench] rules in force: $(rules_in_force)"
smalls=$(for _ in $(seq "$RUNS"); do throughput; done)
echo "[bench] Gbit/s with 10 rules: $(echo $smalls)"
small=$(echo "$smalls" | median)

# 10,000 rules in force; time each apply of the NIC NSG's 5,000 rules while
# the subnet NSG's 5,000 are in force.
$TOOL replace "$SOCK" subnet-nsg 5000 3 >/dev/null
applies=$(for i in $(seq "$RUNS"); do $TOOL replace "$SOCK" nic-nsg 5000 $((10 + i)); done)
echo "[bench] apply times (s): $(echo $applies)"
apply=$(echo "$applies" | median)
echo "[bench] rules in force: $(rules_in_force)"
bigs=$(for _ in $(seq "$RUNS"); do throughput; done)
echo "[bench] Gbit/s with 10,000 rules: $(echo $bigs)"
big=$(echo "$bigs" | median)

ratio=$(python3 -c "print(f'{$big / $small:.3f}')")
echo "apply_10000_rules_s=$apply (median of $RUNS; goal < 1 s)"
echo "throughput_10_rules_gbps=$small"
echo "throughput_10000_rules_gbps=$big"
echo "throughput_ratio=$ratio (goal >= 0.9)"
