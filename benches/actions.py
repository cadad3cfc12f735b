#!/usr/bin/env python3
"""What actions cost: csync alone, 3 nodes on loopback, trees on /dev/shm.

n1 pushes to n2 and n3. The same workloads run with a group without actions
(baseline) and with an action matching every file (`exec "true"`), in the same
run, alternating, so the ratio is what the action machinery adds: the journal
rows written before each apply, the gate, running the command once, and the
ack after it. Median wall time of `csync -x` on n1 over RUNS runs:

  initial    first sync of FILES files of 1-4 KiB (fresh indexes, empty peers)
  one        one file rewritten among FILES (the everyday reload case)

    python3 benches/actions.py [--runs 7] [--files 2000]

Needs only a release build (cargo build --release) and loopback 127.0.66.x.
"""
import argparse
import os
import random
import shutil
import socket
import statistics
import subprocess
import tempfile
import time

BIN = os.path.abspath("target/release/csync")
IPS = {n: f"127.0.66.{i}" for i, n in enumerate(["n1", "n2", "n3"], 1)}

CFG = """
group g {{
    host n1@{n1} n2@{n2} n3@{n3};
    key csync2.key;
    include %p%;
{action}
}}
prefix p {{ on n1: {w}/n1/root; on n2: {w}/n2/root; on n3: {w}/n3/root; }}
"""
ACTION = '    action { exec "true"; logfile "/dev/null"; }'


def node(w, n, *args, check=True):
    env = dict(os.environ, CSYNC2_SYSTEM_DIR=f"{w}/{n}/etc")
    cmd = [BIN, "-N", n, "-D", f"{w}/{n}/db", "-p", str(PORT), *args]
    return subprocess.run(cmd, env=env, check=check, capture_output=True)


def wait_port(addr):
    end = time.time() + 10
    while time.time() < end:
        try:
            socket.create_connection((addr, PORT), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.02)
    raise SystemExit(f"no listener on {addr}")


def setup(w, with_action):
    subprocess.run([BIN, "--new-ca", f"{w}/ca"], check=True, capture_output=True)
    subprocess.run([BIN, "-k", f"{w}/key"], check=True)
    daemons = []
    for n in IPS:
        os.makedirs(f"{w}/{n}/root", exist_ok=True)
        subprocess.run([BIN, "--new-cert", n, "--ca", f"{w}/ca", "--out", f"{w}/{n}/etc"],
                       check=True, capture_output=True)
        shutil.copy(f"{w}/key", f"{w}/{n}/etc/csync2.key")
        with open(f"{w}/{n}/etc/csync2.cfg", "w") as f:
            f.write(CFG.format(w=w, action=ACTION if with_action else "", **IPS))
    for n in IPS:
        env = dict(os.environ, CSYNC2_SYSTEM_DIR=f"{w}/{n}/etc")
        daemons.append(subprocess.Popen(
            [BIN, "-N", n, "-D", f"{w}/{n}/db", "-p", str(PORT), "-ii"], env=env,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    for n in IPS:
        wait_port(IPS[n])
    return daemons


def populate(root, files):
    rnd = random.Random(7)
    for i in range(files):
        d = os.path.join(root, f"d{i % 20}")
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, f"f{i}"), "wb") as f:
            f.write(rnd.randbytes(rnd.randint(1024, 4096)))


def timed_x(w):
    t = time.perf_counter()
    node(w, "n1", "-x")
    return time.perf_counter() - t


def one_round(files, with_action):
    w = tempfile.mkdtemp(prefix="csync-act-", dir="/dev/shm")
    daemons = setup(w, with_action)
    try:
        populate(f"{w}/n1/root", files)
        initial = timed_x(w)
        with open(f"{w}/n1/root/d3/f3", "wb") as f:
            f.write(os.urandom(2048))
        one = timed_x(w)
        return initial, one
    finally:
        for d in daemons:
            d.terminate()
            d.wait()
        shutil.rmtree(w)


def main():
    global PORT
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--files", type=int, default=2000)
    a = ap.parse_args()
    PORT = 21000 + random.randrange(20000)
    res = {False: [], True: []}
    for _ in range(a.runs):
        for with_action in (False, True):
            res[with_action].append(one_round(a.files, with_action))
    print(f"{a.files} files, median of {a.runs} runs (s)")
    print(f"{'workload':<10} {'no action':>10} {'action':>10} {'ratio':>7}")
    for i, name in enumerate(["initial", "one"]):
        base = statistics.median(r[i] for r in res[False])
        act = statistics.median(r[i] for r in res[True])
        print(f"{name:<10} {base:>10.3f} {act:>10.3f} {act / base:>7.2f}")


if __name__ == "__main__":
    main()
