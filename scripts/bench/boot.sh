#!/usr/bin/env bash
# Boot-to-readiness wall time and VMM memory overhead, nimbus against QEMU
# microvm with the same kernel, initramfs, command line and memory, runs
# alternating (nimbus, qemu, nimbus, ...) so machine drift hits both alike.
#
# Usage: scripts/bench/boot.sh [RUNS (default 5)] [MEMORY_MIB (default 128)]
# Prints each run, then the medians and the ratios nimbus/qemu.
set -euo pipefail
cd "$(dirname "$0")/../.."

runs=${1:-5}
memory=${2:-128}
timeout_s=600

nimbus=target/release/nimbus
vmm=target/release/nimbus-vmm
[ -x "$nimbus" ] && [ -x "$vmm" ] || cargo build --release --locked --workspace --bins
"$nimbus" image build >&2
images=$("$nimbus" image show --output json)
field() { python3 -c "import json,sys; print(json.load(sys.stdin)['$1'])" <<<"$images"; }
kernel=$(field vmlinux)
initrd=$(field initramfs)
# The same command line for both, as `nimbus run` composes it for this host.
cmdline=$("$nimbus" run --print-cmdline)

nimbus_cmd=("$vmm" --kernel "$kernel" --initrd "$initrd" --cmdline "$cmdline" --cpus 1 --memory "$memory")
qemu_cmd=(qemu-system-x86_64 -accel kvm -M microvm,acpi=off -m "$memory" -smp 1
  -nodefaults -no-user-config -nographic -serial stdio -no-reboot
  -kernel "$kernel" -initrd "$initrd" -append "$cmdline")

echo "kernel=$kernel"
echo "cmdline=$cmdline"
echo "runs=$runs memory=${memory}MiB"
results=$(mktemp)
trap 'rm -f "$results"' EXIT
for i in $(seq 1 "$runs"); do
  for peer in nimbus qemu; do
    if [ "$peer" = nimbus ]; then cmd=("${nimbus_cmd[@]}"); else cmd=("${qemu_cmd[@]}"); fi
    line=$(python3 scripts/bench/boot_probe.py "$memory" "$timeout_s" -- "${cmd[@]}")
    echo "run $i $peer $line"
    echo "$peer $line" >>"$results"
  done
done

python3 - "$results" <<'PY'
import json, statistics, sys
rows = {"nimbus": [], "qemu": []}
for line in open(sys.argv[1]):
    peer, data = line.split(" ", 1)
    rows[peer].append(json.loads(data))
def med(peer, key):
    values = [r[key] for r in rows[peer] if r.get(key) is not None]
    return statistics.median(values) if values else float("nan")
failed = {p: sum(1 for r in rows[p] if r.get("ready_s") is None) for p in rows}
print()
print(f"{'figure':<28}{'nimbus':>12}{'qemu':>12}{'nimbus/qemu':>14}")
for key, label, scale in [("ready_s", "boot to readiness (s)", 1),
                          ("vm_hwm_kib", "peak RSS (MiB)", 1024),
                          ("overhead_kib", "VMM overhead (MiB)", 1024)]:
    a, b = med("nimbus", key) / scale, med("qemu", key) / scale
    print(f"{label:<28}{a:>12.2f}{b:>12.2f}{a / b if b else float('nan'):>14.2f}")
print(f"runs without readiness: nimbus {failed['nimbus']}/{len(rows['nimbus'])}, "
      f"qemu {failed['qemu']}/{len(rows['qemu'])}")
PY
