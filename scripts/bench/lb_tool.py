#!/usr/bin/env python3
"""Helpers for scripts/bench/lb.sh: a bulk TCP sink that accepts any number
of connections, a bulk sender that reports Gbit/s, and a wrk output parser."""
import re
import socket
import sys
import threading
import time


def sink(port):
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("0.0.0.0", port))
    srv.listen(64)

    def drain(conn):
        buf = bytearray(1 << 20)
        while conn.recv_into(buf):
            pass
        conn.close()

    while True:
        conn, _ = srv.accept()
        threading.Thread(target=drain, args=(conn,), daemon=True).start()


def send(ip, port, seconds):
    """Sends for `seconds`, half-closes, waits for the sink's close: Gbit/s."""
    s = socket.create_connection((ip, port), timeout=10)
    data = b"\0" * (1 << 20)
    total, t = 0, time.monotonic()
    end = t + seconds
    while time.monotonic() < end:
        s.sendall(data)
        total += len(data)
    s.shutdown(socket.SHUT_WR)
    s.recv(1)
    print(f"{total * 8 / (time.monotonic() - t) / 1e9:.3f}")


def wrk(text):
    """wrk --latency output -> 'rps p50_ms p99_ms errors'."""
    unit = {"us": 0.001, "ms": 1.0, "s": 1000.0}

    def pct(p):
        m = re.search(rf"^\s*{p}%\s+([\d.]+)(us|ms|s)\s*$", text, re.M)
        return float(m.group(1)) * unit[m.group(2)] if m else float("nan")

    rps = re.search(r"Requests/sec:\s+([\d.]+)", text)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    err = sum(int(x) for x in errors.groups()) if errors else 0
    err += int(non2xx.group(1)) if non2xx else 0
    print(f"{float(rps.group(1)) if rps else 0:.0f} {pct(50):.3f} {pct(99):.3f} {err}")


def median(values):
    v = sorted(float(x) for x in values)
    n = len(v)
    return v[n // 2] if n % 2 else (v[n // 2 - 1] + v[n // 2]) / 2


if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "sink":
        sink(int(sys.argv[2]))
    elif cmd == "send":
        send(sys.argv[2], int(sys.argv[3]), float(sys.argv[4]))
    elif cmd == "wrk":
        wrk(sys.stdin.read())
    elif cmd == "median":
        print(f"{median(sys.argv[2:]):.3f}")
