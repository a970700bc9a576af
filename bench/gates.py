#!/usr/bin/env python3
"""Benchmark (issue 13): from nothing running to every service healthy, `installer apply`
(signature and every entry verified, images already in the engine) against
`docker compose up -d --wait` (Compose v2, the Go plugin Debian 13 packages) on the same stack,
the same images, the same engine, in the same run. Not a test: it prints the ratio and writes
bench/results/<time>-gates.{json,md}.

Each round starts with no container and no volume of the stack: both tools create the
networks, volumes and containers, start them in dependency order and wait for the health
checks (the stack's own: intervals of 5 s). Rounds alternate between the tools.

Needs: scripts/setup, scripts/example-images, built binaries (cargo build --release --bins, or
debug ones with BENCH_PROFILE=debug), Compose v2 from `scripts/engine fetch trixie`.
Runs on its own engine (`scripts/engine start site`: Docker 20.10, empty data root) so that
nothing else on the host's engine is touched.
Usage: bench/gates.py [--runs 3]
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
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import binaries, sh  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
STACK = ROOT / "examples/client-stack"
COMPOSE_PLUGIN = Path("/var/lib/bundler-dev/engines/trixie/root/usr/libexec/docker/cli-plugins/docker-compose")
PROJECT = "clientstack"




def timed(cmd, env=None):
    start = time.perf_counter()
    sh(cmd, env=env)
    return time.perf_counter() - start


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    profile, bundler, installer = binaries()
    if not COMPOSE_PLUGIN.exists():
        sh([str(ROOT / "scripts/engine"), "fetch", "trixie"])
    out = sh([str(ROOT / "scripts/engine"), "start", "site"]).stdout
    host = next(l.split("=", 1)[1] for l in out.splitlines() if l.startswith("DOCKER_HOST="))
    env = dict(os.environ, DOCKER_HOST=host, DB_PASSWORD="bench-password")
    work = Path(tempfile.mkdtemp(prefix="bench-gates-"))
    try:
        # The CLI plugin directory of a private Docker config: `docker compose` = Compose v2.
        plugins = work / "docker-config/cli-plugins"
        plugins.mkdir(parents=True)
        shutil.copy(COMPOSE_PLUGIN, plugins / "docker-compose")
        env["DOCKER_CONFIG"] = str(work / "docker-config")
        compose_version = sh(["docker", "compose", "version", "--short"], env=env).stdout.strip()
        engine_version = sh(["docker", "version", "-f", "{{.Server.Version}}"], env=env).stdout.strip()

        sh([str(bundler), "keygen", "--secret-key", str(work / "k.key"), "--public-key", str(work / "k.pub")])
        bundle = work / "stack.bundle"
        sh([str(bundler), "build", "-f", str(STACK / "compose.yaml"), "--key", str(work / "k.key"),
            "--version", "1.0.0", "--release", "1", "-o", str(bundle),
            "--insecure-registry", "127.0.0.1:5000", "--cache-dir", str(work / "cache")])
        values = work / "site.env"
        values.write_text("DB_PASSWORD=bench-password\n")

        def installer_apply(state):
            return [str(installer), "apply", str(bundle), "--key", str(work / "k.pub"), "--values", str(values),
                    "--state-dir", str(state)]

        def clean():
            sh(["docker", "compose", "-p", PROJECT, "-f", str(STACK / "compose.yaml"), "down", "-v", "--remove-orphans"],
               env=env, check=False)
            ids = sh(["docker", "ps", "-aq", "--filter", f"label=com.docker.compose.project={PROJECT}"], env=env).stdout.split()
            if ids:
                sh(["docker", "rm", "-f", *ids], env=env)
            vols = sh(["docker", "volume", "ls", "-q", "--filter", f"label=com.docker.compose.project={PROJECT}"], env=env).stdout.split()
            if vols:
                sh(["docker", "volume", "rm", "-f", *vols], env=env)

        # The images into the engine once (the installer's load), then every round starts from
        # images present and nothing else.
        clean()
        sh(installer_apply(work / "state-warmup"), env=env)
        clean()

        times = {"installer": [], "compose": []}
        for i in range(args.runs):
            for tool in ("compose", "installer") if i % 2 == 0 else ("installer", "compose"):
                if tool == "installer":
                    times[tool].append(timed(installer_apply(work / f"state-{i}"), env=env))
                else:
                    times[tool].append(timed(["docker", "compose", "-p", PROJECT, "-f", str(STACK / "compose.yaml"),
                                              "up", "-d", "--wait"], env=env))
                clean()
                print(f"round {i + 1}: {tool} {times[tool][-1]:.2f}s", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    med = {k: statistics.median(v) for k, v in times.items()}
    ratio = med["installer"] / med["compose"]
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H%M%S")
    results = ROOT / "bench/results"
    results.mkdir(parents=True, exist_ok=True)
    data = {"when": stamp, "engine": engine_version, "compose": compose_version, "runs": args.runs,
            "profile": profile, "seconds": times, "median": med, "ratio_installer_to_compose": ratio}
    (results / f"{stamp}-gates.json").write_text(json.dumps(data, indent=2) + "\n")
    md = [
        f"# Health gates: installer apply vs docker compose up --wait ({stamp})",
        "",
        f"Engine: Docker {engine_version} (own data root, `scripts/engine start site`); Compose {compose_version}; "
        f"stack: examples/client-stack (PostgreSQL, Redis, API, nginx; 5 s health intervals), images present; "
        f"{args.runs} rounds each, alternating; {profile} build.",
        "",
        "| tool | runs (s) | median (s) |",
        "|---|---|---|",
        f"| `installer apply` (verify included) | {', '.join(f'{t:.2f}' for t in times['installer'])} | {med['installer']:.2f} |",
        f"| `docker compose up -d --wait` | {', '.join(f'{t:.2f}' for t in times['compose'])} | {med['compose']:.2f} |",
        "",
        f"Ratio installer / compose: **{ratio:.2f}x**",
        "",
    ]
    (results / f"{stamp}-gates.md").write_text("\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
