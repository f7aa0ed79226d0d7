#!/usr/bin/env bash
# A single-node Slurm cluster on this machine, to try and test `--executor slurm`.
#
#   scripts/slurm-local.sh up       install Slurm when missing, start it, wait until the node is idle
#   scripts/slurm-local.sh down     cancel its jobs, stop exactly the daemons `up` started
#   scripts/slurm-local.sh status   the daemons and the node (exit 0 when the cluster is up)
#   scripts/slurm-local.sh env      the line that points Slurm's commands at it: eval "$(scripts/slurm-local.sh env)"
#
# The cluster is munged, MariaDB and slurmdbd (accounting, so that `sacct`
# reports job states as on a real cluster), slurmctld and slurmd, all run as
# root on localhost, on ports of their own (6917-6919), with everything they
# write (config, munge key and socket, database, state, logs, pid files) in
# SLURM_LOCAL_DIR (default /tmp/slurm-local). Nothing is written under /etc:
# Slurm's commands find the config through SLURM_CONF, and batch jobs inherit
# it. The node has this host's CPUs and 95 % of its memory; cores and memory are
# consumable, so jobs share the node. Timings are shortened for tests: pending
# jobs are scheduled within 2 s, a requeued job may start again after 11 s
# (Slurm's default is 2 minutes), a cancelled one is killed 5 s after its
# SIGTERM. `up` when the cluster is up only checks it.
#
# Exit status: 0 done; 1 failed (the daemons' logs are in SLURM_LOCAL_DIR/log);
# 3 Slurm cannot run here (not root, or its packages cannot be installed).
set -Eeuo pipefail
trap 'say "failed at line $LINENO of $0; logs in $LOG"' ERR

DIR=${SLURM_LOCAL_DIR:-/tmp/slurm-local}
CONF=$DIR/etc/slurm.conf
RUN=$DIR/run
LOG=$DIR/log
MUNGE_SOCKET=$RUN/munge.socket
DB_SOCKET=$RUN/mariadb.socket
CTLD_PORT=6917 SLURMD_PORT=6918 DBD_PORT=6919
PARTITION=local
DAEMONS=(munged mariadbd slurmdbd slurmctld slurmd)  # in start order
PACKAGES=(slurmctld slurmd slurm-client slurmdbd munge mariadb-server)
export SLURM_CONF=$CONF

say() { echo "slurm-local: $*" >&2; }
unavailable() { say "$*"; exit 3; }

pid_of() {  # the pid of a daemon this script started, if it still runs
    local file=$RUN/$1.pid pid
    [[ -s $file ]] || return 1
    pid=$(<"$file")
    [[ $(ps -o comm= -p "$pid") == "$1" && $(ps -o stat= -p "$pid") != Z* ]] && echo "$pid"
}

wait_for() {  # wait_for SECONDS WHAT COMMAND...: run COMMAND every 0.5 s until it succeeds
    local deadline=$((SECONDS + $1)) what=$2
    shift 2
    until "$@" >/dev/null 2>&1; do
        if ((SECONDS >= deadline)); then
            say "timed out waiting for $what; logs in $LOG"
            return 1
        fi
        sleep 0.5
    done
}

