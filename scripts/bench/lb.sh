#!/usr/bin/env bash
# Load balancer benchmark: nimbus's LB (nimbus-netd, release build) against
# HAProxy (TCP mode, roundrobin) over the same backends, side by side in one
# invocation, medians of RUNS runs:
#   * short HTTP requests with wrk (keep-alive, and one connection per
#     request): requests/s, p50 and p99 latency;
#   * one bulk TCP stream: Gbit/s.
# Backends are stand-in VMs (network namespaces on a netd VNet) running a
# tiny HAProxy HTTP responder and a Python bulk sink. Everything lives in
# namespaces this script creates and removes on exit.
#
# Usage: scripts/bench/lb.sh            (root; RUNS=5 SECONDS_PER_RUN=4 CONNS=50 NETD_BIN=)
set -euo pipefail
cd "$(dirname "$0")/../.."

RUNS=${RUNS:-5}
DUR=${SECONDS_PER_RUN:-4}
CONNS=${CONNS:-50}
TARGET=${CARGO_TARGET_DIR:-target}
TOOL="python3 scripts/bench/lb_tool.py"
for t in wrk haproxy python3 ip; do
  command -v "$t" >/dev/null || { echo "lb.sh: $t is missing (scripts/install-deps.sh)" >&2; exit 1; }
done
# NETD_BIN=path measures another build (e.g. a saved copy of the previous
# one, run back to back with this one).
if [ -n "${NETD_BIN:-}" ]; then NETD=$NETD_BIN; else
  cargo build --release -q -p netd
  NETD="$TARGET/release/nimbus-netd"
fi

P="nbl$$"
STATE=$(mktemp -d)
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  for ns in "$P-h" "$P-b0" "$P-b1" "$P-c"; do ip netns del "$ns" 2>/dev/null || true; done
  rm -rf "$STATE"
}
trap cleanup EXIT

for ns in "$P-h" "$P-b0" "$P-b1" "$P-c"; do ip netns add "$ns"; ip -n "$ns" link set lo up; done
ip netns exec "$P-h" "$NETD" --state-dir "$STATE" >"$STATE/netd.log" 2>&1 &
PIDS+=($!)
SOCK="$STATE/netd.sock"
for _ in $(seq 100); do [ -S "$SOCK" ] && break; sleep 0.05; done
call() { python3 scripts/bench/nsg_tool.py call "$SOCK" "$1" >/dev/null; }

call '{"op":"vnet_create","name":"bench","address_space":["10.0.0.0/16"]}'
call '{"op":"subnet_create","vnet":"bench","name":"s","cidr":"10.0.1.0/24"}'
for n in b0 b1 c; do
  call "{\"op\":\"nic_create\",\"name\":\"$n\",\"vnet\":\"bench\",\"subnet\":\"s\",\"attach_netns\":\"$P-$n\"}"
done
B0=10.0.1.4 B1=10.0.1.5
call '{"op":"lb_create","name":"bench","vnet":"bench","subnet":"s","private_ip":"10.0.1.200"}'
call '{"op":"lb_pool_create","lb":"bench","name":"pool","members":[{"nic":"b0"},{"nic":"b1"}]}'
call '{"op":"lb_rule_create","lb":"bench","name":"http","protocol":"Tcp","frontend_port":80,"pool":"pool","algorithm":"RoundRobin"}'
call '{"op":"lb_rule_create","lb":"bench","name":"bulk","protocol":"Tcp","frontend_port":5001,"pool":"pool","algorithm":"RoundRobin"}'
NIMBUS_HTTP=10.0.1.200:80 NIMBUS_BULK=10.0.1.200:5001
# HAProxy listens on the bridge's gateway address in the same namespace as
# netd: same host, same path to the backends.
HAP_HTTP=10.0.1.1:8080 HAP_BULK=10.0.1.1:5002

# Backends: a one-thread HAProxy answering 200 "ok" (fast enough not to be
# the bottleneck), and a bulk sink.
for n in b0 b1; do
  cat >"$STATE/$n.cfg" <<CFG
global
  maxconn 4000
  nbthread 1
defaults
  mode http
  timeout connect 5s
  timeout client 30s
  timeout server 30s
frontend web
  bind :80
  http-request return status 200 content-type text/plain string "ok"
CFG
  ip netns exec "$P-$n" haproxy -db -f "$STATE/$n.cfg" >"$STATE/$n.log" 2>&1 &
  PIDS+=($!)
  ip netns exec "$P-$n" $TOOL sink 5001 &
  PIDS+=($!)
done
# Like with like: netd's TCP data path runs one thread per core
# (netd/src/lb/workers.rs; its main runtime only serves the API, probes and
# UDP), so HAProxy gets one thread per core too (its own default).
LB_THREADS=$(nproc)
cat >"$STATE/lb.cfg" <<CFG
global
  maxconn 4000
  nbthread $LB_THREADS
