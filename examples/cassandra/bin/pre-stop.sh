#!/bin/sh
# preStop hook of the Cassandra example: leave the ring only when it is whole,
# then hand this member's writes over (nodetool drain).
#
# A rolling update stops the next member as soon as the one it just restarted
# is Ready, that is, accepts CQL. Its peers mark it Up only once its gossip
# reaches them, seconds later on a busy machine. A member that stops inside that
# window leaves a range replicated three times with one live replica in some
# coordinator's view, and QUORUM requests fail there. So this member first waits,
# with back-off, until it sees every member Up/Normal. The wait is bounded
# (PRESTOP_RING_WAIT seconds, default 20, inside the pod's 30 s grace period):
# a member that is really down must not keep this one from stopping.
CONF=${CASSANDRA_CONF:-/etc/cassandra}
HERE=$(cd "$(dirname "$0")" && pwd)
mode=$(cat "$CONF/stowage-mode" 2>/dev/null || true)
[ "$mode" = cassandra ] || exit 0 # the stand-in keeps nothing to hand over
port=$(cat "$CONF/stowage-jmx-port" 2>/dev/null || echo 7199)
if [ -f "$CONF/stowage-cassandra-lib" ]; then
    set -- "$HERE/nodetool" # the Maven install: reads the port itself
elif [ -n "${CASSANDRA_HOME:-}" ]; then
    set -- "$CASSANDRA_HOME/bin/nodetool" -h 127.0.0.1 -p "$port"
elif command -v nodetool >/dev/null 2>&1; then
    set -- nodetool -h 127.0.0.1 -p "$port"
else
    echo "preStop: no nodetool: not draining"
    exit 0
fi

limit=${PRESTOP_RING_WAIT:-20}
deadline=$(($(date +%s) + limit))
pause=1
while :; do
    # JMX not answering: the member is not running, there is nothing to wait for.
    status=$("$@" status 2>/dev/null) || break
    members=$(printf '%s\n' "$status" | grep -cE '^[UD][NLJM] ')
    normal=$(printf '%s\n' "$status" | grep -cE '^UN ')
    if [ "$members" -gt 0 ] && [ "$members" -eq "$normal" ]; then
        break
    fi
    if [ "$(date +%s)" -ge "$deadline" ]; then
        echo "preStop: $((members - normal)) of $members members still not Up/Normal after ${limit}s: draining anyway"
        break
    fi
    echo "preStop: waiting for $((members - normal)) of $members members to be Up/Normal"
    sleep "$pause"
    pause=$((pause * 2))
    if [ "$pause" -gt 4 ]; then pause=4; fi
done
"$@" drain || true