install_packages() {
    local missing=()
    for command in slurmctld slurmd sbatch slurmdbd munged mariadbd; do
        command -v "$command" >/dev/null || missing+=("$command")
    done
    ((${#missing[@]})) || return 0
    command -v apt-get >/dev/null || unavailable "${missing[*]} missing; install ${PACKAGES[*]} (Debian's names)"
    say "installing ${PACKAGES[*]}"
    # the packages must not start their system-wide services: Debian's policy-rc.d says no, only while installing
    local policy=/usr/sbin/policy-rc.d added=""
    if [[ ! -e $policy ]]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy" && added=$policy
    fi
    local status=0
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        "${PACKAGES[@]}"; } >"$DIR/apt.log" 2>&1 || status=$?
    [[ -n $added ]] && rm -f "$added"
    ((status == 0)) || unavailable "could not install ${PACKAGES[*]}: see $DIR/apt.log"
}

write_config() {
    local node memory_mb cpus
    node=$(slurmd -C | head -n 1)  # NodeName=<host> CPUs=... RealMemory=...
    memory_mb=$(sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' <<<"$node")
    cpus=$(sed -n 's/.* CPUs=\([0-9]*\).*/\1/p' <<<"$node")
    memory_mb=$((memory_mb * 95 / 100))
    cat >"$CONF" <<EOF
# Written by scripts/slurm-local.sh: a single-node cluster on $(hostname -s).
ClusterName=local
SlurmctldHost=$(hostname -s)(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
AuthType=auth/munge
CredType=cred/munge
# cred_expire also sets how long a requeued job waits before it may start again (default 120 s)
AuthInfo=socket=$MUNGE_SOCKET,cred_expire=10
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$RUN/slurmctld.pid
SlurmdPidFile=$RUN/slurmd.pid
SlurmctldLogFile=$LOG/slurmctld.log
SlurmdLogFile=$LOG/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=$((memory_mb / cpus))
ReturnToService=2
KillWait=5
# pending jobs are looked at every 2 s rather than every 30 to 60 s
SchedulerParameters=sched_interval=2,bf_interval=2
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=$DBD_PORT
AccountingStoragePass=$MUNGE_SOCKET
JobAcctGatherType=jobacct_gather/none
${node%% UpTime=*} RealMemory=$memory_mb State=UNKNOWN
PartitionName=$PARTITION Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
    cat >"$DIR/etc/slurmdbd.conf" <<EOF
AuthType=auth/munge
AuthInfo=socket=$MUNGE_SOCKET
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=$DBD_PORT
SlurmUser=root
PidFile=$RUN/slurmdbd.pid
LogFile=$LOG/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=root
StorageLoc=slurm_acct_db
EOF
    chmod 600 "$DIR/etc/slurmdbd.conf"
}

start() {  # start DAEMON unless it runs
    pid_of "$1" >/dev/null && return 0
    case $1 in
        munged)
            [[ -s $DIR/munge/munge.key ]] || { dd if=/dev/urandom of="$DIR/munge/munge.key" bs=1024 count=1 status=none
                                                chmod 600 "$DIR/munge/munge.key"; }
            munged --key-file="$DIR/munge/munge.key" --socket="$MUNGE_SOCKET" --pid-file="$RUN/munged.pid" \
                --log-file="$LOG/munged.log" --seed-file="$DIR/munge/munged.seed"
            wait_for 20 munged munge --socket="$MUNGE_SOCKET" --no-input ;;
        mariadbd)
            [[ -d $DIR/db/mysql ]] || mariadb-install-db --no-defaults --datadir="$DIR/db" --user=root \
                --auth-root-authentication-method=socket --skip-test-db >"$LOG/mariadb-install-db.log" 2>&1
            setsid -f mariadbd --no-defaults --datadir="$DIR/db" --socket="$DB_SOCKET" --skip-networking \
                --pid-file="$RUN/mariadbd.pid" --user=root --innodb-lock-wait-timeout=900 \
                --log-error="$LOG/mariadbd.log" </dev/null >/dev/null 2>&1
            wait_for 60 MariaDB mariadb-admin --socket="$DB_SOCKET" ping ;;
        slurmdbd)
            MYSQL_UNIX_PORT=$DB_SOCKET slurmdbd </dev/null >/dev/null 2>&1
            wait_for 60 slurmdbd sacctmgr --noheader list cluster ;;
        slurmctld)
            slurmctld </dev/null >/dev/null 2>&1
            wait_for 60 slurmctld scontrol ping ;;
        slurmd)
            slurmd </dev/null >/dev/null 2>&1 ;;
    esac
    wait_for 20 "$1's pid file" pid_of "$1"
}

node_idle() { [[ $(sinfo --noheader --partition=$PARTITION --format=%t) == idle ]]; }
no_jobs() { [[ -z $(squeue --noheader) ]]; }
stopped() { ! pid_of "$1" >/dev/null; }

up() {
    if [[ $(id -u) != 0 ]]; then
        unavailable "a local cluster runs slurmd, which needs root"
    fi
    mkdir -p "$DIR"/{etc,state,spool,db} "$RUN" "$LOG"
    install_packages
    mkdir -p -m 700 "$DIR/munge"
    chmod 755 "$DIR" "$RUN"  # munge wants its socket's folders readable by all
    for daemon in "${DAEMONS[@]}"; do pid_of "$daemon" >/dev/null || { write_config; break; }; done
    for daemon in "${DAEMONS[@]}"; do start "$daemon"; done
    wait_for 60 "the node to be idle" node_idle
    say "up ($(sinfo --version)); point Slurm's commands at it with:"
    echo "export SLURM_CONF=$CONF"
}

down() {
    if pid_of slurmctld >/dev/null; then
        squeue --noheader --format=%A | sort -u | xargs -r scancel
        wait_for 60 "the jobs to end" no_jobs || true
    fi
    local daemon pid
    for ((i = ${#DAEMONS[@]} - 1; i >= 0; i--)); do
        daemon=${DAEMONS[i]}
        pid=$(pid_of "$daemon") || continue
        kill -TERM "$pid" 2>/dev/null || continue  # it ended meanwhile
        wait_for 30 "$daemon to stop" stopped "$daemon" || kill -KILL "$pid" 2>/dev/null || true
    done
    say "down"
}

status() {
    local up=0 daemon pid
    for daemon in "${DAEMONS[@]}"; do
        if pid=$(pid_of "$daemon"); then echo "$daemon: running, pid $pid"; else echo "$daemon: stopped"; up=1; fi
    done
    ((up == 0)) && sinfo
    return $up
}

case ${1:-} in
    up) up ;;
    down) down ;;
    status) status || exit 1 ;;
    env) echo "export SLURM_CONF=$CONF" ;;
    *) echo "usage: $0 up|down|status|env" >&2; exit 2 ;;
esac
