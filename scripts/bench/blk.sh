#!/usr/bin/env bash
# Sequential disk throughput through virtio-blk: nimbus-vmm vs QEMU microvm
# (virtio-blk-device), same kernel, initramfs, command line and a fresh
# copy of the same raw image, in one run. The guest agent reads the whole
# disk (cold: nothing of it is cached in the guest) and then writes BYTES
# to it with fsync; the host times each command over TCP (a NIC is needed
# for that, on a TAP in a private namespace). Prints medians and ratios.
# Not measured yet: 4 KiB random-read IOPS (the agent has no random-read
# command).
#
# usage: scripts/bench/blk.sh [RUNS=3] [BYTES=33554432]   (root; images built)
set -euo pipefail
runs=${1:-3}
bytes=${2:-33554432}
here=$(cd "$(dirname "$0")" && pwd)
ns=nbenchb$$; tap=nbb0; subnet=10.79.0
# shellcheck source=virtio_env.sh
source "$here/virtio_env.sh"
disk_mib=$(( bytes / 1048576 > 64 ? bytes / 1048576 : 64 ))

run_one() { # $1 = nimbus|qemu
    local log=$work/$1.console img=$work/disk.img pid
    head -c $((disk_mib << 20)) /dev/urandom >"$img"
    if [ "$1" = nimbus ]; then
        ip netns exec "$ns" timeout 900 "$bin/nimbus-vmm" --kernel "$kernel" --initrd "$initrd" \
            --memory 128 --disk "$img" --nic tap=$tap --cmdline "$cmdline" --serial-output "$log" \
            2>"$work/$1.err" &
    else
        ip netns exec "$ns" timeout 900 qemu-system-x86_64 -M microvm -accel kvm -m 128 -nodefaults \
            -no-user-config -display none -serial "file:$log" -kernel "$kernel" -initrd "$initrd" \
            -append "$cmdline" -device isa-debug-exit,iobase=0x604,iosize=2 \
            -drive id=d0,file="$img",format=raw,if=none,cache=none -device virtio-blk-device,drive=d0 \
            -netdev tap,id=n0,ifname=$tap,script=no,downscript=no,vhost=off \
            -device virtio-net-device,netdev=n0 2>"$work/$1.err" &
    fi
    pid=$!
    ip netns exec "$ns" $tool wait 10.79.0.2
    read -r tr _ < <(ip netns exec "$ns" $tool cmd 10.79.0.2 read /dev/vda)
    read -r tw _ < <(ip netns exec "$ns" $tool cmd 10.79.0.2 write /dev/vda "$bytes")
    ip netns exec "$ns" $tool cmd 10.79.0.2 poweroff >/dev/null 2>&1 || true
    sleep 2; kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true
    awk "BEGIN{printf \"%.2f %.2f\n\", $disk_mib/$tr, $bytes/1048576/$tw}"
}

declare -A rd wr
for vmm in nimbus qemu; do
    for i in $(seq "$runs"); do
        read -r r w < <(run_one $vmm)
        echo "$vmm run $i: seq read $r MiB/s, seq write+fsync $w MiB/s"
        rd[$vmm]+="$r "; wr[$vmm]+="$w "
    done
done
median() { tr ' ' '\n' | grep . | sort -g | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
for what in rd wr; do
    declare -n m=$what
    n=$(median <<<"${m[nimbus]}"); q=$(median <<<"${m[qemu]}")
    echo "$what median: nimbus $n MiB/s, qemu $q MiB/s, ratio $(awk "BEGIN{printf \"%.2f\", $n/$q}")"
done
