#!/bin/sh
# Container start script of the Cassandra example (the image's entrypoint in the
# classic Kubernetes tutorial). Turns CASSANDRA_* variables into Cassandra's
# configuration, then runs Cassandra in the foreground -- or, where no
# Cassandra is installed (or STOWAGE_CASSANDRA_STANDIN=1), a clearly labelled
# stand-in so the orchestration can still be exercised.
#
# Cassandra is looked for, in order:
#   1. $CASSANDRA_HOME/bin/cassandra (an unpacked tarball),
#   2. $CASSANDRA_LIB: a directory of jars holding cassandra-all-*.jar, run
#      directly as `java ... CassandraDaemon` with conf/jvm17-server.options,
#   3. /opt/stowage/cassandra/lib, where scripts/setup.sh installs those jars
#      from Maven Central (run the same way),
#   4. `cassandra` on PATH.
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
cassandra_lib=""
if [ "${STOWAGE_CASSANDRA_STANDIN:-0}" != "1" ]; then
    if [ -n "${CASSANDRA_HOME:-}" ]; then
        if [ ! -x "$CASSANDRA_HOME/bin/cassandra" ]; then
            # An explicit installation that is not there is a mistake: do not hide it behind the stand-in.
            say "CASSANDRA_HOME=$CASSANDRA_HOME has no executable bin/cassandra"
            exit 2
        fi
        cassandra_bin=$CASSANDRA_HOME/bin/cassandra
    elif [ -n "${CASSANDRA_LIB:-}" ]; then
        if ! ls "$CASSANDRA_LIB"/cassandra-all-*.jar >/dev/null 2>&1; then
            # As with CASSANDRA_HOME: a wrong path is a mistake, not a reason for the stand-in.
            say "CASSANDRA_LIB=$CASSANDRA_LIB holds no cassandra-all-*.jar (run scripts/setup.sh)"
            exit 2
        fi
        cassandra_lib=$(cd "$CASSANDRA_LIB" && pwd)
    elif ls /opt/stowage/cassandra/lib/cassandra-all-*.jar >/dev/null 2>&1; then
        cassandra_lib=/opt/stowage/cassandra/lib
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

# Members share the host's network and JMX binds 127.0.0.1, so each member
# takes its own JMX port: 7199 + ordinal (nodetool -p PORT). The one place
# that decides it; the probe, preStop and bin/nodetool read the file.
host=${HOSTNAME:-$(hostname)}
ordinal=${host##*-}
case $ordinal in ''|*[!0-9]*) ordinal=0 ;; esac
jmx_port=$((7199 + ordinal))
echo "$jmx_port" > "$CASSANDRA_CONF/stowage-jmx-port"

if [ -n "$cassandra_lib" ]; then
    echo cassandra > "$CASSANDRA_CONF/stowage-mode"
    echo "$cassandra_lib" > "$CASSANDRA_CONF/stowage-cassandra-lib"
    cp "$TEMPLATES/logback.xml" "$CASSANDRA_CONF/logback.xml"
    java=${JAVA_HOME:+$JAVA_HOME/bin/}java
    # One option per line in both files; comments and blank lines dropped.
    # Word splitting is wanted here: no option contains a space.
    opts=$(sed -e 's/#.*//' -e '/^[[:space:]]*$/d' "$TEMPLATES/jvm17-server.options" "$CASSANDRA_CONF/jvm.options")
    say "starting Cassandra (Maven install $cassandra_lib): java CassandraDaemon (conf $CASSANDRA_CONF, data $CASSANDRA_DATA_DIR, JMX 127.0.0.1:$jmx_port)"
    # ring_delay_ms and the gossip-settle wait are Cassandra's start-up pauses
    # (30 s and up to ~30 s by default), sized for large clusters on real
    # networks; CASSANDRA_RING_DELAY_MS shortens them for small rings.
    # shellcheck disable=SC2086
    exec "$java" $opts \
        -Dcassandra-foreground=yes \
        -Dcassandra.config="file://$CASSANDRA_CONF/cassandra.yaml" \
        -Dcassandra.storagedir="$CASSANDRA_DATA_DIR" \
        -Dcassandra.logdir=/tmp \
        -Dlogback.configurationFile="$CASSANDRA_CONF/logback.xml" \
        -Dcassandra.jmx.local.port="$jmx_port" \
        -Dcassandra.ring_delay_ms="${CASSANDRA_RING_DELAY_MS:-30000}" \
        -Dcassandra.skip_wait_for_gossip_to_settle="${CASSANDRA_GOSSIP_SETTLE_POLLS:--1}" \
        -XX:ErrorFile=/tmp/hs_err_%p.log -XX:HeapDumpPath=/tmp \
        -cp "$CASSANDRA_CONF:$cassandra_lib/*" \
        org.apache.cassandra.service.CassandraDaemon
fi

if [ -n "$cassandra_bin" ]; then
    echo cassandra > "$CASSANDRA_CONF/stowage-mode"
    if [ -f "$CASSANDRA_CONF/cassandra-env.sh" ]; then
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
