#!/usr/bin/env python3
"""Benchmark (issue 15): `installer push` of a bundle's images into an empty site registry
against `skopeo copy` of the same images (from the local registry the bundle was built from) into
an empty registry of the same kind, in the same run. Also the re-run (everything already there).
Not a test: it prints the ratios and writes bench/results/<time>-push.{json,md}.

The site registry is Debian's docker-registry (Docker Distribution 2.8) on 127.0.0.1, started
fresh (empty data directory) for every round. Rounds alternate between the tools.

Needs: scripts/setup, scripts/example-images (the example stack's images in 127.0.0.1:5000),
release binaries (cargo build --release --bins, or BENCH_PROFILE=debug).
Usage: bench/push.py [--runs 3]
"""

import argparse
import datetime
import json
import os
import shutil
import socket
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
PORT = 5022




class Registry:
    def __init__(self, work):
        self.dir = Path(tempfile.mkdtemp(dir=work))
        conf = self.dir / "config.yml"
        conf.write_text(f"version: 0.1\nlog: {{level: error}}\nstorage: {{filesystem: {{rootdirectory: {self.dir / 'data'}}}}}\n"
                        f"http: {{addr: 127.0.0.1:{PORT}}}\n")
        self.proc = subprocess.Popen(["docker-registry", "serve", str(conf)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", PORT), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.1)
        sys.exit("bench: the registry did not start")

    def stop(self):
        self.proc.kill()
        self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    profile, bundler, installer = binaries()
    work = Path(tempfile.mkdtemp(prefix="bench-push-", dir="/var/tmp"))
    env = dict(os.environ, DOCKER_CONFIG=str(work / "docker-config"))
    total = 0
    try:
        sh([bundler, "keygen", "--secret-key", work / "k.key", "--public-key", work / "k.pub"])
        bundle = work / "stack.tar"
        sh([bundler, "build", "-f", STACK / "compose.yaml", "--key", work / "k.key", "--version", "1.0.0",
            "--release", "1", "--insecure-registry", "127.0.0.1:5000", "--cache-dir", work / "cache", "-o", bundle])
        images = sorted({l.split()[0] for l in sh([bundler, "inspect", bundle]).stdout.splitlines()
                         if l.startswith("  ") and " layers " in l})
        total = 0
        skopeo_version = sh(["skopeo", "--version"]).stdout.strip()

        def installer_push():
            return [installer, "push", bundle, "--key", work / "k.pub", "--registry", f"127.0.0.1:{PORT}",
                    "--plain-http", "--state-dir", work / "state"]

        def skopeo_copy():
            for ref in images:
                path = ref.split("/", 1)[1] if "/" in ref and ("." in ref.split("/")[0] or ":" in ref.split("/")[0]) else ref
                sh(["skopeo", "copy", "--quiet", "--src-tls-verify=false", "--dest-tls-verify=false",
                    f"docker://{ref}", f"docker://127.0.0.1:{PORT}/{path}"], env=env)

        times = {"installer push": [], "skopeo copy": [], "installer push (re-run)": [], "skopeo copy (re-run)": []}
        for i in range(args.runs):
            for tool in ("installer push", "skopeo copy") if i % 2 == 0 else ("skopeo copy", "installer push"):
                reg = Registry(work)
                try:
                    for label in (tool, f"{tool} (re-run)"):
                        start = time.perf_counter()
                        if tool == "installer push":
                            r = sh([*installer_push(), "--json"], env=env)
                            if label == tool:
                                # Unique blob bytes: what an empty registry receives.
                                total = json.loads(r.stdout.strip().splitlines()[-1])["bytes_sent"]
                        else:
                            skopeo_copy()
                        times[label].append(time.perf_counter() - start)
                        print(f"round {i + 1}: {label}: {times[label][-1]:.2f}s", flush=True)
                finally:
                    reg.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)

    med = {k: statistics.median(v) for k, v in times.items()}
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H%M%S")
    out = ROOT / "bench/results"
    out.mkdir(parents=True, exist_ok=True)
    data = {"when": stamp, "runs": args.runs, "profile": profile, "images": images, "blob_bytes": total,
            "skopeo": skopeo_version, "seconds": times, "median": med,
            "ratio_push_to_skopeo": med["installer push"] / med["skopeo copy"]}
    (out / f"{stamp}-push.json").write_text(json.dumps(data, indent=2) + "\n")
    md = [
        f"# installer push vs skopeo copy ({stamp})",
        "",
        f"Site registry: Debian's docker-registry on 127.0.0.1, empty for each round. Images: the example stack's "
        f"{len(images)} images, {total / 1e6:.0f} MB of blobs. installer reads the bundle (verified first); skopeo "
        f"({skopeo_version}) reads the local registry 127.0.0.1:5000 the bundle was built from. {args.runs} rounds, "
        f"alternating; {profile} build.",
        "",
        "| tool | runs (s) | median (s) | MB/s |",
        "|---|---|---|---|",
    ]
    for k, v in times.items():
        rate = "" if "re-run" in k else f"{total / 1e6 / med[k]:.0f}"
        md.append(f"| {k} | {', '.join(f'{t:.2f}' for t in v)} | {med[k]:.2f} | {rate} |")
    md += ["", f"Ratio installer push / skopeo copy: **{data['ratio_push_to_skopeo']:.2f}x**", ""]
    (out / f"{stamp}-push.md").write_text("\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
