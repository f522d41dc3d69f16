#!/usr/bin/env python3
"""Client for the guest agent's test commands (port 7000), used by net.sh and blk.sh.

usage: virtio_tool.py net HOST BYTES     -> prints "h2g_mib_s g2h_mib_s"
       virtio_tool.py cmd HOST LINE       -> prints "<seconds> <answer>"
       virtio_tool.py wait HOST           -> waits until the agent answers
"""
import socket, sys, time

PORT = 7000


def pattern(n):
    out = bytearray(n + 8)
    s = 0x9E3779B97F4A7C15
    m = (1 << 64) - 1
    for i in range(0, n, 8):
        s ^= (s << 13) & m
        s ^= s >> 7
        s ^= (s << 17) & m
        out[i:i + 8] = s.to_bytes(8, "little")
    return bytes(out[:n])


def connect(host):
    return socket.create_connection((host, PORT), timeout=300)


def cmd(host, line, payload=b""):
    t = time.monotonic()
    with connect(host) as s:
        s.sendall(line.encode() + b"\n" + payload)
        data = b""
        while not data.endswith(b"\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    return time.monotonic() - t, data.decode().strip()


def main():
    what, host = sys.argv[1], sys.argv[2]
    if what == "wait":
        for _ in range(600):
            try:
                connect(host).close()
                return
            except OSError:
                time.sleep(1)
        sys.exit("agent not reachable")
    if what == "cmd":
        dt, answer = cmd(host, " ".join(sys.argv[3:]))
        print(f"{dt:.3f} {answer}")
        return
    n = int(sys.argv[3])
    data = pattern(n)
    dt_in, answer = cmd(host, f"recv {n}", data)
    assert answer.startswith(f"OK bytes={n}"), answer
    t = time.monotonic()
    got = 0
    with connect(host) as s:
        s.sendall(f"send {n}\n".encode())
        while True:
            chunk = s.recv(1 << 20)
            if not chunk:
                break
            got += len(chunk)
    dt_out = time.monotonic() - t
    assert got == n, got
    print(f"{n / dt_in / 2**20:.2f} {n / dt_out / 2**20:.2f}")


main()
