#!/usr/bin/env bash
# Set up (or refresh) .venv and run the test suite:  bash tools/run_tests.sh [pytest args]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash tools/setup_env.sh
exec .venv/bin/python -m pytest tests "$@"
