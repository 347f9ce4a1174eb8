#!/usr/bin/env python3
"""Offline checks of the shipped deployment files (deploy/): the Kubernetes
manifest parses, runs the worker as PID 1 (so SIGTERM reaches it) and lets
its drain end before the kubelet's SIGKILL; the Slurm job is valid bash and
drains within Slurm's default KillWait. No cluster is needed."""
import pathlib
import re
import subprocess
import sys

import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
KILL_WAIT_DEFAULT = 30  # slurm.conf's KillWait default, in seconds


def drain_seconds(text):
    found = re.findall(r"--drain-seconds[ =]\"?\$?\{?[A-Z_]*:?-?(\d+)", text)
    assert found, "no --drain-seconds"
    return int(found[0])


def main():
    docs = list(yaml.safe_load_all((ROOT / "deploy/kubernetes/megabatch-worker.yaml").read_text()))
    daemonsets = [d for d in docs if d and d.get("kind") == "DaemonSet"]
    assert len(daemonsets) == 1, "expected one DaemonSet"
    spec = daemonsets[0]["spec"]["template"]["spec"]
    grace = spec["terminationGracePeriodSeconds"]
    (container,) = spec["containers"]
    command = " ".join(container["command"] + container["args"])
    assert "exec megabatch-worker" in command, "the worker must be PID 1 (exec) to get SIGTERM"
    drain = drain_seconds(command)
    assert drain + 10 <= grace, f"--drain-seconds {drain} must end well before the {grace} s grace period"

    sbatch = ROOT / "deploy/slurm/megabatch-workers.sbatch"
    subprocess.run(["bash", "-n", str(sbatch)], check=True)
    text = sbatch.read_text()
    drain = int(re.search(r"MEGABATCH_DRAIN_SECONDS:-(\d+)", text).group(1))
    assert drain < KILL_WAIT_DEFAULT, f"drain {drain} s must fit in KillWait {KILL_WAIT_DEFAULT} s"
    print("deploy files: OK (Kubernetes grace %d s, drain within it; Slurm drain %d s)" % (grace, drain))


if __name__ == "__main__":
    try:
        main()
    except AssertionError as e:
        print("deploy files: " + str(e), file=sys.stderr)
        sys.exit(1)
