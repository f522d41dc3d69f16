#!/usr/bin/env bash
# Build nimbus's guest kernel from Debian's linux-source-6.1:
# tinyconfig + config.fragment + the patches in patches/, see
# /work/shared/ENVIRONMENT.md for why each piece exists.
#
#   build.sh OUT_DIR  ->  OUT_DIR/vmlinux (ELF with the PVH note)
#                         OUT_DIR/bzImage
#                         OUT_DIR/kernel-build.log (the noisy make output)
#
# The kernel tree lives in $NIMBUS_KERNEL_WORK if set (kept, and reused
# incrementally when rebuilt from the same source tarball and patches), else
# in a temporary directory next to OUT_DIR that is removed afterwards.
set -euo pipefail

readonly SOURCE_TARBALL=/usr/src/linux-source-6.1.tar.xz
readonly TREE_NAME=linux-source-6.1

usage() {
	echo "usage: $0 OUT_DIR" >&2
	exit 2
}

[[ $# -eq 1 ]] || usage
recipe_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
fragment=$recipe_dir/config.fragment
mkdir -p "$1"
out_dir=$(cd "$1" && pwd)
log=$out_dir/kernel-build.log
: >"$log"

if [[ ! -r $SOURCE_TARBALL ]]; then
	echo "[kernel] $SOURCE_TARBALL not found: apt-get install linux-source-6.1" >&2
	exit 1
fi

if [[ -n ${NIMBUS_KERNEL_WORK:-} ]]; then
	work=$NIMBUS_KERNEL_WORK
	mkdir -p "$work"
else
	work=$(mktemp -d "$(dirname "$out_dir")/nimbus-kernel-work.XXXXXX")
	trap 'rm -rf "$work"' EXIT
fi
tree=$work/$TREE_NAME

# Run a noisy command with its output in the log; on failure show the tail.
run() {
	if ! "$@" >>"$log" 2>&1; then
		echo "[kernel] FAILED: $*" >&2
		echo "[kernel] last lines of $log:" >&2
		tail -n 40 "$log" >&2
		exit 1
	fi
}

# The source tree is identified by the tarball and the patch series; the
# build by those plus the config fragment.
patches=("$recipe_dir"/patches/*.patch)
[[ -e ${patches[0]} ]] || patches=()
source_id=$( (sha256sum "$SOURCE_TARBALL" | cut -d' ' -f1
	for p in "${patches[@]}"; do basename "$p"; cat "$p"; done) | sha256sum | cut -d' ' -f1)
build_id=$( (echo "$source_id"; cat "$fragment") | sha256sum | cut -d' ' -f1)

if [[ -f $work/build.id && $(cat "$work/build.id") == "$build_id" &&
	-f $tree/vmlinux && -f $tree/arch/x86/boot/bzImage ]]; then
	echo "[kernel] up to date in $tree"
else
	rm -f "$work/build.id"
	if [[ ! -f $work/source.id || $(cat "$work/source.id") != "$source_id" ]]; then
		echo "[kernel] extracting $SOURCE_TARBALL"
		rm -rf "$tree" "$work/source.id"
		run tar -C "$work" -xf "$SOURCE_TARBALL"
		for p in "${patches[@]}"; do
			echo "[kernel] applying $(basename "$p")"
			run patch -d "$tree" -p1 --forward --batch -i "$p"
		done
		echo "$source_id" >"$work/source.id"
	else
		echo "[kernel] reusing the patched tree in $tree"
	fi

	echo "[kernel] configuring (tinyconfig + config.fragment)"
	run make -C "$tree" tinyconfig
	run "$tree/scripts/kconfig/merge_config.sh" -m -O "$tree" "$tree/.config" "$fragment"
	run make -C "$tree" olddefconfig

	# Kconfig silently drops options whose dependencies are not met; make
	# sure every line of the fragment made it into the final .config.
	missing=0
	while IFS= read -r line; do
		case $line in
		CONFIG_*=*)
			grep -qxF "$line" "$tree/.config" || {
				echo "[kernel] config: wanted '$line', got '$(grep -E "^(# )?${line%%=*}[= ]" "$tree/.config" || echo unset)'" >&2
				missing=1
			}
			;;
		"# CONFIG_"*" is not set")
			sym=${line#\# }
			sym=${sym%% *}
			if grep -q "^$sym=" "$tree/.config"; then
				echo "[kernel] config: wanted '$line', got '$(grep "^$sym=" "$tree/.config")'" >&2
				missing=1
			fi
			;;
		esac
	done <"$fragment"
	if [[ $missing -ne 0 ]]; then
		echo "[kernel] FAILED: config.fragment options did not take (dependencies?)" >&2
		exit 1
	fi

	echo "[kernel] compiling (takes ~4 min on 2 cores; log: $log)"
	# make runs in the background so that a progress line can be printed
	# every 20 s: a silent four-minute step looks like a hang.
	started=$SECONDS
	make -C "$tree" -j"$(nproc)" KBUILD_BUILD_USER=nimbus KBUILD_BUILD_HOST=nimbus \
		vmlinux bzImage >>"$log" 2>&1 &
	make_pid=$!
	while kill -0 "$make_pid" 2>/dev/null; do
		for _ in 1 2 3 4 5 6 7 8 9 10; do
			kill -0 "$make_pid" 2>/dev/null || break 2
			sleep 2
		done
		echo "[kernel] compiling: $(grep -c '^  CC' "$log" || true) files compiled, $((SECONDS - started)) s"
	done
	if ! wait "$make_pid"; then
		echo "[kernel] FAILED: make vmlinux bzImage" >&2
		echo "[kernel] last lines of $log:" >&2
		tail -n 40 "$log" >&2
		exit 1
	fi
	echo "$build_id" >"$work/build.id"
fi

cp "$tree/vmlinux" "$out_dir/vmlinux"
cp "$tree/arch/x86/boot/bzImage" "$out_dir/bzImage"
echo "[kernel] done: $out_dir/vmlinux $out_dir/bzImage"
