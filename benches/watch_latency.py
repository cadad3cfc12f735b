#!/usr/bin/env python3
"""Watch mode latency: from a local write to the bytes on both peers.

Three nodes run `csync -ii --watch` on loopback (127.0.67.x), trees on
/dev/shm when it exists. Measured on n1's writes, polled on n2 and n3 every
millisecond:

  single   SINGLES single-file changes, one at a time (p50/p90/p99)
  burst    bursts of 100 and 1,000 new files (time until the last file of
           the burst is on both peers; median of BURSTS bursts each)
  idle     CPU time n1's process used over IDLE seconds with nothing
           changing (utime+stime from /proc/PID/stat)

    python3 benches/watch_latency.py [--singles 200] [--bursts 3] [--idle 60]
                                     [--delay MS]   (csync's --watch-delay)

Needs a release build (cargo build --release).
"""
import argparse
import os
import shutil
import socket
import statistics
import subprocess
import tempfile
import time

BIN = os.path.abspath("target/release/csync")
NODES = ["n1", "n2", "n3"]
IPS = {n: f"127.0.67.{i}" for i, n in enumerate(NODES, 1)}
PORT = 0
DELAY = None

CFG = """
group g {{
    host n1@{n1} n2@{n2} n3@{n3};
    key csync2.key;
    include %p%;
    auto younger;
}}
prefix p {{ on n1: {w}/n1/root; on n2: {w}/n2/root; on n3: {w}/n3/root; }}
"""


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def setup(w):
    subprocess.run([BIN, "--new-ca", f"{w}/ca"], check=True, capture_output=True)
    subprocess.run([BIN, "-k", f"{w}/group.key"], check=True, capture_output=True)
    for n in NODES:
        etc = f"{w}/{n}/etc"
        os.makedirs(f"{w}/{n}/root", exist_ok=True)
        subprocess.run([BIN, "--new-cert", n, "--ca", f"{w}/ca", "--out", etc],
                       check=True, capture_output=True)
        shutil.copy(f"{w}/group.key", f"{etc}/csync2.key")
        cfg = CFG.format(w=w, **IPS)
        with open(f"{etc}/csync2.cfg", "w") as f:
            f.write(cfg)
        with open(f"{w}/{n}/root/keep", "w") as f:
            f.write("keep")


def start(w, n):
    env = dict(os.environ, CSYNC2_SYSTEM_DIR=f"{w}/{n}/etc")
    log = open(f"{w}/{n}.log", "w")
    extra = ["--watch-delay", str(DELAY)] if DELAY is not None else []
    p = subprocess.Popen([BIN, "-N", n, "-D", f"{w}/{n}/db", "-p", str(PORT), "-ii", "--watch",
                          *extra],
                         env=env, stdout=subprocess.DEVNULL, stderr=log)
    end = time.time() + 10
    while time.time() < end:
        try:
            socket.create_connection((IPS[n], PORT), timeout=0.2).close()
            return p
        except OSError:
            time.sleep(0.02)
    raise SystemExit(f"{n} did not start: {open(f'{w}/{n}.log').read()}")


def wait_on_peers(w, rel, data, limit=30):
    t0 = time.monotonic()
    paths = [f"{w}/{n}/root/{rel}" for n in ("n2", "n3")]
    while time.monotonic() - t0 < limit:
        ok = True
        for p in paths:
            try:
                with open(p, "rb") as f:
                    if f.read() != data:
                        ok = False
                        break
            except OSError:
                ok = False
                break
        if ok:
            return
        time.sleep(0.001)
    raise SystemExit(f"{rel} never reached the peers")


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def cpu_ticks(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def main():
    global PORT, DELAY
    ap = argparse.ArgumentParser()
    ap.add_argument("--singles", type=int, default=200)
    ap.add_argument("--bursts", type=int, default=3)
    ap.add_argument("--idle", type=int, default=60)
    ap.add_argument("--delay", type=int, default=None)
    a = ap.parse_args()
    DELAY = a.delay
    PORT = free_port()
    base = "/dev/shm" if os.path.isdir("/dev/shm") else None
    w = tempfile.mkdtemp(prefix="csync-watch-", dir=base)
    procs = []
    try:
        setup(w)
        procs = [start(w, n) for n in NODES]
        # First contacts: wait until a first file made it.
        with open(f"{w}/n1/root/warmup", "w") as f:
            f.write("warm")
        wait_on_peers(w, "warmup", b"warm")
        lat = []
        for i in range(a.singles):
            data = f"change {i}".encode()
            t0 = time.monotonic()
            with open(f"{w}/n1/root/single", "wb") as f:
                f.write(data)
            wait_on_peers(w, "single", data)
            lat.append(time.monotonic() - t0)
        print(f"single-file change, {a.singles} changes: p50 {pct(lat, .5):.3f} s, "
              f"p90 {pct(lat, .9):.3f} s, p99 {pct(lat, .99):.3f} s, max {max(lat):.3f} s")
        for size in (100, 1000):
            times = []
            for b in range(a.bursts):
                d = f"burst{size}-{b}"
                os.makedirs(f"{w}/n1/root/{d}")
                t0 = time.monotonic()
                for i in range(size):
                    with open(f"{w}/n1/root/{d}/f{i:04}", "wb") as f:
                        f.write(f"{d} {i}".encode())
                last = f"{d}/f{size - 1:04}"
                wait_on_peers(w, last, f"{d} {size - 1}".encode())
                for i in range(size):
                    wait_on_peers(w, f"{d}/f{i:04}", f"{d} {i}".encode())
                times.append(time.monotonic() - t0)
            print(f"burst of {size} files: median {statistics.median(times):.3f} s "
                  f"(all: {', '.join(f'{t:.3f}' for t in times)})")
        time.sleep(2)  # let the last retries and actions settle
        hz = os.sysconf("SC_CLK_TCK")
        before = cpu_ticks(procs[0].pid)
        time.sleep(a.idle)
        used = (cpu_ticks(procs[0].pid) - before) / hz
        print(f"idle: {used:.3f} s CPU in {a.idle} s ({100 * used / a.idle:.3f} %)")
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait()
        shutil.rmtree(w, ignore_errors=True)


if __name__ == "__main__":
    main()
