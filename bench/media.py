#!/usr/bin/env python3
"""Benchmark (issue 14): `installer apply` of the same bundle read from one file, read in place
from its parts on a read-only mount, and the way other tools do it (join the parts into one file
on the target, then apply that), in the same run on the same engine. Not a test: it prints the
ratios and writes bench/results/<time>-media.{json,md}.

Each round starts with the stack's images, containers and volumes removed, so every apply loads
every image (the part of an apply that reads the bundle). Besides the time it samples, every
20 ms, the bytes the apply adds outside Docker: the state directory, TMPDIR and the directory the
bundle is read from; and the growth of the whole filesystem (Docker's own upload spool included).
Rounds alternate between the modes.

Needs: scripts/setup, scripts/example-images, release binaries (cargo build --release --bins,
or BENCH_PROFILE=debug), root (for the read-only bind mount).
Runs on its own engine (`scripts/engine start site`: Docker 20.10, own data root).
Usage: bench/media.py [--runs 3] [--part-size 32M]
"""

import argparse
import datetime
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import binaries, sh  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
STACK = ROOT / "examples/client-stack"
PROJECT = "clientstack"




def tree_bytes(path):
    total = 0
    for dirpath, _, files in os.walk(path):
        for f in files:
            try:
                total += os.lstat(os.path.join(dirpath, f)).st_size
            except OSError:
                pass
    return total


def fs_used(path):
    st = os.statvfs(path)
    return (st.f_blocks - st.f_bfree) * st.f_frsize


