#!/usr/bin/env bash
# Disk figures through virtio-blk: nimbus-vmm vs QEMU microvm
# (virtio-blk-device), same kernel, initramfs, command line and a fresh
# copy of the same raw image, in one run. The guest agent reads the whole
# disk, writes BYTES to it and fdatasyncs, then does 4 KiB reads at random
# offsets, all with O_DIRECT (the device moves data straight into the
# agent's buffers: the guest kernel's page-cache copies run in the
# instruction emulator on kvm-pvm and would hide the device path), timed
# inside the guest. A NIC on a TAP in a private namespace carries the
# commands. Both VMMs use the host page cache (QEMU cache=writeback, its
# default, like nimbus's buffered I/O with fdatasync on FLUSH). Prints
# medians and ratios.
#
# usage: scripts/bench/blk.sh [RUNS=3] [BYTES=33554432] [READS=2000]   (root; images built)
set -euo pipefail
runs=${1:-3}
bytes=${2:-33554432}
reads=${3:-2000}
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
            --memory 128 --disk "$img" --nic tap=$tap,mac=$mac --cmdline "$cmdline" --serial-output "$log" \
            2>"$work/$1.err" &
    else
        ip netns exec "$ns" timeout 900 qemu-system-x86_64 -M microvm,acpi=off -accel kvm -m 128 -nodefaults \
            -no-user-config -display none -serial "file:$log" -kernel "$kernel" -initrd "$initrd" \
            -append "$cmdline" -device isa-debug-exit,iobase=0x604,iosize=2 \
            -drive id=d0,file="$img",format=raw,if=none,cache=writeback -device virtio-blk-device,drive=d0 \
            -netdev tap,id=n0,ifname=$tap,script=no,downscript=no,vhost=off \
            -device virtio-net-device,netdev=n0,mac=$mac 2>"$work/$1.err" &
    fi
    pid=$!
    ip netns exec "$ns" $tool wait $subnet.2
    # Each answer is "<host seconds> OK ... mib_s=X" or "... iops=X".
    local r w o
    r=$(ip netns exec "$ns" $tool cmd $subnet.2 dread /dev/vda | grep -o 'mib_s=[0-9.]*' | cut -d= -f2 || true)
    w=$(ip netns exec "$ns" $tool cmd $subnet.2 dwrite /dev/vda "$bytes" | grep -o 'mib_s=[0-9.]*' | cut -d= -f2 || true)
    o=$(ip netns exec "$ns" $tool cmd $subnet.2 randread /dev/vda "$reads" | grep -o 'iops=[0-9]*' | cut -d= -f2 || true)
    timeout 15 ip netns exec "$ns" $tool cmd $subnet.2 poweroff >/dev/null 2>&1 || true
    sleep 2; kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true
    echo "${r:-fail} ${w:-fail} ${o:-fail}"
}

declare -A rd wr io
for i in $(seq "$runs"); do
    for vmm in nimbus qemu; do
        read -r r w o < <(run_one $vmm)
        echo "$vmm run $i: seq read $r MiB/s, seq write+fsync $w MiB/s, 4 KiB random read $o IOPS"
        rd[$vmm]+="$r "; wr[$vmm]+="$w "; io[$vmm]+="$o "
    done
done
median() { tr ' ' '\n' | grep -v fail | grep . | sort -g | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
for what in rd wr io; do
    declare -n m=$what
    n=$(median <<<"${m[nimbus]}"); q=$(median <<<"${m[qemu]}")
    echo "$what median: nimbus $n, qemu $q, ratio $(awk "BEGIN{printf \"%.2f\", $n/$q}")"
done
