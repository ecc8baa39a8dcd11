#!/bin/sh
# Readiness probe of the Cassandra example: ready when this member reports
# itself Up/Normal (a tarball install, through nodetool), accepts CQL
# connections on its 9042 (the Maven install: Cassandra opens the native
# port only once it has joined the ring as NORMAL, and a TCP connect costs
# nothing where a nodetool JVM every 5 s per member would cost a core), or
# when the stand-in answers on 9042.
CONF=${CASSANDRA_CONF:-/etc/cassandra}
HERE=$(cd "$(dirname "$0")" && pwd)
addr=${POD_IP:-$(hostname -i | cut -d' ' -f1)}
mode=$(cat "$CONF/stowage-mode" 2>/dev/null || true)
case $mode in
    standin)
        exec "${PYTHON:-python3}" "$HERE/standin.py" --probe "$addr"
        ;;
    cassandra)
        if [ -f "$CONF/stowage-cassandra-lib" ]; then
            if "${PYTHON:-python3}" -c 'import socket,sys; socket.create_connection((sys.argv[1], 9042), 3).close()' "$addr" 2>/dev/null; then
                exit 0
            fi
            echo "not ready: $addr:9042 (CQL) does not accept connections yet"
            exit 1
        fi
        port=$(cat "$CONF/stowage-jmx-port" 2>/dev/null || echo 7199)
        nodetool=nodetool
        if [ -n "${CASSANDRA_HOME:-}" ]; then nodetool=$CASSANDRA_HOME/bin/nodetool; fi
        if "$nodetool" -h 127.0.0.1 -p "$port" status 2>/dev/null | grep -Eq "^UN +$addr( |$)"; then
            exit 0
        fi
        echo "not ready: $addr is not Up/Normal in nodetool status"
        exit 1
        ;;
    *)
        echo "not ready: the start script has not chosen Cassandra or the stand-in yet"
        exit 1
        ;;
esac
