#!/usr/bin/env bash
# Installs what the tests need (idempotent), then runs the whole test suite.
# Every service a test needs (PostgreSQL, emulators) is started by the tests
# themselves on 127.0.0.1 and stopped at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
set +e
python3 -m pytest -p no:cacheprovider -q -rs --timeout=600 --durations=30 "$@"
rc=$?
set -e
# pytest's "no tests collected" (5) is a failure of the suite, not a pass.
exit $rc
