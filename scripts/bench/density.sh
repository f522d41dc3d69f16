#!/usr/bin/env bash
# How many idle VMs this host sustains, booted in batches through a scale
# set, and what each VMM costs beyond its guest's memory; plus the
# `nimbus up` figures: VMs created per second (VMMs started, not waiting for
# the guests) and the time until every guest of the first batch is ready.
#
# Usage: scripts/bench/density.sh [TARGET (default 50)] [BATCH (default 4)]
#        [MEMORY_MIB (default 64)] [BOOT_LIMIT_S (default 900)]
#
# Runs its own nimbus-netd in a private network namespace (nbench-density-PID)
# and state directory; everything is removed on exit, also on failure.
# A batch is `nimbus scale idle N --wait-ready`; the run stops at TARGET, when
# a batch's guests are not all ready within BOOT_LIMIT_S, or when
# MemAvailable would drop under 1 GiB.
#
# Per VM: RSS of the nimbus-vmm process, the RSS of its guest-memory mapping
# (the guest pages it touched) from /proc/PID/smaps, and the difference, the
# VMM's own overhead; plus its CPU use while idle (a 10 s sample).
set -euo pipefail
cd "$(dirname "$0")/../.."

target=${1:-50}
batch=${2:-4}
memory=${3:-64}
limit=${4:-900}

bin=${NIMBUS_BIN_DIR:-target/release}
nimbus=$bin/nimbus
[ -x "$nimbus" ] && [ -x "$bin/nimbus-vmm" ] || cargo build --release --locked --workspace --bins
"$nimbus" image build >&2

ns=nbench-density-$$
work=$(mktemp -d /tmp/nimbus-density.XXXXXX)
export NIMBUS_STATE_DIR=$work/state NIMBUS_NETD_SOCKET=$work/netd/netd.sock NIMBUS_LOG=warn
netd_pid=
cleanup() {
  set +e
  if [ -f "$work/idle.yaml" ]; then
    if ! ip netns exec "$ns" "$nimbus" down "$work/idle.yaml" >"$work/down.log" 2>&1; then
      echo "nimbus down failed:" >&2
      tail -5 "$work/down.log" >&2
    fi
  fi
  # VMMs still running (a failed down): by the pids of their run records,
  # then whatever else runs in the namespace (all started by this script).
  for f in "$NIMBUS_STATE_DIR"/vms/*/run.json; do
    [ -f "$f" ] || continue
    pid=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["pid"])' "$f" 2>/dev/null)
    [ -n "$pid" ] && kill -9 "$pid" 2>/dev/null
  done
  [ -n "$netd_pid" ] && kill "$netd_pid" 2>/dev/null && wait "$netd_pid" 2>/dev/null
  for p in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$p" 2>/dev/null; done
  ip netns del "$ns" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

ip netns add "$ns"
ip -n "$ns" link set lo up
ip netns exec "$ns" "$nimbus" netd run --public-pool 203.0.113.0/24 --state-dir "$work/netd" \
  >"$work/netd.log" 2>&1 &
netd_pid=$!
for _ in $(seq 1 100); do
  [ -S "$NIMBUS_NETD_SOCKET" ] && "$nimbus" vnet list >/dev/null 2>&1 && break
  sleep 0.1
done

write_file() { # replicas
  cat >"$work/idle.yaml" <<EOF
name: density
vnets:
  app:
    address_space: 10.77.0.0/16
    subnets: {idle: {cidr: 10.77.0.0/20}}
scale_sets:
  idle: {replicas: $1, subnet: idle, cpus: 1, memory: ${memory}M}
EOF
}

# Per-VM memory: "rss_kib guest_kib overhead_kib" for each running VMM.
vm_memory() {
  for pid in $(pgrep -f "nimbus-vmm --name density-idle-" || true); do
    python3 - "$pid" "$memory" <<'PY'
import sys
pid, mib = sys.argv[1], int(sys.argv[2])
rss = guest = 0
size = 0
for line in open(f"/proc/{pid}/smaps"):
    f = line.split()
    if len(f) >= 2 and f[0] == "Size:":
        size = int(f[1])
    elif len(f) >= 2 and f[0] == "Rss:":
        rss += int(f[1])
        if size == mib * 1024:
            guest += int(f[1])
print(rss, guest, rss - guest)
PY
  done
}

median() { sort -n | awk '{a[NR]=$1} END {if (NR==0) print "-"; else print a[int((NR+1)/2)]}'; }

echo "target=$target batch=$batch memory=${memory}MiB boot_limit=${limit}s host: $(nproc) cores, $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo)"

# First batch: VMs created per second (no waiting), then time to readiness.
write_file "$batch"
t0=$(date +%s.%N)
ip netns exec "$ns" "$nimbus" up "$work/idle.yaml" >"$work/up.log"
t1=$(date +%s.%N)
python3 - "$t0" "$t1" "$batch" <<'PY'
import sys
t0, t1, n = float(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
print(f"nimbus up: {n} VMs created and started in {t1 - t0:.2f} s ({n / (t1 - t0):.1f} VMs/s)")
PY
ready_all() { # count
  local want=$1 deadline=$(( $(date +%s) + limit ))
  while [ "$(date +%s)" -lt "$deadline" ]; do
    local n
    n=$(grep -l NIMBUS_READY "$NIMBUS_STATE_DIR"/vms/density-idle-*/console.log 2>/dev/null | wc -l)
    [ "$n" -ge "$want" ] && return 0
    sleep 2
  done
  return 1
}
if ! ready_all "$batch"; then
  echo "first batch: not all $batch guests ready within ${limit}s"; exit 1
