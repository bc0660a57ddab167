#!/usr/bin/env bash
# A one-node Slurm cluster on this machine, from Debian's packages (as root):
#
#   bash tools/misc/slurm_local.sh install      # apt-get what is missing
#   bash tools/misc/slurm_local.sh start DIR    # munged, slurmctld, slurmd
#   export SLURM_CONF=DIR/slurm.conf            # then sinfo, srun, sbatch ...
#   bash tools/misc/slurm_local.sh stop DIR     # cancel its jobs, stop them
#
# Everything lives under DIR: slurm.conf, a fresh munge key and munged's
# socket, the daemons' state, spool, logs and pid files.  No systemd and no
# cgroups are needed (proctrack/linuxproc, task/none); the node is
# "localhost" with CPUS (default 2) CPUs in partition PARTITION (default
# debug) and no GRES.  The ports are free ones picked at start (or
# SLURMCTLD_PORT, SLURMD_PORT), so several clusters can run side by side.
# Authentication is munge (Slurm 22.05 has no auth/none): munged runs with
# the key, socket, pid and log files under DIR, and slurm.conf points
# Slurm at that socket (AuthInfo=socket=...).
set -euo pipefail

PACKAGES=(slurmctld slurmd slurm-client munge iproute2)

usage() {
    echo "usage: slurm_local.sh install | start DIR | stop DIR | status DIR" >&2
    exit 2
}

need_root() {
    [[ $(id -u) -eq 0 ]] || { echo "slurm_local.sh: $1 needs root" >&2; exit 1; }
}

install() {
    need_root install
    local missing=() p
    for p in "${PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' \
            || missing+=("$p")
    done
    if [[ ${#missing[@]} -eq 0 ]]; then
        echo "slurm_local.sh: ${PACKAGES[*]} already installed"
        return
    fi
    echo "slurm_local.sh: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

free_port() {  # a TCP port nothing listens on, from a range of its own
    local port
    while :; do
        port=$(( 20000 + RANDOM % 20000 ))
        ss -Htln "sport = :$port" | grep -q . || { echo "$port"; return; }
    done
}

start() {
    need_root start
    local dir=${1:?usage: slurm_local.sh start DIR}
    for cmd in munged slurmctld slurmd srun; do
        command -v "$cmd" >/dev/null || {
            echo "slurm_local.sh: $cmd not found; run 'slurm_local.sh install'" >&2
            exit 1; }
    done
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd)
    chmod 0755 "$dir"  # munged refuses a socket folder others can write to
    mkdir -p "$dir"/{munge,state,spool,log}
    chmod 0755 "$dir/munge"  # munged: others may reach its socket

    # munge: a key of this cluster's own, everything else beside it
    dd if=/dev/urandom of="$dir/munge/munge.key" bs=1024 count=1 status=none
    chmod 0400 "$dir/munge/munge.key"
    munged --key-file="$dir/munge/munge.key" \
        --socket="$dir/munge/munge.socket" \
        --pid-file="$dir/munge/munged.pid" \
        --log-file="$dir/log/munged.log" \
        --seed-file="$dir/munge/munge.seed"

    local ctld_port=${SLURMCTLD_PORT:-$(free_port)}
    local slurmd_port=${SLURMD_PORT:-$(free_port)}
    cat >"$dir/slurm.conf" <<EOF
ClusterName=gcnetmm
SlurmctldHost=localhost
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$dir/munge/munge.socket
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
KillWait=5
MinJobAge=30
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
NodeName=localhost NodeAddr=127.0.0.1 CPUs=${CPUS:-2} State=UNKNOWN
PartitionName=${PARTITION:-debug} Nodes=localhost Default=YES MaxTime=INFINITE State=UP
EOF
    export SLURM_CONF="$dir/slurm.conf"
    slurmctld -i
    slurmd -N localhost
    # up when the node takes jobs
    local i state=
    for i in $(seq 1 60); do
        state=$(sinfo -h -n localhost -o %T 2>/dev/null || true)
        [[ $state == idle ]] && { echo "slurm_local.sh: cluster up, SLURM_CONF=$SLURM_CONF"; return; }
        sleep 0.5
    done
    echo "slurm_local.sh: the node did not come up (state: ${state:-none}); logs:" >&2
    tail -n 20 "$dir"/log/*.log >&2 || true
    stop "$dir"
    exit 1
}

stop_pid_file() {  # TERM the daemon of a pid file, KILL it after 10 s
    local file=$1 pid i
    [[ -s $file ]] || return 0
    pid=$(<"$file")
    kill -TERM "$pid" 2>/dev/null || { rm -f "$file"; return 0; }
    for i in $(seq 1 100); do
        kill -0 "$pid" 2>/dev/null || { rm -f "$file"; return 0; }
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    rm -f "$file"
}

stop() {
    local dir=${1:?usage: slurm_local.sh stop DIR}
    [[ -d $dir ]] || return 0
    export SLURM_CONF="$dir/slurm.conf"
    if [[ -s $dir/slurmctld.pid ]] && kill -0 "$(<"$dir/slurmctld.pid")" 2>/dev/null; then
        # every job of this cluster, and wait for their steps to end
        scancel --full --quiet $(squeue -h -o %i 2>/dev/null) 2>/dev/null || true
        local i
        for i in $(seq 1 60); do
            [[ -z $(squeue -h -o %i 2>/dev/null) ]] && break
            sleep 0.5
        done
    fi
    stop_pid_file "$dir/slurmd.pid"
    stop_pid_file "$dir/slurmctld.pid"
    stop_pid_file "$dir/munge/munged.pid"
    echo "slurm_local.sh: stopped the cluster of $dir"
}

status() {
    export SLURM_CONF="${1:?usage: slurm_local.sh status DIR}/slurm.conf"
    sinfo
    squeue
}

case ${1:-} in
    install) install ;;
    start) start "${2:-}" ;;
    stop) stop "${2:-}" ;;
    status) status "${2:-}" ;;
    *) usage ;;
esac
