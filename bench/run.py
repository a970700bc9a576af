#!/usr/bin/env python3
"""Benchmarks: bundler and installer against the tools a user would use instead, on the same
images in the same run. Not a test: it prints ratios and writes bench/results/<time>.{json,md}.

Figures (each the median of --runs repetitions):
  build        `bundler build` (cold cache)      vs `skopeo copy` into one OCI layout,
                                                  vs `docker save | gzip`
  verify       `installer verify`                vs `openssl dgst -sha256` of the bundle
  load-cold    `installer apply` image phase      vs `docker load` of a `docker save` tar,
               (images absent from dockerd)        vs `docker load` of `docker save | gzip`,
                                                  vs `docker load` of the very archive we stream
                                                     (gzip layers; Docker's own cost for our bytes),
                                                  vs an experiment: gunzip while streaming to
                                                     `docker load` (plain layers, C zlib)
  load-warm    `installer apply` image phase      vs `docker load` (images present)
  upgrade      bytes sent to Docker by an upgrade vs the size of the new layers and configs
               (ours counts the archive: tar headers, padding and manifest.json included)
  disk         peak extra disk on Docker's data root during the cold load, both tools
  size         bundle size                        vs the sum of its unique blobs

Needs: scripts/setup, the stack's images in the local registry (scripts/example-images for
examples/client-stack), built binaries (cargo build --release --bins), skopeo, openssl.
Usage: bench/run.py [--stack examples/client-stack] [--runs 3]
On another engine: DOCKER_HOST=$(scripts/engine start docker28-containerd | sed -n 's/^DOCKER_HOST=//p') bench/run.py
"""

import argparse
import io
import datetime
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import tarfile
import threading
import time
import zlib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REGISTRY = "127.0.0.1:5000"


def sh(cmd, **kw):
    """Run a command, fail loudly, return stdout."""
    r = subprocess.run(cmd, shell=isinstance(cmd, str), capture_output=True, text=True, **kw)
    if r.returncode != 0:
        sys.exit(f"bench: `{cmd}` failed ({r.returncode}):\n{r.stderr[-2000:]}")
    return r.stdout


def timed(cmd, **kw):
    start = time.perf_counter()
    sh(cmd, **kw)
    return time.perf_counter() - start


def median(xs):
    return statistics.median(xs)


def docker_root():
    return sh(["docker", "info", "--format", "{{.DockerRootDir}}"]).strip()


class DiskPeak:
    """Samples used bytes of a filesystem every 20 ms; peak minus the starting value."""

    def __init__(self, path):
        self.path, self.peak, self.stop = path, 0, threading.Event()

    def used(self):
        st = os.statvfs(self.path)
        return (st.f_blocks - st.f_bfree) * st.f_frsize

    def __enter__(self):
        self.base = self.used()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()
        return self

    def run(self):
        while not self.stop.is_set():
            self.peak = max(self.peak, self.used() - self.base)
            time.sleep(0.02)

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()


def images_of(bundle, bundler):
    info = json.loads(sh([bundler, "inspect", "--json", str(bundle)]))
    return [i["reference"] for i in info["images"]]


def remove_images(refs):
    """Remove the stack's images so the next load is cold (layers other images share stay, and
    both tools skip them alike)."""
    for ref in refs:
        subprocess.run(["docker", "rmi", "-f", ref], capture_output=True)


def remove_project(project):
    for kind, ls, rm in [
        ("containers", ["docker", "ps", "-aq"], ["docker", "rm", "-f"]),
        ("volumes", ["docker", "volume", "ls", "-q"], ["docker", "volume", "rm", "-f"]),
        ("networks", ["docker", "network", "ls", "-q"], ["docker", "network", "rm"]),
    ]:
        ids = sh(ls + ["--filter", f"label=com.docker.compose.project={project}"]).split()
        if ids:
            subprocess.run(rm + ids, capture_output=True)


