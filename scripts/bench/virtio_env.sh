# Sourced by net.sh and blk.sh: the images, the guest command line and a
# private network namespace with a bridge and a TAP for the guest, removed
# on exit. Set before sourcing: here, ns, tap, subnet (e.g. 10.78.0).
bin=${NIMBUS_BIN_DIR:-$here/../../target/release}
tool="python3 $here/virtio_tool.py"
# NIMBUS_IMAGE_DIR picks a built image directory (e.g. to compare agents);
# by default the images of this source tree, built if missing.
if [ -n "${NIMBUS_IMAGE_DIR:-}" ]; then
    kernel=$NIMBUS_IMAGE_DIR/vmlinux; initrd=$NIMBUS_IMAGE_DIR/initramfs.cpio
else
    images=$("$bin/nimbus" image build --output json)
    field() { python3 -c "import json,sys; print(json.load(sys.stdin)['$1'])" <<<"$images"; }
    kernel=$(field vmlinux); initrd=$(field initramfs)
fi
base=$("$bin/nimbus" run --print-cmdline)
work=$(mktemp -d)
cleanup() { ip netns pids "$ns" 2>/dev/null | xargs -r kill 2>/dev/null || true; ip netns del "$ns" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
ip netns add "$ns"
ip -n "$ns" link set lo up
ip -n "$ns" link add br0 type bridge
ip -n "$ns" addr add "$subnet.1/24" dev br0
ip -n "$ns" link set br0 up
ip -n "$ns" tuntap add "$tap" mode tap vnet_hdr
ip -n "$ns" link set "$tap" master br0 up
# The same MAC for both VMMs: the host's neighbour entry stays right across runs.
mac=52:54:00:6e:62:01
cmdline="$base nimbus.net=eth0,$subnet.2/24,gw=$subnet.1"
