#!/usr/bin/env bash
# Builds the guest's root file system images from the agent and busybox:
#
#   build.sh AGENT_BIN OUT_DIR
#
#   OUT_DIR/initramfs.cpio       the agent as /init and nothing else (the
#                                default boot: every byte costs boot time)
#   OUT_DIR/initramfs-full.cpio  the same plus busybox, for interactive use
#   OUT_DIR/rootfs.ext4          the full tree as an ext4 image (mkfs.ext4 -d)
#
# Uncompressed on purpose: on kvm-pvm hosts the guest kernel's ring 0 runs
# in KVM's instruction emulator, where inflating a 1.3 MB gzip archive took
# 168 s and unpacking the same archive uncompressed 27 s. Busybox (2 MB) is
# left out of the default initramfs for the same reason.
#
# No root, no loop mounts, no mknod: owners are forced to 0:0 by cpio, and the
# two device nodes the kernel wants before devtmpfs is mounted (/dev/console,
# so PID 1 starts with stdin/stdout/stderr on the console, and /dev/null) are
# written as a second, hand-made newc archive appended to the first (the
# kernel unpacks concatenated archives in order).
#
# Deterministic: sorted file list, fixed mtimes (SOURCE_DATE_EPOCH, default
# 0), renumbered inodes, fixed ext4 UUID and hash
# seed, so identical inputs give identical bytes and the image cache is honest.
#
# The agent must be a static binary, e.g.:
#   RUSTFLAGS="-C target-feature=+crt-static" cargo build --release \
#       -p nimbus-agent --target x86_64-unknown-linux-gnu
#   guest-images/rootfs/build.sh \
#       target/x86_64-unknown-linux-gnu/release/nimbus-agent OUT_DIR
# It is stripped here (binutils' strip, when present) as it is staged.
#
# Environment: BUSYBOX (default /bin/busybox, from Debian's busybox-static),
# SOURCE_DATE_EPOCH.
set -euo pipefail

usage() {
    echo "usage: $0 AGENT_BIN OUT_DIR" >&2
    exit 2
}
die() {
    echo "rootfs: error: $*" >&2
    exit 1
}
log() { echo "rootfs: $*"; }

