#!/usr/bin/env bash
# Creates (or reuses) the Python venv that runs moto server for the AWS adapter's
# tests and prints the path of its python on stdout (everything else goes to stderr).
#
# The venv lives under ${BATCH_AUTOSCALER_CACHE:-$HOME/.cache/batch-autoscaler}/,
# named after a hash of requirements.txt, so a changed pin builds a fresh one and an
# unchanged one is reused across runs. A lock keeps two concurrent runs from
# building the same venv at once; a marker file keeps a half-built venv from being
# reused after an interrupted install.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
requirements="$here/requirements.txt"
cache="${BATCH_AUTOSCALER_CACHE:-$HOME/.cache/batch-autoscaler}"
hash="$(sha256sum "$requirements" | cut -c1-16)"
venv="$cache/venv-moto-$hash"
mkdir -p "$cache"
exec 9>"$cache/venv-moto.lock"
flock 9
if [ ! -f "$venv/.complete" ]; then
    echo "ensure-venv: creating $venv" >&2
    rm -rf "$venv"
    python3 -m venv "$venv" >&2
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$requirements" >&2
    touch "$venv/.complete"
fi
echo "$venv/bin/python"
