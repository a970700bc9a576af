#!/usr/bin/env python3
"""Benchmark (issue 12): copying the stack's data, per GB, against what an operator would do by
hand, on the same PostgreSQL database in the same run. Not a test: it prints the figures and
writes bench/results/<time>-data.{json,md}.

  backup    `installer backup -o FILE` (services stopped, every volume through the engine's
            archive endpoint, checked)          vs  `docker run --rm -v VOL:/v busybox tar -c`
                                                vs  `pg_dump -Fc -Z1` inside the db container
  restore   `installer restore FILE` (whole file checked, fresh volumes, services switched and
            health-gated)                       vs  `docker run -i … tar -x` into a fresh volume
                                                vs  `pg_restore` into a fresh database
  upgrade   the downtime an upgrade with a migration adds (the copy before the migration):
            `downtime_secs` of `installer apply --json`, and the whole apply, with and without
            the copy (`--no-snapshot`)

Runs on its own engine (`scripts/engine start site`), images loaded by the first apply.
Needs: scripts/setup, scripts/example-images, built binaries (BENCH_PROFILE=debug for debug).
Usage: bench/data.py [--rows 3000000]   (about 1 GB of volume data at the default)
"""

import argparse
import datetime
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STACK = ROOT / "examples/client-stack"
PROJECT = "clientstack"
BUSYBOX = "127.0.0.1:5000/test/base:1"


def sh(cmd, env=None, check=True, **kw):
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, **kw)
    if check and r.returncode != 0:
        sys.exit(f"bench: `{' '.join(map(str, cmd))}` failed ({r.returncode}):\n{r.stderr[-3000:]}")
    return r


