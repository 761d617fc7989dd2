#!/usr/bin/env bash
# Install the Debian packages the console and its tests use, only if missing.
set -euo pipefail
need=()
have() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ]; }
have sshd || need+=(openssh-server)
{ have slurmctld && have slurmd && have sbatch; } || need+=(slurm-wlm)
have munged || need+=(munge)
have tmux || need+=(tmux)
have chromium || need+=(chromium)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ]; then
  echo "missing Debian packages: ${need[*]} — run as root, or: sudo apt-get install ${need[*]}" >&2
  exit 1
fi
echo "installing Debian packages: ${need[*]}"
start=$(date +%s)
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
echo "Debian packages installed in $(( $(date +%s) - start )) s"
