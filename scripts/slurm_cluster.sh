#!/usr/bin/env bash
# A one-node Slurm cluster in a directory, for tests and for trying the
# worker job (deploy/slurm/megabatch-workers.sbatch) on one machine:
#   scripts/slurm_cluster.sh start DIR   # munged, slurmctld, slurmd; prints
#                                        # the SLURM_CONF to export
#   scripts/slurm_cluster.sh stop DIR
# Needs root (slurmd runs jobs as their users) and Debian's slurm-wlm and
# munge (scripts/install_deps.sh installs them). Exit 77 when it cannot
# start one here, saying why.
set -euo pipefail
cmd=${1:?usage: slurm_cluster.sh start|stop DIR}
dir=$(realpath -m "${2:?usage: slurm_cluster.sh start|stop DIR}")

stop() {
  for pidfile in "$dir"/slurmd.pid "$dir"/slurmctld.pid "$dir"/munged.pid; do
    [[ -f $pidfile ]] && kill "$(cat "$pidfile")" 2>/dev/null || true
  done
  for _ in $(seq 50); do
    pgrep -f "$dir/slurm.conf" >/dev/null || pgrep -f "$dir/munge" >/dev/null || return 0
    sleep 0.1
  done
  pkill -9 -f "$dir/slurm.conf" 2>/dev/null || true
  pkill -9 -f "$dir/munge" 2>/dev/null || true
}

if [[ $cmd == stop ]]; then
  stop
  exit 0
fi
[[ $cmd == start ]] || { echo "usage: slurm_cluster.sh start|stop DIR" >&2; exit 2; }
if [[ $(id -u) != 0 ]]; then
  echo "slurm_cluster.sh: needs root (slurmd runs jobs as their users)" >&2
  exit 77
fi
for bin in munged slurmctld slurmd sbatch; do
  command -v "$bin" >/dev/null || { echo "slurm_cluster.sh: $bin missing (apt-get install slurm-wlm munge)" >&2; exit 77; }
done

mkdir -p "$dir"/{state,spool,log}
chmod 700 "$dir"
# Its own munge key and socket: the host's munged, if any, is not touched.
if [[ ! -f $dir/munge.key ]]; then
  head -c 1024 /dev/urandom >"$dir/munge.key"
  chmod 400 "$dir/munge.key"
fi
munged --force --key-file="$dir/munge.key" --socket="$dir/munge.socket" \
  --pid-file="$dir/munged.pid" --log-file="$dir/log/munged.log" \
  --seed-file="$dir/munge.seed"

free_port() { /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
node=$(hostname -s)
cpus=$(nproc)
memory=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 1024 ))
cat >"$dir/slurm.conf" <<CONF
ClusterName=megabatch-test
SlurmctldHost=$node(127.0.0.1)
SlurmctldPort=$(free_port)
SlurmdPort=$(free_port)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$dir/munge.socket
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
MpiDefault=none
ReturnToService=2
SchedulerType=sched/backfill
JobCompType=jobcomp/none
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
# scancel and the time limit send SIGTERM, then SIGKILL this many seconds
# later: the workers' --drain-seconds must fit in it.
KillWait=30
SlurmctldTimeout=30
SlurmdTimeout=30
NodeName=$node NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$memory State=UNKNOWN
PartitionName=debug Nodes=$node Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES
CONF
export SLURM_CONF=$dir/slurm.conf
slurmctld -f "$SLURM_CONF"
slurmd -f "$SLURM_CONF"
for _ in $(seq 100); do
  if sinfo -h -o '%T' 2>/dev/null | grep -q '^idle'; then
    echo "export SLURM_CONF=$SLURM_CONF"
    exit 0
  fi
  sleep 0.2
done
echo "slurm_cluster.sh: the node did not come up; logs in $dir/log" >&2
sinfo >&2 || true
tail -5 "$dir"/log/*.log >&2 || true
stop
exit 77
