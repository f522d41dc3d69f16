#!/usr/bin/env bash
# Installs the Debian packages nimbus needs to build its binaries and guest
# images, run its tests and benchmarks. Idempotent: does nothing when all are
# present. Needs root (or sudo) only when something is missing.
set -euo pipefail

packages=(
  # guest kernel: Debian's source tarball and what building it needs
  linux-source-6.1 build-essential bc bison flex libelf-dev libssl-dev xz-utils
  # initramfs and ext4 rootfs (mkfs.ext4 -d), busybox for interactive use
  cpio busybox-static e2fsprogs
  # host networking (netd, network tests)
  iproute2 nftables
  # benchmarks: the QEMU microvm peer, /usr/bin/time, hyperfine
  qemu-system-x86 time hyperfine python3
  # load balancer benchmark: the HAProxy peer and the wrk load generator
  haproxy wrk
)

missing=()
for package in "${packages[@]}"; do
  if ! dpkg-query -W -f '${Status}' "$package" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$package")
  fi
done

if [ ${#missing[@]} -gt 0 ]; then
  echo "[deps] installing: ${missing[*]}"
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
  $sudo apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
else
  echo "[deps] Debian packages present"
fi

if ! command -v cargo >/dev/null 2>&1; then
  cat >&2 <<'MSG'
[deps] error: cargo not found. nimbus needs a current stable Rust toolchain
(Debian 12's rustc is too old). Install it with rustup
(https://rustup.rs: `curl --proto '=https' -sSf https://sh.rustup.rs | sh`),
then open a new shell and run this command again.
MSG
  exit 1
fi

# The guest agent is half the size built for musl, and every KB of the
# initramfs costs guest boot time on kvm-pvm hosts. Optional: without it the
# agent links glibc statically.
if command -v rustup >/dev/null 2>&1; then
  if ! rustup target list --installed 2>/dev/null | grep -qx x86_64-unknown-linux-musl; then
    echo "[deps] adding the Rust musl target (for a smaller guest agent)"
    rustup target add x86_64-unknown-linux-musl ||
      echo "[deps] warning: no musl target; the guest agent links glibc statically (1 MB instead of 0.46 MB, ~5 s slower boots on kvm-pvm)"
  fi
fi

if [ ! -e /dev/kvm ]; then
  echo "[deps] error: /dev/kvm does not exist: this host has no KVM (enable virtualization or load kvm)" >&2
  exit 1
fi
if [ ! -r /dev/kvm ] || [ ! -w /dev/kvm ]; then
  echo "[deps] error: /dev/kvm is not readable and writable by $(id -un) (add yourself to group kvm or run as root)" >&2
  exit 1
fi
