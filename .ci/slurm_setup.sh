#!/usr/bin/env bash
# Install a one-node SLURM (Debian's slurm-wlm + munge) for tests/scaling/test_slurm.py. Idempotent; needs root and apt.
# The tests start and stop their own daemons (tests/helpers/slurm_cluster.py): nothing is configured or started here.
set -euo pipefail
# Jobs reach each other (DDP's MASTER_ADDR) by the node's short hostname: make sure it resolves.
if ! getent hosts "$(hostname -s)" >/dev/null; then
    echo "127.0.0.1 $(hostname -s)" >> /etc/hosts
    echo "slurm_setup: added $(hostname -s) to /etc/hosts"
fi
if command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v munged >/dev/null \
    && command -v sbatch >/dev/null; then
    echo "slurm_setup: SLURM already installed ($(slurmctld -V))"
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "slurm_setup: installing slurm-wlm and munge needs root (apt-get)" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
# A fresh machine may have empty package lists: update once if the first install attempt cannot find the packages.
apt-get install -y --no-install-recommends slurm-wlm munge \
    || { apt-get update && apt-get install -y --no-install-recommends slurm-wlm munge; }
echo "slurm_setup: installed $(slurmctld -V)"