defaults
  mode tcp
  timeout connect 5s
  timeout client 60s
  timeout server 60s
frontend http
  bind $HAP_HTTP
  default_backend http_pool
backend http_pool
  balance roundrobin
  server b0 $B0:80
  server b1 $B1:80
frontend bulk
  bind $HAP_BULK
  default_backend bulk_pool
backend bulk_pool
  balance roundrobin
  server b0 $B0:5001
  server b1 $B1:5001
CFG
ip netns exec "$P-h" haproxy -db -f "$STATE/lb.cfg" >"$STATE/haproxy.log" 2>&1 &
PIDS+=($!)
# CPU time each proxy spends per request (user + system, from /proc): less
# sensitive to the other load on the host than requests/s.
declare -A PROXY_PID=([nimbus]=${PIDS[0]} [haproxy]=$!)
TICK=$(getconf CLK_TCK)
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
sleep 2 # bridge ports reach forwarding, servers listen

in_client() { ip netns exec "$P-c" "$@"; }
# Warm-up (ARP, first connections).
for url in "http://$NIMBUS_HTTP/" "http://$HAP_HTTP/"; do in_client wrk -t1 -c4 -d1s "$url" >/dev/null; done

declare -A R
add() { R[$1]="${R[$1]:-} $2"; }
for run in $(seq "$RUNS"); do
  # Alternate who goes first so drift in the host's load hits both.
  if [ $((run % 2)) -eq 1 ]; then order="nimbus haproxy"; else order="haproxy nimbus"; fi
  for peer in $order; do
    if [ "$peer" = nimbus ]; then http=$NIMBUS_HTTP bulk=$NIMBUS_BULK; else http=$HAP_HTTP bulk=$HAP_BULK; fi
    for mode in keepalive close; do
      hdr=()
      [ "$mode" = close ] && hdr=(-H "Connection: close")
      t0=$(ticks "${PROXY_PID[$peer]}")
      read -r rps p50 p99 err < <(in_client wrk -t2 -c"$CONNS" -d"${DUR}s" --latency "${hdr[@]}" "http://$http/" | $TOOL wrk)
      t1=$(ticks "${PROXY_PID[$peer]}")
      add "$peer.$mode.rps" "$rps"; add "$peer.$mode.p50" "$p50"; add "$peer.$mode.p99" "$p99"; add "$peer.$mode.err" "$err"
      add "$peer.$mode.cpu" "$(python3 -c "import sys; t,k,r,d=map(float,sys.argv[1:]); print(f'{t*1e6/k/max(r*d,1):.1f}')" "$((t1 - t0))" "$TICK" "$rps" "$DUR")"
    done
    IFS=: read -r ip port <<<"$bulk"
    add "$peer.bulk" "$(in_client $TOOL send "$ip" "$port" "$DUR")"
  done
  echo "run $run/$RUNS done" >&2
done

med() { $TOOL median ${R[$1]}; }
ratio() { python3 -c "import sys; a,b=float(sys.argv[1]),float(sys.argv[2]); print(f'{a/b:.2f}' if b else 'n/a')" "$1" "$2"; }
echo
echo "nimbus LB vs HAProxy $(haproxy -v | head -1 | awk '{print $3}') (TCP mode, roundrobin), $LB_THREADS data-path threads each, 2 backends, wrk -t2 -c$CONNS -d${DUR}s, medians of $RUNS runs"
printf '%-28s %14s %14s %8s\n' "metric" "nimbus" "haproxy" "ratio"
for mode in keepalive close; do
  for m in rps p50 p99 cpu; do
    n=$(med "nimbus.$mode.$m"); h=$(med "haproxy.$mode.$m")
    case $m in rps) unit="req/s" ;; cpu) unit="us/req" ;; *) unit="ms" ;; esac
    printf '%-28s %14s %14s %8s\n' "http-$mode $m ($unit)" "$n" "$h" "$(ratio "$n" "$h")"
  done
  printf '%-28s %14s %14s\n' "http-$mode errors (sum)" \
    "$(echo ${R[nimbus.$mode.err]} | tr ' ' '+' | bc)" "$(echo ${R[haproxy.$mode.err]} | tr ' ' '+' | bc)"
done
n=$(med nimbus.bulk); h=$(med haproxy.bulk)
printf '%-28s %14s %14s %8s\n' "bulk TCP (Gbit/s)" "$n" "$h" "$(ratio "$n" "$h")"
echo "(ratio = nimbus / haproxy: want >= 1.0 for req/s and Gbit/s, <= 1.0 for latency and CPU)"
# Every run's values, to judge the spread on a busy host.
for k in $(printf '%s\n' "${!R[@]}" | sort); do echo "raw $k:${R[$k]}" >&2; done
