#!/usr/bin/env bash
# Install and start a single-node SLURM (munge + slurmctld + slurmd) on this machine, for the
# `slurm`-marked tests. Works in containers without systemd: the daemons are started directly.
#
# Idempotent: if the controller already answers and the node is usable, it only checks and exits 0.
# Needs root (apt-get, daemons running as root). Exit status 0 = `sinfo` shows the node idle/mixed.
#
# Environment knobs:
#   SLURM_CI_PARTITION   partition name (default: debug)
#   SLURM_CI_MEM_MB      RealMemory to advertise (default: free memory minus 1 GiB, at most 16 GiB)
#   SLURM_CI_TIMEOUT     seconds to wait for the node to become idle (default: 60)
set -euo pipefail

PARTITION="${SLURM_CI_PARTITION:-debug}"
TIMEOUT="${SLURM_CI_TIMEOUT:-60}"
NODE="$(hostname -s)"
CONF_DIR=/etc/slurm
CONF="$CONF_DIR/slurm.conf"
LOG_DIR=/var/log/slurm
CTLD_SPOOL=/var/spool/slurmctld
D_SPOOL=/var/spool/slurmd

log() { echo "[slurm.sh] $*" >&2; }

node_ready() {
    # True when the controller answers and our node is in a schedulable state.
    local state
    state="$(sinfo -h -N -n "$NODE" -o '%T' 2>/dev/null | head -n1)" || return 1
    case "$state" in
        idle|idle~|mixed|allocated|completing) return 0 ;;
        *) return 1 ;;
    esac
}

if command -v sinfo >/dev/null 2>&1 && timeout 10 scontrol ping >/dev/null 2>&1 && node_ready; then
    log "SLURM already running; node $NODE is $(sinfo -h -N -n "$NODE" -o '%T')"
    sinfo
    exit 0
fi

if [ "$(id -u)" != 0 ]; then
    log "must run as root (installs packages and starts daemons)"
    exit 1
fi

# ---------------------------------------------------------------- install
if ! command -v slurmctld >/dev/null 2>&1 || ! command -v munged >/dev/null 2>&1; then
    log "installing slurm-wlm and munge"
    # Without systemd the maintainer scripts would try (and fail) to start the services:
    # forbid that while installing, we start the daemons ourselves below.
    policy=/usr/sbin/policy-rc.d
    had_policy=0
    [ -e "$policy" ] && had_policy=1
    if [ "$had_policy" = 0 ]; then
        printf '#!/bin/sh\nexit 101\n' > "$policy"
        chmod +x "$policy"
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends slurm-wlm munge >/dev/null
    [ "$had_policy" = 0 ] && rm -f "$policy"
fi

# ---------------------------------------------------------------- munge
mkdir -p /etc/munge /var/lib/munge /var/log/munge /run/munge
if [ ! -s /etc/munge/munge.key ]; then
    log "writing munge key"
    dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
fi
if id munge >/dev/null 2>&1; then
    chown -R munge:munge /etc/munge /var/lib/munge /var/log/munge /run/munge
fi
chmod 0700 /etc/munge /var/lib/munge /var/log/munge
chmod 0755 /run/munge
chmod 0400 /etc/munge/munge.key
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    log "starting munged"
    rm -f /run/munge/munge.socket.2 /run/munge/munged.pid
    if id munge >/dev/null 2>&1; then
        su -s /bin/sh munge -c "/usr/sbin/munged" || /usr/sbin/munged --force
    else
        /usr/sbin/munged --force
    fi
    for _ in $(seq 20); do
        munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break
        sleep 0.5
    done
    munge -n | unmunge >/dev/null || { log "munged does not answer"; exit 1; }
fi

# ---------------------------------------------------------------- slurm.conf
CPUS="$(nproc)"
# Node topology as slurmd reports it (a mismatch is logged and can drain the node).
TOPO="$(/usr/sbin/slurmd -C 2>/dev/null | head -n1 \
    | grep -o 'SocketsPerBoard=[0-9]* CoresPerSocket=[0-9]* ThreadsPerCore=[0-9]*' || true)"
if [ -n "${SLURM_CI_MEM_MB:-}" ]; then
    MEM_MB="$SLURM_CI_MEM_MB"