[[ $# -eq 2 ]] || usage
agent_bin=$1
out_dir=$2
busybox=${BUSYBOX:-/bin/busybox}
epoch=${SOURCE_DATE_EPOCH:-0}
umask 022
export LC_ALL=C

[[ -f $agent_bin && -x $agent_bin ]] || die "agent binary '$agent_bin' is not an executable file"
[[ -x $busybox ]] || die "busybox not found at '$busybox' (apt-get install busybox-static, or set BUSYBOX)"
for tool in cpio mkfs.ext4; do
    command -v "$tool" >/dev/null || die "'$tool' not found (apt-get install cpio e2fsprogs)"
done
# Both binaries must be static: the image has no dynamic loader or libc.
if command -v file >/dev/null; then
    for bin in "$agent_bin" "$busybox"; do
        file -L "$bin" | grep -q 'statically linked\|static-pie linked' ||
            die "'$bin' is not statically linked"
    done
fi

mkdir -p "$out_dir"
staging=$(mktemp -d "$out_dir/.staging.XXXXXX")
trap 'rm -rf "$staging" "$out_dir"/.tmp.*' EXIT
root=$staging/root
mkdir -p "$root"

log "staging tree in $root"
for dir in bin sbin usr/bin usr/sbin proc sys dev tmp mnt etc root; do
    mkdir -p "$root/$dir"
done
chmod 1777 "$root/tmp"
chmod 0700 "$root/root"

if command -v strip >/dev/null; then
    strip --strip-all -o "$root/init" "$agent_bin"
else
    cp "$agent_bin" "$root/init"
fi
chmod 0755 "$root/init"
install -m 0755 "$busybox" "$root/bin/busybox"

# Applet links (absolute, so they are right wherever the link lives). The
# agent is init: busybox's init/linuxrc are left out, and /sbin/init points
# at the agent so a disk root without init= boots it too.
applets=0
while IFS= read -r applet; do
    case $applet in
        bin/busybox | sbin/init | linuxrc) continue ;;
    esac
    mkdir -p "$root/$(dirname "$applet")"
    ln -sfn /bin/busybox "$root/$applet"
    applets=$((applets + 1))
done < <("$busybox" --list-full)
ln -sfn /init "$root/sbin/init"
[[ -e $root/bin/sh ]] || die "busybox at '$busybox' has no sh applet"

cat >"$root/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
EOF
cat >"$root/etc/group" <<'EOF'
root:x:0:
nogroup:x:65534:
EOF
chmod 0644 "$root/etc/passwd" "$root/etc/group"
find "$root" -exec touch -h -d "@$epoch" {} +
log "$(find "$root" -mindepth 1 | wc -l) entries, $applets busybox applets"

# One newc header (hex fields) for an entry without data.
newc_entry() { # name mode(octal) rdev_major rdev_minor
    local name=$1 mode=$2 major=$3 minor=$4
    local namesize=$((${#name} + 1))
    printf '070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X' \
        0 "$((8#$mode))" 0 0 1 "$epoch" 0 0 0 "$major" "$minor" "$namesize" 0
    printf '%s\0' "$name"
    # Header (110 bytes) plus name is padded to a multiple of 4.
    local pad=$(((4 - (110 + namesize) % 4) % 4))
    head -c "$pad" /dev/zero
}

# make_cpio OUT [find predicates...]: a newc archive of the staged tree
# (entries selected by the predicates) plus the device nodes.
make_cpio() {
    local out=$1
    shift
    local tmp
    tmp=$(mktemp "$out_dir/.tmp.cpio.XXXXXX")
    (
        cd "$root"
        find . -mindepth 1 "$@" -printf '%P\n' | sort |
            cpio --quiet -o -H newc -R 0:0 --renumber-inodes --ignore-devno
        newc_entry dev/console 020600 5 1
        newc_entry dev/null 020666 1 3
        newc_entry 'TRAILER!!!' 0 0 0
    ) >"$tmp"
    chmod 0644 "$tmp"
    mv -f "$tmp" "$out"
    log "$(basename "$out") $(stat -c %s "$out") bytes"
}
make_cpio "$out_dir/initramfs.cpio" ! -path ./bin/busybox ! -lname /bin/busybox
make_cpio "$out_dir/initramfs-full.cpio"

# ext4: the tree's size plus half again for metadata, and 4 MiB for the
# journal and slack, rounded up to whole MiB.
tree_kib=$(du -sk --apparent-size "$root" | cut -f1)
size_mib=$(((tree_kib * 3 / 2 + 4096 + 1023) / 1024))
# The UUID (and the directory hash seed) come from the content, so they are
# stable for the same inputs and differ when the image differs.
digest=$(sha256sum "$out_dir/initramfs-full.cpio" | cut -c1-32)
uuid="${digest:0:8}-${digest:8:4}-4${digest:13:3}-8${digest:17:3}-${digest:20:12}"
tmp_ext4=$(mktemp "$out_dir/.tmp.ext4.XXXXXX")
rm -f "$tmp_ext4"
# mke2fs ignores a fake time of 0 (it means "unset").
fake_time=$((epoch > 0 ? epoch : 1))
owner_opt="root_owner=0:0"
E2FSPROGS_FAKE_TIME=$fake_time mkfs.ext4 -q -F -L nimbus-root -U "$uuid" \
    -E "hash_seed=$uuid,$owner_opt" -d "$root" "$tmp_ext4" "${size_mib}M" >/dev/null
# mkfs.ext4 -d copies owners (the builder's), atime and ctime (now) from the
# staging files; make them root's and the fixed epoch.
{
    echo /
    find "$root" -mindepth 1 -printf '/%P\n' | sort
} | sed 's|.*|sif "&" uid 0\nsif "&" gid 0\nsif "&" atime @'"$epoch"'\nsif "&" ctime @'"$epoch"'|' \
    >"$staging/inodes.debugfs"
E2FSPROGS_FAKE_TIME=$fake_time debugfs -w -f "$staging/inodes.debugfs" "$tmp_ext4" \
    >"$staging/debugfs.log" 2>&1 || die "debugfs failed on rootfs.ext4: $(tail -3 "$staging/debugfs.log")"
chmod 0644 "$tmp_ext4"
mv -f "$tmp_ext4" "$out_dir/rootfs.ext4"
log "rootfs.ext4 ${size_mib} MiB (tree ${tree_kib} KiB)"
log "done: $out_dir"