class Sampler:
    """Peak bytes of the watched directories, and peak growth of the filesystem, while running."""

    def __init__(self, dirs, fs_path):
        self.dirs, self.fs_path = dirs, fs_path
        self.base_dirs = sum(tree_bytes(d) for d in dirs)
        self.base_fs = fs_used(fs_path)
        self.peak_dirs = 0
        self.peak_fs = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self):
        while not self.stop.is_set():
            self.peak_dirs = max(self.peak_dirs, sum(tree_bytes(d) for d in self.dirs) - self.base_dirs)
            self.peak_fs = max(self.peak_fs, fs_used(self.fs_path) - self.base_fs)
            time.sleep(0.02)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--part-size", default="32M")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench: run as root (the parts are read from a read-only bind mount)")
    profile, bundler, installer = binaries()
    out = sh([ROOT / "scripts/engine", "start", "site"]).stdout
    host = next(l.split("=", 1)[1] for l in out.splitlines() if l.startswith("DOCKER_HOST="))
    env = dict(os.environ, DOCKER_HOST=host)
    engine_version = sh(["docker", "version", "-f", "{{.Server.Version}}"], env=env).stdout.strip()
    work = Path(tempfile.mkdtemp(prefix="bench-media-", dir="/var/tmp"))
    mount = work / "usb"
    try:
        sh([bundler, "keygen", "--secret-key", work / "k.key", "--public-key", work / "k.pub"])
        common = ["build", "-f", STACK / "compose.yaml", "--key", work / "k.key", "--version", "1.0.0",
                  "--release", "1", "--insecure-registry", "127.0.0.1:5000", "--cache-dir", work / "cache"]
        one = work / "one" / "stack.tar"
        stick = work / "stick"
        one.parent.mkdir()
        stick.mkdir()
        sh([bundler, *common, "-o", one])
        sh([bundler, *common, "-o", stick / "stack.tar", "--part-size", args.part_size])
        parts = sorted(stick.iterdir())
        bundle_bytes = one.stat().st_size
        mount.mkdir()
        sh(["mount", "--bind", stick, mount])
        sh(["mount", "-o", "remount,ro,bind", mount])
        values = work / "site.env"
        values.write_text("DB_PASSWORD=bench-password\n")
        images = sorted({l.split()[0] for l in sh([bundler, "inspect", one]).stdout.splitlines()
                         if l.startswith("  ") and " layers " in l})
        assert images, "no images found in `bundler inspect`"

        def clean():
            ids = sh(["docker", "ps", "-aq", "--filter", f"label=com.docker.compose.project={PROJECT}"],
                     env=env).stdout.split()
            if ids:
                sh(["docker", "rm", "-f", *ids], env=env)
            vols = sh(["docker", "volume", "ls", "-q", "--filter", f"label=com.docker.compose.project={PROJECT}"],
                      env=env).stdout.split()
            if vols:
                sh(["docker", "volume", "rm", "-f", *vols], env=env)
            sh(["docker", "rmi", *images], env=env, check=False)
            sh(["docker", "image", "prune", "-f"], env=env, check=False)
            left = [i for i in images if sh(["docker", "images", "-q", i], env=env).stdout.strip()]
            if left:
                sys.exit(f"bench: could not remove {left}: every round must load every image")

        def apply(bundle, state):
            return [installer, "apply", bundle, "--key", work / "k.pub", "--values", values, "--state-dir", state]

        modes = {
            "one file": lambda i: (one, None),
            "parts, in place (read-only mount)": lambda i: (mount / parts[0].name, None),
            "parts joined first (cat, then apply)": lambda i: (work / "target" / f"joined-{i}.tar", parts),
        }
        results = {m: {"seconds": [], "extra_bytes": [], "fs_growth": []} for m in modes}
        for i in range(args.runs):
            order = list(modes) if i % 2 == 0 else list(reversed(modes))
            for mode in order:
                clean()
                # Everything the apply could write outside Docker: a fresh state dir, TMPDIR, the
                # target's own directory (where a join would go) and the bundle's directories.
                target, tmp, state = work / "target", work / "tmp", work / "state"
                for d in (target, tmp, state):
                    shutil.rmtree(d, ignore_errors=True)
                    d.mkdir()
                bundle, join = modes[mode](i)
                run_env = dict(env, TMPDIR=str(tmp))
                with Sampler([work / "one", stick, target, tmp, state], work) as s:
                    start = time.perf_counter()
                    if join:
                        with open(bundle, "wb") as out_f:
                            for p in join:
                                with open(mount / p.name, "rb") as in_f:
                                    shutil.copyfileobj(in_f, out_f, 1 << 20)
                            out_f.flush()
                            os.fsync(out_f.fileno())
                    sh(apply(bundle, state), env=run_env)
                    elapsed = time.perf_counter() - start
                results[mode]["seconds"].append(elapsed)
                results[mode]["extra_bytes"].append(s.peak_dirs)
                results[mode]["fs_growth"].append(s.peak_fs)
                print(f"round {i + 1}: {mode}: {elapsed:.2f}s, {s.peak_dirs / 1e6:.1f} MB beside Docker, "
                      f"filesystem +{s.peak_fs / 1e6:.0f} MB at peak", flush=True)
        clean()
    finally:
        sh(["umount", mount], check=False)
        shutil.rmtree(work, ignore_errors=True)

    med = {m: statistics.median(r["seconds"]) for m, r in results.items()}
    base = med["one file"]
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H%M%S")
    out_dir = ROOT / "bench/results"
    out_dir.mkdir(parents=True, exist_ok=True)
    data = {"when": stamp, "engine": engine_version, "runs": args.runs, "profile": profile,
            "part_size": args.part_size, "parts": len(parts), "bundle_bytes": bundle_bytes, "results": results,
            "median_seconds": med}
    (out_dir / f"{stamp}-media.json").write_text(json.dumps(data, indent=2) + "\n")
    md = [
        f"# Apply from parts vs one file ({stamp})",
        "",
        f"Engine: Docker {engine_version} (own data root, `scripts/engine start site`); bundle: examples/client-stack, "
        f"{bundle_bytes / 1e6:.0f} MB, {len(parts)} files with `--part-size {args.part_size}`; every round loads every "
        f"image (images removed before); {args.runs} rounds, alternating; {profile} build.",
        "",
        "| mode | runs (s) | median (s) | vs one file | extra disk beside Docker (peak) | filesystem growth (peak, Docker's spool included) |",
        "|---|---|---|---|---|---|",
    ]
    for m, r in results.items():
        md.append(f"| {m} | {', '.join(f'{t:.1f}' for t in r['seconds'])} | {med[m]:.1f} | {med[m] / base:.2f}x | "
                  f"{max(r['extra_bytes']) / 1e6:.1f} MB | {max(r['fs_growth']) / 1e6:.0f} MB |")
    md.append("")
    (out_dir / f"{stamp}-media.md").write_text("\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