else
    total_mb="$(free -m | awk '/^Mem:/ {print $2}')"
    MEM_MB=$(( total_mb - 1024 ))
    [ "$MEM_MB" -gt 16384 ] && MEM_MB=16384
    [ "$MEM_MB" -lt 1024 ] && MEM_MB=1024
fi

mkdir -p "$CONF_DIR" "$LOG_DIR" "$CTLD_SPOOL" "$D_SPOOL" /run/slurm
new_conf="$(mktemp)"
cat > "$new_conf" <<EOF
# Single-node SLURM for pairextract's CI (written by .ci/slurm.sh). Everything runs as root,
# no cgroups (containers without systemd), no accounting database.
ClusterName=pairextract-ci
SlurmctldHost=${NODE}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
# The advertised memory may differ from what slurmd measures inside a container.
SlurmdParameters=config_overrides
SlurmctldPidFile=/run/slurm/slurmctld.pid
SlurmdPidFile=/run/slurm/slurmd.pid
SlurmctldLogFile=${LOG_DIR}/slurmctld.log
SlurmdLogFile=${LOG_DIR}/slurmd.log
StateSaveLocation=${CTLD_SPOOL}
SlurmdSpoolDir=${D_SPOOL}
SlurmctldPort=6817
SlurmdPort=6818
SlurmctldTimeout=30
SlurmdTimeout=60
InactiveLimit=0
MinJobAge=60
KillWait=5
Waittime=0
# scancel'd jobs must die quickly (worker-loss test)
UnkillableStepTimeout=30
NodeName=${NODE} NodeAddr=127.0.0.1 CPUs=${CPUS} ${TOPO} RealMemory=${MEM_MB} State=UNKNOWN
PartitionName=${PARTITION} Nodes=${NODE} Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
EOF
conf_changed=0
if ! cmp -s "$new_conf" "$CONF" 2>/dev/null; then
    log "writing $CONF (NodeName=$NODE CPUs=$CPUS RealMemory=$MEM_MB)"
    cp "$new_conf" "$CONF"
    conf_changed=1
fi
rm -f "$new_conf"
chmod 0644 "$CONF"
# No cgroup.conf: with proctrack/linuxproc and task/none slurmd only autodetects cgroups and
# does not need them (Slurm 22.05 has no CgroupPlugin=disabled).

# ---------------------------------------------------------------- daemons
pid_alive() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

if [ "$conf_changed" = 1 ]; then
    # A configuration change needs restarted daemons.
    for pidf in /run/slurm/slurmd.pid /run/slurm/slurmctld.pid; do
        if pid_alive "$pidf"; then
            log "stopping $(basename "$pidf" .pid) for the new configuration"
            kill "$(cat "$pidf")" || true
            for _ in $(seq 20); do pid_alive "$pidf" || break; sleep 0.5; done
        fi
    done
fi

if ! pid_alive /run/slurm/slurmctld.pid; then
    log "starting slurmctld"
    /usr/sbin/slurmctld
fi
if ! pid_alive /run/slurm/slurmd.pid; then
    log "starting slurmd"
    /usr/sbin/slurmd
fi

# ---------------------------------------------------------------- wait for the node
deadline=$(( $(date +%s) + TIMEOUT ))
while true; do
    if timeout 10 scontrol ping >/dev/null 2>&1; then
        state="$(sinfo -h -N -n "$NODE" -o '%T' 2>/dev/null | head -n1 || true)"
        case "$state" in
            idle|mixed|allocated|completing) break ;;
            down*|drain*|fail*)
                # e.g. left DOWN by a previous unclean stop: bring it back.
                scontrol update NodeName="$NODE" State=RESUME >/dev/null 2>&1 || true ;;
        esac
    fi
    if [ "$(date +%s)" -ge "$deadline" ]; then
        log "node $NODE not idle after ${TIMEOUT}s (state: ${state:-no answer})"
        tail -n 20 "$LOG_DIR/slurmctld.log" "$LOG_DIR/slurmd.log" >&2 || true
        exit 1
    fi
    sleep 1
done
log "SLURM is up: node $NODE $state"
sinfo