def apply_load_phase(installer, bundle, pub, state, values, env, peak=None):
    """Seconds from the `load_start` event to `load_done`, bytes sent, and the whole outcome."""
    cmd = [installer, "apply", str(bundle), "--key", str(pub), "--values", str(values), "--json"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **env, "INSTALLER_STATE_DIR": str(state)})
    t_start = t_done = None
    outcome = None
    for line in proc.stdout:
        try:
            ev = json.loads(line)
        except json.JSONDecodeError:
            continue
        if ev.get("event") == "load_start":
            t_start = time.perf_counter()
        elif ev.get("event") == "load_done":
            t_done = time.perf_counter()
            if peak:
                # Only the image phase: the containers started afterwards use disk of their own.
                peak.stop.set()
        elif ev.get("event") == "outcome":
            outcome = ev
    err = proc.stderr.read()
    if proc.wait() != 0:
        sys.exit(f"bench: installer apply failed:\n{err[-2000:]}")
    return t_done - t_start, outcome


def blob_path(extracted, digest):
    return extracted / "images" / "blobs" / "sha256" / digest.split(":", 1)[1]


def docker_archive(manifest, extracted, sink, gunzip, sizes):
    """Write to `sink` a docker-save archive of the bundle's images, as the installer streams it:
    configs, then layers (gzip bytes as they are, or gunzipped on the fly when `gunzip`; `sizes`
    gives the unpacked sizes a tar header needs first), manifest.json last."""
    out = tarfile.open(fileobj=sink, mode="w|", format=tarfile.USTAR_FORMAT, copybufsize=1 << 20)
    entries, seen = [], set()

    def add(name, path, size, inflate):
        info = tarfile.TarInfo(name)
        info.size = size
        if not inflate:
            with open(path, "rb") as f:
                out.addfile(info, f)
            return
        out.addfile(info, Inflating(path, size))

    for image in manifest["images"]:
        cfg = image["config"]["digest"].split(":", 1)[1]
        if cfg not in seen:
            seen.add(cfg)
            add(f"{cfg}.json", blob_path(extracted, image["config"]["digest"]), image["config"]["size"], False)
        layers = []
        for layer in image["layers"]:
            hexd = layer["digest"].split(":", 1)[1]
            layers.append(f"{hexd}/layer.tar")
            if hexd in seen:
                continue
            seen.add(hexd)
            path = blob_path(extracted, layer["digest"])
            if gunzip:
                add(f"{hexd}/layer.tar", path, sizes[hexd], True)
            else:
                add(f"{hexd}/layer.tar", path, layer["size"], False)
        entries.append({"Config": f"{cfg}.json", "RepoTags": [image["reference"]], "Layers": layers})
    data = json.dumps(entries).encode()
    info = tarfile.TarInfo("manifest.json")
    info.size = len(data)
    out.addfile(info, io.BytesIO(data))
    out.close()


class Inflating:
    """A file-like reader that gunzips a layer blob in 1 MiB steps (C zlib, one core)."""

    def __init__(self, path, size):
        self.f, self.z, self.buf, self.pos = open(path, "rb"), zlib.decompressobj(31), bytearray(), 0

    def read(self, n):
        while len(self.buf) - self.pos < n and not self.z.eof:
            chunk = self.f.read(1 << 20)
            if not chunk:
                break
            del self.buf[:self.pos]
            self.pos = 0
            self.buf += self.z.decompress(chunk)
        out = bytes(self.buf[self.pos:self.pos + n])
        self.pos += len(out)
        return out


def unpacked_sizes(manifest, extracted):
    sizes = {}
    for image in manifest["images"]:
        for layer in image["layers"]:
            hexd = layer["digest"].split(":", 1)[1]
            if hexd not in sizes:
                z, n = zlib.decompressobj(31), 0
                with open(blob_path(extracted, layer["digest"]), "rb") as f:
                    while chunk := f.read(1 << 20):
                        n += len(z.decompress(chunk))
                sizes[hexd] = n
    return sizes