def timed(cmd, env=None, **kw):
    start = time.perf_counter()
    r = sh(cmd, env=env, **kw)
    return time.perf_counter() - start, r


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=int(os.environ.get("BENCH_DATA_ROWS", "3000000")))
    args = ap.parse_args()
    profile = os.environ.get("BENCH_PROFILE", "release")
    bundler, installer = (ROOT / "target" / profile / b for b in ("bundler", "installer"))
    out = sh([str(ROOT / "scripts/engine"), "start", "site"]).stdout
    host = next(l.split("=", 1)[1] for l in out.splitlines() if l.startswith("DOCKER_HOST="))
    env = dict(os.environ, DOCKER_HOST=host)
    work = Path(tempfile.mkdtemp(prefix="bench-data-", dir="/var/tmp"))
    state = work / "state"
    db = f"{PROJECT}-db-1"
    psql = ["docker", "exec", "-e", "PGPASSWORD=bench-password", db, "psql", "-h", "127.0.0.1", "-U", "app", "-d"]
    figures = {}

    def clean():
        ids = sh(["docker", "ps", "-aq", "--filter", f"label=com.docker.compose.project={PROJECT}"], env=env).stdout.split()
        if ids:
            sh(["docker", "rm", "-f", *ids], env=env)
        vols = sh(["docker", "volume", "ls", "-q", "--filter", f"label=com.docker.compose.project={PROJECT}"], env=env).stdout.split()
        for v in vols + ["bench-hand"]:
            sh(["docker", "volume", "rm", "-f", v], env=env, check=False)

    try:
        clean()
        sh([str(bundler), "keygen", "--secret-key", str(work / "k.key"), "--public-key", str(work / "k.pub")])
        bundles = {}
        for release, file in ((1, "compose.yaml"), (2, "compose.release2.yaml")):
            bundles[release] = work / f"r{release}.bundle"
            sh([str(bundler), "build", "-f", str(STACK / file), "--key", str(work / "k.key"), "--version", f"1.{release}",
                "--release", str(release), "-o", str(bundles[release]), "--insecure-registry", "127.0.0.1:5000",
                "--cache-dir", str(work / "cache")])
        values = work / "site.env"
        values.write_text("DB_PASSWORD=bench-password\n")

        def apply(bundle, *extra, st=state):
            return [str(installer), "apply", str(bundle), "--key", str(work / "k.pub"), "--values", str(values),
                    "--state-dir", str(st), "--json", *extra]

        sh(apply(bundles[1]), env=env)
        sh(psql + ["app", "-qc", f"CREATE TABLE big AS SELECT g AS id, md5(g::text) AS a, repeat(md5(g::text), 4) AS b "
                                 f"FROM generate_series(1, {args.rows}) g;"], env=env)
        mount = sh(["docker", "volume", "inspect", "-f", "{{.Mountpoint}}", f"{PROJECT}_dbdata"], env=env).stdout.strip()
        size = int(sh(["du", "-sb", mount]).stdout.split()[0])
        gb = size / 1e9

        # installer backup / restore
        backup = work / "site.backup"
        t, _ = timed([str(installer), "backup", "-o", str(backup), "--state-dir", str(state)], env=env)
        figures["backup: installer backup"] = t
        t, _ = timed([str(installer), "restore", str(backup), "--state-dir", str(state)], env=env)
        figures["restore: installer restore (checked, switched, gated)"] = t
        current = json.loads((state / "installed.json").read_text()).get("generations", {}).get("volume:dbdata", f"{PROJECT}_dbdata")

        # By hand: stop, tar through a busybox container, start.
        hand = work / "hand.tar"
        sh(["docker", "stop", f"{PROJECT}-api-1", f"{PROJECT}-nginx-1", db], env=env)
        with open(hand, "wb") as f:
            start = time.perf_counter()
            r = subprocess.run(["docker", "run", "--rm", "-v", f"{current}:/v", BUSYBOX, "tar", "-cf", "-", "-C", "/v", "."],
                               stdout=f, stderr=subprocess.PIPE, env=env)
            figures["backup: docker run … tar -c (by hand)"] = time.perf_counter() - start
            if r.returncode != 0:
                sys.exit(f"bench: hand backup failed: {r.stderr[-2000:]}")
        with open(hand, "rb") as f:
            start = time.perf_counter()
            r = subprocess.run(["docker", "run", "--rm", "-i", "-v", "bench-hand:/v", BUSYBOX, "tar", "-xf", "-", "-C", "/v"],
                               stdin=f, capture_output=True, env=env)
            figures["restore: docker run -i … tar -x (by hand)"] = time.perf_counter() - start
            if r.returncode != 0:
                sys.exit(f"bench: hand restore failed: {r.stderr[-2000:]}")
        sh(["docker", "start", db], env=env)
        for _ in range(120):
            if sh(psql + ["app", "-Atc", "SELECT 1"], env=env, check=False).returncode == 0:
                break
            time.sleep(0.5)
        sh(["docker", "start", f"{PROJECT}-api-1", f"{PROJECT}-nginx-1"], env=env)

        # pg_dump / pg_restore (online, the database's own tools).
        dump = work / "dump"
        with open(dump, "wb") as f:
            start = time.perf_counter()
            r = subprocess.run(["docker", "exec", "-e", "PGPASSWORD=bench-password", db, "pg_dump", "-h", "127.0.0.1",
                                "-U", "app", "-d", "app", "-Fc", "-Z1"], stdout=f, stderr=subprocess.PIPE, env=env)
            figures["backup: pg_dump -Fc -Z1"] = time.perf_counter() - start
            if r.returncode != 0:
                sys.exit(f"bench: pg_dump failed: {r.stderr[-2000:]}")
        sh(["docker", "exec", "-e", "PGPASSWORD=bench-password", db, "psql", "-h", "127.0.0.1", "-U", "postgres", "-d",
            "postgres", "-q", "-c", "DROP DATABASE IF EXISTS restored", "-c", "CREATE DATABASE restored OWNER app"], env=env)
        with open(dump, "rb") as f:
            start = time.perf_counter()
            r = subprocess.run(["docker", "exec", "-i", "-e", "PGPASSWORD=bench-password", db, "pg_restore", "-h",
                                "127.0.0.1", "-U", "app", "-d", "restored"], stdin=f, capture_output=True, env=env)
            figures["restore: pg_restore"] = time.perf_counter() - start
            if r.returncode != 0:
                sys.exit(f"bench: pg_restore failed: {r.stderr[-2000:]}")

        # The upgrade: with the copy, then (fresh install) without.
        t, r = timed(apply(bundles[2]), env=env)
        outcome = next(json.loads(l) for l in r.stdout.splitlines() if '"outcome"' in l)
        figures["upgrade with the copy: whole apply"] = t
        figures["upgrade with the copy: downtime (stop to healthy)"] = outcome.get("downtime_secs") or 0.0
        clean()
        st2 = work / "state2"
        sh(apply(bundles[1], st=st2), env=env)
        sh(psql + ["app", "-qc", f"CREATE TABLE big AS SELECT g AS id, md5(g::text) AS a, repeat(md5(g::text), 4) AS b "
                                 f"FROM generate_series(1, {args.rows}) g;"], env=env)
        t, _ = timed(apply(bundles[2], "--no-snapshot", st=st2), env=env)
        figures["upgrade without the copy (--no-snapshot): whole apply"] = t
        engine_version = sh(["docker", "version", "-f", "{{.Server.Version}}"], env=env).stdout.strip()
        dump_size = dump.stat().st_size
        backup_size = backup.stat().st_size
    finally:
        clean()
        shutil.rmtree(work, ignore_errors=True)

    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H%M%S")
    data = {"when": stamp, "engine": engine_version, "volume_bytes": size, "rows": args.rows,
            "backup_file_bytes": backup_size, "pg_dump_bytes": dump_size, "profile": profile, "seconds": figures}
    results = ROOT / "bench/results"
    results.mkdir(parents=True, exist_ok=True)
    (results / f"{stamp}-data.json").write_text(json.dumps(data, indent=2) + "\n")
    md = [f"# Data copies ({stamp})", "",
          f"Engine: Docker {engine_version} (`scripts/engine start site`), 2 vCPU; PostgreSQL volume {size / 1e9:.2f} GB "
          f"({args.rows} rows); backup file {backup_size / 1e9:.2f} GB, pg_dump {dump_size / 1e6:.0f} MB; {profile} build.", "",
          "| what | seconds | s per GB of volume |", "|---|---|---|"]
    for k, v in figures.items():
        md.append(f"| {k} | {v:.1f} | {v / gb:.1f} |")
    md.append("")
    (results / f"{stamp}-data.md").write_text("\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
