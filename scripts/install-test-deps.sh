#!/usr/bin/env bash
# Installs Kinema with its test dependencies. torch is pinned first so pip takes the local
# CPU wheel instead of pulling a multi-GB CUDA build through an open version range.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install -q torch==2.13.0
python3 -m pip install -q -e ".[test]"
