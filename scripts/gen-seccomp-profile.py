#!/usr/bin/env python3
"""Writes deploy/seccomp-io_uring.json: the container runtime's default
seccomp profile plus the three io_uring system calls, and nothing else.

The input is the default profile as the runtime installs it: Debian's
golang-github-containers-common package puts the one Podman, CRI-O and
Buildah use at /usr/share/containers/seccomp.json (Docker's and
containerd's defaults are the same allowlist). Pass another path to start
from another runtime's copy. The output is the input with one rule added,
so `diff` against the input shows exactly what megaio asks for:

    {"names": ["io_uring_enter", "io_uring_register", "io_uring_setup"],
     "action": "SCMP_ACT_ALLOW"}

TestSeccompProfile checks that the committed output is the installed
input plus that rule.

Usage: scripts/gen-seccomp-profile.py [path/to/seccomp.json]
"""
import json
import sys

SOURCE = sys.argv[1] if len(sys.argv) > 1 else "/usr/share/containers/seccomp.json"
OUT = "deploy/seccomp-io_uring.json"
IO_URING = {"names": ["io_uring_enter", "io_uring_register", "io_uring_setup"], "action": "SCMP_ACT_ALLOW"}

with open(SOURCE) as f:
    profile = json.load(f)
for rule in profile["syscalls"]:
    if set(rule.get("names", [])) & set(IO_URING["names"]):
        sys.exit(f"{SOURCE} already has a rule naming io_uring: {rule}; nothing to add")
profile["syscalls"].append(IO_URING)
with open(OUT, "w") as f:
    json.dump(profile, f, indent="\t")
    f.write("\n")
print(f"wrote {OUT}: {SOURCE} plus {IO_URING['names']}")
