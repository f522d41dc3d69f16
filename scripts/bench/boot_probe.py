#!/usr/bin/env python3
"""Runs one VM command until the guest agent's readiness line, then reports
as JSON: wall seconds from start to the line, the process's peak RSS
(VmHWM) and the resident size of its guest-RAM mapping, both in KiB.

The guest-RAM mapping is the process's largest mapping whose size is the
guest memory size; what the VMM itself costs is VmHWM minus that mapping's
resident size (the guest memory the guest touched).

Usage: boot_probe.py GUEST_MEMORY_MIB TIMEOUT_S -- COMMAND [ARG...]
"""
import json
import os
import selectors
import signal
import subprocess
import sys
import time

READY = b"NIMBUS_READY"


def guest_ram_rss_kib(pid, memory_kib):
    """Rss of the mapping whose size equals guest memory (largest first)."""
    best = 0
    try:
        with open(f"/proc/{pid}/smaps", "rb") as smaps:
            size = None
            for line in smaps:
                if line.startswith(b"Size:"):
                    size = int(line.split()[1])
                elif line.startswith(b"Rss:") and size is not None:
                    if size >= memory_kib:
                        best = max(best, int(line.split()[1]))
                    size = None
    except OSError:
        pass
    return best


def vm_hwm_kib(pid):
    try:
        with open(f"/proc/{pid}/status", "rb") as status:
            for line in status:
                if line.startswith(b"VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def main():
    if len(sys.argv) < 5 or sys.argv[3] != "--":
        sys.exit(__doc__)
    memory_kib = int(sys.argv[1]) * 1024
    timeout_s = float(sys.argv[2])
    command = sys.argv[4:]
    start = time.monotonic()
    proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True)
    selector = selectors.DefaultSelector()
    selector.register(proc.stdout, selectors.EVENT_READ)
    buffer = b""
    ready_s = None
    while ready_s is None and time.monotonic() - start < timeout_s:
        if not selector.select(timeout=0.5):
            if proc.poll() is not None:
                break
            continue
        chunk = os.read(proc.stdout.fileno(), 65536)
        if not chunk:
            break
        buffer += chunk
        if READY in buffer:
            ready_s = time.monotonic() - start
        buffer = buffer[-4096:]
    # Let the guest settle, then read the memory figures of the live process.
    time.sleep(1.0)
    result = {
        "ready_s": ready_s,
        "vm_hwm_kib": vm_hwm_kib(proc.pid),
        "guest_ram_rss_kib": guest_ram_rss_kib(proc.pid, memory_kib),
    }
    result["overhead_kib"] = result["vm_hwm_kib"] - result["guest_ram_rss_kib"]
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()
    if ready_s is None:
        result["error"] = "no readiness line; last output: " + buffer[-600:].decode(errors="replace")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