def docker_load_stream(manifest, extracted, gunzip, sizes):
    """Seconds for `docker load` reading the archive from a pipe while it is written."""
    start = time.perf_counter()
    proc = subprocess.Popen(["docker", "load", "-q"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    docker_archive(manifest, extracted, proc.stdin, gunzip, sizes)
    proc.stdin.close()
    err = proc.stderr.read()
    if proc.wait() != 0:
        sys.exit(f"bench: docker load of a streamed archive failed: {err[-2000:]}")
    return time.perf_counter() - start


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--stack", default="examples/client-stack")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--upgrade-from", default=":1.0", help="tag to replace for the upgrade figure")
    ap.add_argument("--upgrade-to", default=":1.1")
    args = ap.parse_args()

    bundler = ROOT / "target/release/bundler"
    installer = ROOT / "target/release/installer"
    for b in (bundler, installer):
        if not b.exists():
            sys.exit(f"bench: {b} missing; run `cargo build --release --bins`")
    compose = ROOT / args.stack / "compose.yaml"
    work = Path(tempfile.mkdtemp(prefix="bench-", dir=os.environ.get("BENCH_DIR", "/var/tmp")))
    sh([bundler, "keygen", "--secret-key", work / "k.key", "--public-key", work / "k.pub"])
    pub = work / "k.pub"
    values = work / "site.env"
    values.write_text("DB_PASSWORD=bench-only\n")
    project = "bench"
    text = compose.read_text()
    for line in text.splitlines():
        if line.startswith("name:"):
            text = text.replace(line, f"name: {project}", 1)
            break
    # Its own host ports, so that the bench runs beside the demo (which publishes 8080).
    text = re.sub(r'"127\.0\.0\.1:(\d+):', lambda m: f'"127.0.0.1:{int(m.group(1)) + 10000}:', text)
    stack_dir = work / "stack"
    shutil.copytree(compose.parent, stack_dir)
    (stack_dir / "compose.yaml").write_text(text)
    bundle = work / "bundle.tar"
    results = {"stack": args.stack, "runs": args.runs, "when": datetime.datetime.now(datetime.UTC).isoformat(),
               "engine": engine_name()}

    def build(out, cache):
        return timed([bundler, "build", "-f", stack_dir / "compose.yaml", "--key", work / "k.key", "--version", "1",
                      "--release", "1", "-o", out, "--insecure-registry", REGISTRY, "--cache-dir", cache],
                     env={**os.environ, "SOURCE_DATE_EPOCH": "1790000000"})

    # build
    ours, skopeo, save = [], [], []
    for i in range(args.runs):
        ours.append(build(bundle, work / f"cache-{i}"))
        refs = images_of(bundle, bundler)
        layout = work / f"oci-{i}"
        start = time.perf_counter()
        for ref in refs:
            sh(["skopeo", "copy", "--quiet", "--src-tls-verify=false", f"docker://{ref}", f"oci:{layout}:{ref.rsplit('/', 1)[-1]}"])
        skopeo.append(time.perf_counter() - start)
        shutil.rmtree(layout)
        for ref in refs:
            sh(["docker", "pull", "-q", ref])
        save.append(timed(f"docker save {' '.join(refs)} | gzip -1 > {work}/save.tar.gz"))
    results["build"] = {"bundler": median(ours), "skopeo_copy": median(skopeo), "docker_save_gzip": median(save)}
    refs = images_of(bundle, bundler)

    # verify
    ours = [timed([installer, "verify", bundle, "--key", pub], env={**os.environ, "INSTALLER_STATE_DIR": str(work / "vs")}) for _ in range(args.runs)]
    theirs = [timed(["openssl", "dgst", "-sha256", bundle]) for _ in range(args.runs)]
    results["verify"] = {"installer_verify": median(ours), "openssl_dgst": median(theirs)}

    # size
    manifest = json.loads(sh(["tar", "-xOf", bundle, "bundle.json"]))
    blobs = sum(e["size"] for e in manifest["entries"] if e["path"].startswith("images/blobs/"))
    results["size"] = {"bundle_bytes": bundle.stat().st_size, "unique_blob_bytes": blobs}

    # load, cold and warm: only cold if no other container holds the images (Docker keeps an
    # image a container uses, whatever `rmi -f` says).
    users = set()
    for ref in refs:
        for line in sh(["docker", "ps", "-a", "--filter", f"ancestor={ref}", "--format",
                        '{{.Names}} {{.Label "com.docker.compose.project"}}']).splitlines():
            name, _, owner = line.partition(" ")
            if owner != project:
                users.add(f"{name} ({owner or 'no project'})")
    if users:
        sys.exit(f"bench: these containers use the stack's images, so no load would be cold: {', '.join(sorted(users))}\n"
                 f"hint: remove them first (the demo's: docker rm -f $(docker ps -aq --filter label=com.docker.compose.project=clientstack))")
    sh(f"docker save {' '.join(refs)} > {work}/save.tar")
    root = docker_root()
    extracted = work / "extracted"
    extracted.mkdir()
    sh(["tar", "-xf", bundle, "-C", extracted, "images"])
    sizes = unpacked_sizes(manifest, extracted)
    cold_ours, cold_theirs, warm_ours, warm_theirs, peak_ours, peak_theirs = [], [], [], [], [], []
    cold_gz, cold_same, cold_gunzip, peak_gunzip = [], [], [], []
    for i in range(args.runs):
        remove_project(project)
        remove_images(refs)
        state = work / f"state-{i}"
        with DiskPeak(root) as d:
            t, _ = apply_load_phase(installer, bundle, pub, state, values, {}, peak=d)
        cold_ours.append(t)
        peak_ours.append(d.peak)
        t, _ = apply_load_phase(installer, bundle, pub, state, values, {})
        warm_ours.append(t)
        remove_project(project)
        remove_images(refs)
        with DiskPeak(root) as d:
            cold_theirs.append(timed(["docker", "load", "-q", "-i", work / "save.tar"]))
        peak_theirs.append(d.peak)
        warm_theirs.append(timed(["docker", "load", "-q", "-i", work / "save.tar"]))
        remove_images(refs)
        cold_gz.append(timed(["docker", "load", "-q", "-i", work / "save.tar.gz"]))
        remove_images(refs)
        cold_same.append(docker_load_stream(manifest, extracted, False, sizes))
        remove_images(refs)
        with DiskPeak(root) as d:
            cold_gunzip.append(docker_load_stream(manifest, extracted, True, sizes))
        peak_gunzip.append(d.peak)
    results["load_cold"] = {"installer_apply_image_phase": median(cold_ours), "docker_load": median(cold_theirs),
                            "docker_load_gzip_save": median(cold_gz),
                            "docker_load_same_archive": median(cold_same),
                            "experiment_gunzip_while_streaming": median(cold_gunzip)}
    results["unpacked_bytes"] = sum(sizes.values())
    results["load_warm"] = {"installer_apply_image_phase": median(warm_ours), "docker_load": median(warm_theirs)}
    results["disk_peak"] = {"installer_apply": median(peak_ours), "docker_load": median(peak_theirs),
                            "experiment_gunzip_while_streaming": median(peak_gunzip)}

    # upgrade
    if args.upgrade_from in text:
        state = work / "state-upgrade"
        remove_project(project)
        apply_load_phase(installer, bundle, pub, state, values, {})
        (stack_dir / "compose.yaml").write_text(text.replace(args.upgrade_from, args.upgrade_to))
        bundle2 = work / "bundle2.tar"
        sh([bundler, "build", "-f", stack_dir / "compose.yaml", "--key", work / "k.key", "--version", "2",
            "--release", "2", "-o", bundle2, "--insecure-registry", REGISTRY, "--cache-dir", work / "cache-0"])
        m2 = json.loads(sh(["tar", "-xOf", bundle2, "bundle.json"]))
        old = {l["digest"] for i in manifest["images"] for l in i["layers"]}
        old_configs = {i["config"]["digest"] for i in manifest["images"]}
        # What an upgrade cannot avoid sending: the new layers and the new images' configs.
        changed = sum(l["size"] for i in m2["images"] for l in i["layers"] if l["digest"] not in old)
        changed += sum(i["config"]["size"] for i in m2["images"] if i["config"]["digest"] not in old_configs)
        changed_refs = [i["reference"] for i in m2["images"] if i["reference"] not in refs]
        remove_images(changed_refs)
        _, outcome = apply_load_phase(installer, bundle2, pub, state, values, {})
        results["upgrade"] = {"bytes_sent": outcome["bytes_sent"], "changed_layer_bytes": changed}
    remove_project(project)

    write(results)
    shutil.rmtree(work, ignore_errors=True)


def engine_name():
    """The engine the figures are about (DOCKER_HOST decides which: scripts/engine start NAME)."""
    version = sh(["docker", "version", "--format", "{{.Server.Version}}"]).strip()
    driver = sh(["docker", "info", "--format", "{{.Driver}} {{json .DriverStatus}}"]).strip()
    store = "containerd image store" if "io.containerd.snapshotter" in driver else driver.split(" ", 1)[0]
    return f"Docker {version}, {store}"


def ratio(a, b):
    return f"{a / b:.2f}x" if b else "n/a"


def write(r):
    lines = [f"# Benchmark {r['when']} ({r['stack']}, {r.get('engine', 'host engine')}, median of {r['runs']})", "",
             "| figure | ours | theirs | ratio (ours/theirs; < 1 is better) |", "|---|---|---|---|"]
    b = r["build"]
    lines.append(f"| build (cold) | {b['bundler']:.2f}s | skopeo copy {b['skopeo_copy']:.2f}s | {ratio(b['bundler'], b['skopeo_copy'])} |")
    lines.append(f"| build (cold) | {b['bundler']:.2f}s | docker save \\| gzip {b['docker_save_gzip']:.2f}s | {ratio(b['bundler'], b['docker_save_gzip'])} |")
    v = r["verify"]
    lines.append(f"| verify | {v['installer_verify']:.2f}s | openssl dgst {v['openssl_dgst']:.2f}s | {ratio(v['installer_verify'], v['openssl_dgst'])} |")
    for k, name in [("load_cold", "load, cold"), ("load_warm", "load, warm")]:
        x = r[k]
        lines.append(f"| {name} | {x['installer_apply_image_phase']:.2f}s | docker load {x['docker_load']:.2f}s | {ratio(x['installer_apply_image_phase'], x['docker_load'])} |")
    c = r["load_cold"]
    ours = c["installer_apply_image_phase"]
    for key, name in [("docker_load_gzip_save", "docker load of docker save \\| gzip"),
                      ("docker_load_same_archive", "docker load of the archive we stream"),
                      ("experiment_gunzip_while_streaming", "experiment: gunzip while streaming")]:
        lines.append(f"| load, cold | {ours:.2f}s | {name} {c[key]:.2f}s | {ratio(ours, c[key])} |")
    d = r["disk_peak"]
    lines.append(f"| peak extra disk, cold load | {d['installer_apply'] / 1e6:.1f} MB | docker load {d['docker_load'] / 1e6:.1f} MB | {ratio(d['installer_apply'], d['docker_load'])} |")
    e = d["experiment_gunzip_while_streaming"]
    lines.append(f"| peak extra disk, cold load | {d['installer_apply'] / 1e6:.1f} MB | experiment: gunzip while streaming {e / 1e6:.1f} MB | {ratio(d['installer_apply'], e)} |")
    s = r["size"]
    lines.append(f"| bundle size | {s['bundle_bytes'] / 1e6:.1f} MB | unique blobs {s['unique_blob_bytes'] / 1e6:.1f} MB | {ratio(s['bundle_bytes'], s['unique_blob_bytes'])} |")
    if "upgrade" in r:
        u = r["upgrade"]
        lines.append(f"| upgrade, bytes sent | {u['bytes_sent'] / 1e3:.1f} kB | new layers + configs {u['changed_layer_bytes'] / 1e3:.1f} kB | {ratio(u['bytes_sent'], u['changed_layer_bytes'])} |")
    text = "\n".join(lines) + "\n"
    print(text)
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    stamp = r["when"][:19].replace(":", "")
    (out / f"{stamp}.json").write_text(json.dumps(r, indent=2) + "\n")
    (out / f"{stamp}.md").write_text(text)


if __name__ == "__main__":
    main()
