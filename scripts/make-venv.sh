#!/usr/bin/env bash
# Create the project's virtualenv with the console, its test tools and CASA 6.
set -euo pipefail
venv=$1; casa_pkgs=$2
py=""
for cand in python3.11 python3; do
  if command -v "$cand" >/dev/null && "$cand" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
    py=$cand; break
  fi
done
[ -n "$py" ] || { echo "Python 3.11 not found — install python3.11 (CASA 6.7 wheels need it)" >&2; exit 1; }
start=$(date +%s)
[ -x "$venv/bin/python" ] || "$py" -m venv "$venv"
# shellcheck disable=SC2086
"$venv/bin/pip" install -q --disable-pip-version-check -e '.[test]' $casa_pkgs 2> >(grep -v "is ignored: it is neither" >&2)
echo "Python packages installed in $(( $(date +%s) - start )) s"
