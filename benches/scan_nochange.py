#!/usr/bin/env python3
"""No-change check benchmark: `csync -cr` over N small files vs `find -printf`.

Builds a tree of N files (default 100,000) in N/100 directories, indexes it once
with `csync -cIr`, then alternates `find ROOT -printf '%s %T@\\n'` and
`csync -cr` (nothing changed) RUNS times each, warm cache, and prints the
median wall times and their ratio. Run from the repo root:

    python3 benches/scan_nochange.py [--files 100000] [--runs 11] [--dir /tmp]
"""
import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

KEY = "Qm9vdHN0cmFwS2V5Rm9yVGVzdHMuT25seS5Ob3RBU2VjcmV0LkFiY2RlZmdoaWpr"


def timed(cmd, env=None):
    t0 = time.perf_counter()
    r = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    dt = time.perf_counter() - t0
    if r.returncode != 0:
        sys.exit(f"{cmd[0]} failed ({r.returncode}): {r.stderr.decode()}")
    return dt


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=100_000)
    ap.add_argument("--runs", type=int, default=11)
    ap.add_argument("--dir", default=None, help="where to build the tree (default: $TMPDIR)")
    ap.add_argument("--keep", action="store_true")
    a = ap.parse_args()

    subprocess.run(["cargo", "build", "--release", "--quiet"], check=True)
    csync = os.path.abspath("target/release/csync")

    base = tempfile.mkdtemp(prefix="csync-bench-", dir=a.dir)
    try:
        root = os.path.join(base, "root")
        etc = os.path.join(base, "etc")
        os.makedirs(etc)
        dirs = max(1, a.files // 100)
        rnd = random.Random(42)
        t0 = time.perf_counter()
        for d in range(dirs):
            dp = os.path.join(root, f"d{d:04d}")
            os.makedirs(dp)
            for f in range(a.files // dirs):
                with open(os.path.join(dp, f"f{f:03d}.txt"), "wb") as fh:
                    fh.write(rnd.randbytes(rnd.randint(1024, 4096)))
        made = time.perf_counter() - t0
        with open(os.path.join(etc, "csync2.key"), "w") as fh:
            fh.write(KEY + "\n")
        with open(os.path.join(etc, "csync2.cfg"), "w") as fh:
            fh.write(
                "group bench { host n1 n2; key csync2.key; include %r%; exclude *~; }\n"
                f"prefix r {{ on n1: {root}; }}\n"
            )
        env = dict(os.environ, CSYNC2_SYSTEM_DIR=etc)
        base_cmd = [csync, "-N", "n1", "-D", os.path.join(base, "db")]
        init = timed(base_cmd + ["-cIr"], env)
        find_cmd = ["find", root, "-printf", "%s %T@\n"]
        timed(find_cmd)  # warm the cache
        timed(base_cmd + ["-cr"], env)
        finds, checks = [], []
        for _ in range(a.runs):
            finds.append(timed(find_cmd))
            checks.append(timed(base_cmd + ["-cr"], env))
        dirty = subprocess.run(base_cmd + ["-M"], env=env, stdout=subprocess.PIPE).stdout
        if dirty:
            sys.exit("a no-change check marked something dirty")
        mf, mc = statistics.median(finds), statistics.median(checks)
        res = {
            "files": a.files,
            "dirs": dirs,
            "runs": a.runs,
            "tree_build_s": round(made, 2),
            "init_index_s": round(init, 3),
            "find_median_s": round(mf, 4),
            "csync_cr_median_s": round(mc, 4),
            "ratio": round(mc / mf, 2),
            "find_all": [round(x, 4) for x in finds],
            "csync_all": [round(x, 4) for x in checks],
        }
        print(json.dumps(res, indent=2))
    finally:
        if not a.keep:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