fi
t2=$(date +%s.%N)
python3 -c "import sys; print(f'first batch: all $batch guests ready {float(sys.argv[2]) - float(sys.argv[1]):.1f} s after nimbus up started')" "$t0" "$t2"

running=$batch
report() {
  local mem cpu0 cpu1
  mem=$(vm_memory)
  cpu0=$(for p in $(pgrep -f "nimbus-vmm --name density-idle-"); do awk '{print $14+$15}' /proc/"$p"/stat; done | awk '{s+=$1} END {print s+0}')
  sleep 10
  cpu1=$(for p in $(pgrep -f "nimbus-vmm --name density-idle-"); do awk '{print $14+$15}' /proc/"$p"/stat; done | awk '{s+=$1} END {print s+0}')
  printf '%3d VMs running: VMM RSS median %s KiB, guest touched %s KiB, VMM overhead median %s KiB; idle CPU %s %% of a core per VM; load %s; MemAvailable %s MiB\n' \
    "$running" \
    "$(awk '{print $1}' <<<"$mem" | median)" "$(awk '{print $2}' <<<"$mem" | median)" \
    "$(awk '{print $3}' <<<"$mem" | median)" \
    "$(python3 -c "print(round(($cpu1-$cpu0)/10/$running, 1))")" \
    "$(cut -d' ' -f1 /proc/loadavg)" "$(awk '/MemAvailable/ {print int($2/1024)}' /proc/meminfo)"
}
report
while [ "$running" -lt "$target" ]; do
  next=$(( running + batch > target ? target : running + batch ))
  avail=$(awk '/MemAvailable/ {print int($2/1024)}' /proc/meminfo)
  if [ $(( avail - (next - running) * (memory + 32) )) -lt 1024 ]; then
    echo "stopping: MemAvailable ${avail} MiB"; break
  fi
  write_file "$next"
  t=$(date +%s)
  if ! timeout "$limit" ip netns exec "$ns" "$nimbus" scale idle "$next" --file "$work/idle.yaml" \
      --wait-ready "$limit" >"$work/scale.log" 2>&1; then
    echo "batch to $next failed or took over ${limit}s:"; tail -3 "$work/scale.log"; break
  fi
  running=$next
  echo "batch to $running: ready in $(( $(date +%s) - t )) s"
  report
done
failed=$("$nimbus" vm list --output json | python3 -c "import json,sys; print(sum(1 for v in json.load(sys.stdin) if v['state'] != 'running'))")
echo "peak: $running idle ${memory} MiB VMs running at once ($failed not running)"
