"""What the benchmarks share: running a command, and finding the built binaries."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def sh(cmd, env=None, check=True, **kw):
    """Run a command (arguments may be paths), capture its output, exit the bench if it fails."""
    r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, env=env, **kw)
    if check and r.returncode != 0:
        sys.exit(f"bench: `{' '.join(map(str, cmd))}` failed ({r.returncode}):\n{r.stderr[-3000:]}")
    return r


def binaries():
    """(profile, bundler, installer): release builds unless BENCH_PROFILE says otherwise."""
    profile = os.environ.get("BENCH_PROFILE", "release")
    found = [ROOT / "target" / profile / name for name in ("bundler", "installer")]
    for b in found:
        if not b.exists():
            sys.exit(f"bench: {b} is missing; run cargo build --{profile} --bins (or BENCH_PROFILE=debug)")
    return (profile, *found)
