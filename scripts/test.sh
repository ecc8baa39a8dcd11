#!/usr/bin/env bash
# Installs what the tests need (idempotent), then runs the whole test suite.
# Every service a test needs (PostgreSQL, emulators) is started by the tests
# themselves on 127.0.0.1 and stopped at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
set +e
# Parallel workers (pytest-xdist): most tests wait on subprocesses, mounts and servers, not on the CPU, so
# more workers than cores pays. `--dist loadgroup` keeps the tests of one heavy service (Ceph, glusterd,
# ganesha, tgtd) or of one module-scoped fixture in one worker (tests/conftest.py), so each starts once.
# STOWAGE_TEST_WORKERS=0 runs everything in this one process.
workers=${STOWAGE_TEST_WORKERS:-4}
# The tests' temp directories (pool images, backups: over a GB in a run) live in one directory of this run's
# own, removed at its end, instead of pytest's default /tmp/pytest-of-<user>, which keeps the last three
# runs'. --one-file-system: a mount a failed test left is never removed through, and its directory stays.
basetemp=$(mktemp -d "${TMPDIR:-/tmp}/stowage-tests.XXXXXX")
trap 'rm -rf --one-file-system "$basetemp"' EXIT
python3 -m pytest -p no:cacheprovider -q -rsfE --timeout=600 --durations=30 -n "$workers" --dist loadgroup \
    --basetemp "$basetemp/run" "$@"
rc=$?
set -e
# pytest's "no tests collected" (5) is a failure of the suite, not a pass.
exit $rc
