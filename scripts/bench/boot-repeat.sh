#!/usr/bin/env bash
# Reliability: boots the default guest N times (P at a time) with
# `nimbus run --cmdline nimbus.poweroff=1` and counts the boots that reached
# the agent's readiness line and powered off cleanly (exit 0), and those that
# hit an emulation failure, a guest crash or a timeout.
#
# Usage: scripts/bench/boot-repeat.sh [N (default 10)] [P (default 2)] [CPUS (default 1)]
set -euo pipefail
cd "$(dirname "$0")/../.."

count=${1:-10}
parallel=${2:-2}
cpus=${3:-1}
nimbus=target/release/nimbus
[ -x "$nimbus" ] || cargo build --release --locked --workspace --bins
"$nimbus" image build >/dev/null

logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT
boot() {
  local i=$1 start end rc=0
  start=$(date +%s.%N)
  timeout 900 "$nimbus" run --cpus "$cpus" --memory 128M --cmdline nimbus.poweroff=1 \
    >"$logs/$i.out" 2>"$logs/$i.err" || rc=$?
  end=$(date +%s.%N)
  local verdict=ok
  if ! grep -q NIMBUS_READY "$logs/$i.out"; then verdict=no-readiness; fi
  if grep -qE "emulation failure|Kernel panic|segfault at|NIMBUS_ERROR" "$logs/$i.out" "$logs/$i.err"; then
    verdict=crash
  fi
  if [ "$rc" -ne 0 ]; then verdict="$verdict,exit=$rc"; fi
  printf 'boot %2d: %-20s %6.1f s  %s\n' "$i" "$verdict" "$(echo "$end - $start" | bc)" \
    "$(grep -o 'uptime_s=[0-9.]*' "$logs/$i.out" || true)"
}

running=0
for i in $(seq 1 "$count"); do
  boot "$i" &
  running=$((running + 1))
  if [ "$running" -ge "$parallel" ]; then
    wait -n
    running=$((running - 1))
  fi
done
wait

ok=0
for i in $(seq 1 "$count"); do
  if grep -q NIMBUS_READY "$logs/$i.out" && grep -q "exit 0" "$logs/$i.err" &&
    ! grep -qE "emulation failure|Kernel panic|segfault at|NIMBUS_ERROR" "$logs/$i.out" "$logs/$i.err"; then
    ok=$((ok + 1))
  fi
done
echo "$ok of $count boots reached readiness and powered off cleanly ($cpus vCPU, $parallel at a time)"
