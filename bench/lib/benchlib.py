"""Helpers shared by Ferry's benchmark commands: build, run a guest until a
console line appears, a minimal QMP client, medians and the result line."""
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def log(topic, msg):
    print(f"bench/{topic}: {msg}", file=sys.stderr, flush=True)


def _exit_on_term(signum, _frame):
    # Turn SIGTERM/SIGINT into an exception so every `finally` runs and the
    # benchmark's VMs, daemons and namespaces are removed.
    raise SystemExit(128 + signum)


def require_root(topic):
    signal.signal(signal.SIGTERM, _exit_on_term)
    signal.signal(signal.SIGINT, _exit_on_term)
    if os.geteuid() != 0:
        sys.exit(f"bench/{topic}: run as root (QEMU, TAPs, run directories)")


def build():
    """Runs scripts/build (release) and returns the ferry binary's path."""
    out = subprocess.run([os.path.join(ROOT, "scripts/build")], check=True, capture_output=True, text=True).stdout
    return os.path.join(ROOT, out.strip().splitlines()[-1])


def ferry_binary(topic):
    """The ferry binary to measure: FERRY_BIN if set (to compare builds
    side by side), else a fresh release build from scripts/build."""
    if os.environ.get("FERRY_BIN"):
        return os.environ["FERRY_BIN"]
    log(topic, "building Ferry and the test guest")
    return build()


def guest_dir():
    return os.environ.get("FERRY_GUEST_DIR", "/var/lib/ferry/guest")


def read_until(proc, marker, timeout=180):
    """Reads proc.stdout until `marker` appears; returns everything read."""
    seen = b""
    start = time.monotonic()
    while marker.encode() not in seen:
        chunk = proc.stdout.read1(65536)
        if not chunk:
            raise RuntimeError(f"process exited before {marker!r}: {seen[-500:]!r}")
        seen += chunk
        if time.monotonic() - start > timeout:
            raise RuntimeError(f"no {marker!r} within {timeout} s")
    return seen.decode(errors="replace")


class Qmp:
    """Just enough QMP for benchmarks."""

    def __init__(self, path, timeout=30):
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.sock = socket.socket(socket.AF_UNIX)
                self.sock.connect(path)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.01)
        self.f = self.sock.makefile("rw")
        json.loads(self.f.readline())
        self.cmd("qmp_capabilities")

    def cmd(self, name, **args):
        msg = {"execute": name}
        if args:
            msg["arguments"] = args
        self.f.write(json.dumps(msg) + "\n")
        self.f.flush()
        while True:
            reply = json.loads(self.f.readline())
            if "return" in reply:
                return reply["return"]
            if "error" in reply:
                raise RuntimeError(f"{name}: {reply['error']}")

    def close(self):
        self.sock.close()


def median(xs):
    return statistics.median(xs) if xs else 0.0


def result(topic, figures, goals):
    """Prints the final JSON line; goals maps name -> (value, target, met)."""
    print(json.dumps({
        "topic": topic,
        "figures": figures,
        "goals": {k: {"value": round(v, 3), "target": t, "met": bool(m)} for k, (v, t, m) in goals.items()},
    }))
