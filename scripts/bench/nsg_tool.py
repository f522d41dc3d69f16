#!/usr/bin/env python3
"""Helpers for scripts/bench/nsg.sh: talk to nimbus-netd, generate rules,
and a bulk TCP sender/receiver (no external tools needed)."""
import json
import socket
import sys
import time


def call(sock_path, req):
    s = socket.socket(socket.AF_UNIX)
    s.connect(sock_path)
    f = s.makefile("rw")
    f.write(json.dumps(req) + "\n")
    f.flush()
    resp = json.loads(f.readline())
    if not resp.get("ok"):
        sys.exit(f"netd refused {req.get('op')}: {resp.get('error')}")
    return resp["result"]


def rules(count, seed):
    """`count` rules, half inbound, half outbound, in blocks of ten with
    alternating Allow/Deny (so the compiled chains have many lookups), none
    matching the benchmark's traffic (sources in 172.16.0.0/12)."""
    out = []
    per_dir = count // 2
    for d, direction in enumerate(["Inbound", "Outbound"]):
        for i in range(per_dir):
            n = seed * 100000 + d * 50000 + i
            out.append({
                "name": f"r{n}",
                "priority": 100 + i,
                "direction": direction,
                "access": "Deny" if (i // 10) % 2 else "Allow",
                "protocol": "Tcp",
                "sources": [f"172.{16 + (n >> 16) % 16}.{(n >> 8) & 255}.{n & 255}"],
                "destination_ports": [str(10000 + i % 50000)],
            })
    return out


def main():
    cmd = sys.argv[1]
    if cmd == "call":
        print(json.dumps(call(sys.argv[2], json.loads(sys.argv[3]))))
    elif cmd == "replace":  # socket nsg count seed -> seconds
        sock_path, nsg, count, seed = sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
        req = {"op": "nsg_rule_replace", "nsg": nsg, "rules": rules(count, seed)}
        t = time.monotonic()
        call(sock_path, req)
        print(f"{time.monotonic() - t:.4f}")
    elif cmd == "recv":  # port -> prints Gbit/s of the first connection
        srv = socket.socket()
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        srv.bind(("0.0.0.0", int(sys.argv[2])))
        srv.listen(1)
        print("ready", flush=True)
        conn, _ = srv.accept()
        buf = bytearray(1 << 20)
        total, t = 0, time.monotonic()
        while True:
            n = conn.recv_into(buf)
            if not n:
                break
            total += n
        print(f"{total * 8 / (time.monotonic() - t) / 1e9:.3f}", flush=True)
    elif cmd == "send":  # ip port seconds
        s = socket.create_connection((sys.argv[2], int(sys.argv[3])), timeout=5)
        data = b"\0" * (1 << 20)
        end = time.monotonic() + float(sys.argv[4])
        while time.monotonic() < end:
            s.sendall(data)
        s.close()


if __name__ == "__main__":
    main()
