#!/usr/bin/python3
"""Docs that cannot go stale silently: every `--flag` that README.md,
deploy/README.md or docs/*.md name must be a flag of one of the project's
programs: the binaries (their --help, each CLI subcommand's too), the Python
tools under bench/, experiments/ and scripts/ (their argparse arguments), the
shell scripts and benchmark sources (their text), or one of the outside commands the docs show
(EXTERNAL below, each with the command it belongs to).

usage: check_docs.py SOURCE_DIR BINARY...   (ctest passes the built binaries)
"""
import pathlib
import re
import subprocess
import sys

FLAG = re.compile(r"(?<![A-Za-z0-9_-])--[a-z][a-z0-9-]+")

# Flags of commands the docs show that are not the project's.
EXTERNAL = {
    "--build": "cmake --build",
    "--install": "cmake --install",
    "--prefix": "cmake --install",
    "--no-build-isolation": "pip install",
    "--no-deps": "pip install",
    "--system-site-packages": "python3 -m venv",
    "--home": "useradd",
    "--system": "useradd",
    "--now": "systemctl enable",
    "--network": "docker run",
}


def help_flags(command, depth=0):
    """The flags a binary's --help lists, and its subcommands' (two levels:
    `megabatch-coordinator token create`)."""
    out = subprocess.run(command + ["--help"], capture_output=True, text=True, timeout=60)
    text = out.stdout + out.stderr
    flags = set(FLAG.findall(text))
    sub = re.search(r"Subcommands:\n((?:  \S.*\n?)+)", text)
    if sub and depth < 2:
        for line in sub.group(1).splitlines():
            flags |= help_flags(command + [line.split()[0]], depth + 1)
    return flags


def main(root, binaries):
    root = pathlib.Path(root)
    known = set()
    for binary in binaries:
        known |= help_flags([binary])
    for path in list(root.glob("bench/*.py")) + list(root.glob("experiments/*.py")):
        known |= set(re.findall(r"add_argument\(\s*\"(--[a-z0-9-]+)\"", path.read_text()))
    # Shell scripts and the benchmark binaries (Google Benchmark's main has no
    # --help of their own flags): the flags their text parses.
    for path in (list(root.glob("scripts/*.sh")) + list(root.glob("deploy/**/*.sbatch"))
                 + list(root.glob("bench/*.cc"))):
        known |= set(FLAG.findall(path.read_text()))
    docs = [root / "README.md", root / "deploy" / "README.md"] + sorted(root.glob("docs/*.md"))
    missing = []
    for doc in docs:
        for number, line in enumerate(doc.read_text().splitlines(), 1):
            for flag in FLAG.findall(line):
                if flag not in known and flag not in EXTERNAL:
                    missing.append("%s:%d: %s" % (doc.relative_to(root), number, flag))
    if missing:
        print("flags the docs name that no program has:\n  " + "\n  ".join(missing))
        return 1
    print("every flag the docs name exists (%d known)" % len(known))
    return 0


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    sys.exit(main(sys.argv[1], sys.argv[2:]))
