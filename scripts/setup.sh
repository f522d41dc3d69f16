#!/usr/bin/env bash
# One command from a fresh Debian 12 host with /dev/kvm to a booted guest:
# installs packages, builds nimbus, builds the guest images (kernel, agent,
# initramfs, rootfs) and boots the demo VM to its readiness line.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh

echo "[setup] building nimbus (release)"
cargo build --release --locked --workspace --bins

echo "[setup] building the guest images"
target/release/nimbus image build

echo "[setup] booting the demo VM (1 vCPU, 128 MiB); guest boots take about a minute on kvm-pvm hosts"
target/release/nimbus run --cpus 1 --memory 128M --cmdline nimbus.poweroff=1
echo "[setup] done: the guest reached readiness and powered off"
