#!/usr/bin/env bash
# TCP throughput host->guest and guest->host through virtio-net on a TAP:
# nimbus-vmm vs QEMU microvm (virtio-net-device, vhost off: no vhost-net
# here), same kernel, initramfs, command line and TAP, in one run.
# Prints per-run figures, medians and nimbus/QEMU ratios.
#
# usage: scripts/bench/net.sh [RUNS=3] [BYTES=8388608]   (root; images built)
# env:   NIMBUS_BIN_DIR (default target/release)
set -euo pipefail
runs=${1:-3}
bytes=${2:-8388608}
here=$(cd "$(dirname "$0")" && pwd)
ns=nbench$$; tap=nbt0; subnet=10.78.0
# shellcheck source=virtio_env.sh
source "$here/virtio_env.sh"

run_one() { # $1 = nimbus|qemu
    local log=$work/$1.console pid
    if [ "$1" = nimbus ]; then
        ip netns exec "$ns" timeout 900 "$bin/nimbus-vmm" --kernel "$kernel" --initrd "$initrd" \
            --memory 128 --nic tap=$tap,mac=$mac --cmdline "$cmdline" --serial-output "$log" 2>"$work/$1.err" &
    else
        # microvm (acpi=off) announces its virtio-mmio devices on the command line itself.
        ip netns exec "$ns" timeout 900 qemu-system-x86_64 -M microvm,acpi=off -accel kvm -m 128 -nodefaults \
            -no-user-config -display none -serial "file:$log" -kernel "$kernel" -initrd "$initrd" \
            -append "$cmdline" -device isa-debug-exit,iobase=0x604,iosize=2 \
            -netdev tap,id=n0,ifname=$tap,script=no,downscript=no,vhost=off \
            -device virtio-net-device,netdev=n0,mac=$mac 2>"$work/$1.err" &
    fi
    pid=$!
    # A transfer that stalls or fails counts as a failed run, not a figure.
    if ! { ip netns exec "$ns" $tool wait $subnet.2 &&
        ip netns exec "$ns" $tool net $subnet.2 "$bytes" 2>>"$work/$1.tool"; }; then
        echo "fail fail"
    fi
    timeout 15 ip netns exec "$ns" $tool cmd $subnet.2 poweroff >/dev/null 2>&1 || true
    sleep 2; kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true
}

declare -A h2g g2h fails
# Alternating runs, so both VMMs see the same host noise.
for i in $(seq "$runs"); do
    for vmm in nimbus qemu; do
        read -r a b < <(run_one $vmm)
        echo "$vmm run $i: host->guest $a MiB/s, guest->host $b MiB/s"
        if [ "$a" = fail ]; then
            fails[$vmm]=$(( ${fails[$vmm]:-0} + 1 )); tail -3 "$work/$vmm.tool" >&2 || true
        else
            h2g[$vmm]+="$a "; g2h[$vmm]+="$b "
        fi
    done
done
echo "failed runs: nimbus ${fails[nimbus]:-0}, qemu ${fails[qemu]:-0}"
median() { tr ' ' '\n' | grep . | sort -g | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
for dir in h2g g2h; do
    declare -n m=$dir
    n=$(median <<<"${m[nimbus]:-}"); q=$(median <<<"${m[qemu]:-}")
    if [ -z "$n" ] || [ -z "$q" ]; then
        echo "$dir median: nimbus ${n:-none} MiB/s, qemu ${q:-none} MiB/s, no ratio (every run of one side failed)"
    else
        echo "$dir median: nimbus $n MiB/s, qemu $q MiB/s, ratio $(awk "BEGIN{printf \"%.2f\", $n/$q}")"
    fi
done
