#!/bin/sh
# Container start script of the Cassandra example (the image's entrypoint in the
# classic Kubernetes tutorial). Turns CASSANDRA_* variables into Cassandra's
# configuration, then runs Cassandra in the foreground -- or, where no
# Cassandra is installed (or STOWAGE_CASSANDRA_STANDIN=1), a clearly labelled
# stand-in so the orchestration can still be exercised.
#
# Cassandra is looked for at $CASSANDRA_HOME/bin/cassandra, then on PATH.
# The configuration is rendered into $CASSANDRA_CONF (default /etc/cassandra,
# which lives in the container's own writable layer), starting from the
# installation's conf/ directory when there is one.
# STOWAGE_RENDER_ONLY=1 stops after rendering (used by the example's tests).
set -eu

HERE=$(cd "$(dirname "$0")" && pwd)
TEMPLATES=${STOWAGE_CASSANDRA_TEMPLATES:-$(dirname "$HERE")/conf}
PYTHON=${PYTHON:-python3}
CASSANDRA_CONF=${CASSANDRA_CONF:-/etc/cassandra}
CASSANDRA_DATA_DIR=${CASSANDRA_DATA_DIR:-/cassandra_data}
export CASSANDRA_CONF CASSANDRA_DATA_DIR

say() { echo "run.sh: $*" >&2; }

cassandra_bin=""
if [ "${STOWAGE_CASSANDRA_STANDIN:-0}" != "1" ]; then
    if [ -n "${CASSANDRA_HOME:-}" ]; then
        if [ ! -x "$CASSANDRA_HOME/bin/cassandra" ]; then
            # An explicit installation that is not there is a mistake: do not hide it behind the stand-in.
            say "CASSANDRA_HOME=$CASSANDRA_HOME has no executable bin/cassandra"
            exit 2
        fi
        cassandra_bin=$CASSANDRA_HOME/bin/cassandra
    elif command -v cassandra >/dev/null 2>&1; then
        cassandra_bin=$(command -v cassandra)
    fi
fi

mkdir -p "$CASSANDRA_CONF"
if [ -n "$cassandra_bin" ]; then
    home=${CASSANDRA_HOME:-$(dirname "$(dirname "$cassandra_bin")")}
    if [ -d "$home/conf" ] && [ "$(cd "$home/conf" && pwd)" != "$(cd "$CASSANDRA_CONF" && pwd)" ]; then
        # logback.xml, cassandra-env.sh and the jvm*-options files come from the installation.
        cp -R "$home/conf/." "$CASSANDRA_CONF/"
    fi
fi

"$PYTHON" "$HERE/render_config.py" --conf-dir "$CASSANDRA_CONF" --templates "$TEMPLATES"
for d in data commitlog saved_caches hints; do
    mkdir -p "$CASSANDRA_DATA_DIR/$d"
done

if [ "${STOWAGE_RENDER_ONLY:-0}" = "1" ]; then
    exit 0
fi

if [ -n "$cassandra_bin" ]; then
    echo cassandra > "$CASSANDRA_CONF/stowage-mode"
    if [ -f "$CASSANDRA_CONF/cassandra-env.sh" ]; then
        # Members share the host's network and JMX binds 127.0.0.1, so each
        # member takes its own JMX port: 7199 + ordinal (nodetool -p PORT).
        host=${HOSTNAME:-$(hostname)}
        ordinal=${host##*-}
        case $ordinal in ''|*[!0-9]*) ordinal=0 ;; esac
        jmx_port=$((7199 + ordinal))
        echo "$jmx_port" > "$CASSANDRA_CONF/stowage-jmx-port"
        echo "JVM_OPTS=\"\$JVM_OPTS -Dcassandra.jmx.local.port=$jmx_port\"" >> "$CASSANDRA_CONF/cassandra-env.sh"
    fi
    say "starting Cassandra: $cassandra_bin -f (conf $CASSANDRA_CONF, data $CASSANDRA_DATA_DIR)"
    if [ "$(id -u)" = "0" ]; then
        exec "$cassandra_bin" -f -R
    fi
    exec "$cassandra_bin" -f
fi

echo standin > "$CASSANDRA_CONF/stowage-mode"
say "no Cassandra installation found (or STOWAGE_CASSANDRA_STANDIN=1): starting the STAND-IN, not Cassandra"
exec "$PYTHON" "$HERE/standin.py"
