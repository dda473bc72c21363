#!/usr/bin/env bash
# Runs a single-node Apache Cassandra 5.0 on 127.0.0.1 for the KV integration tests.
#
# The node runs from the org.apache.cassandra:cassandra-all jar and its Maven
# dependencies (see pom.xml beside this script) on Java 17, with the JVM flags of
# Cassandra's own conf/jvm-server.options and conf/jvm17-server.options.
#
# Usage: run-cassandra.sh fetch|start|stop|status|clean
# Environment (defaults in brackets):
#   CASSANDRA_DIR            data, logs, configuration and pid file [/tmp/actias-cassandra]
#   CASSANDRA_CACHE_DIR      downloaded jars [$HOME/.cache/actias-cassandra]
#   CASSANDRA_NATIVE_PORT    CQL port on 127.0.0.1 [9042]
#   CASSANDRA_STORAGE_PORT   inter-node port on 127.0.0.1 [17000]
#   CASSANDRA_JMX_PORT       local-only JMX port, for nodetool [17199]
#   CASSANDRA_HEAP           -Xms and -Xmx value [1G]
#   CASSANDRA_START_TIMEOUT  seconds that start waits for CQL [180]
#   CASSANDRA_STOP_TIMEOUT   seconds that stop waits before SIGKILL [60]
#   CASSANDRA_MLOCKALL       1 lets Cassandra lock its memory with mlockall [0]
#   JAVA_HOME                Java 17 installation [the java on PATH]
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
POM="$SCRIPT_DIR/pom.xml"

HOST=127.0.0.1
CASSANDRA_DIR=${CASSANDRA_DIR:-/tmp/actias-cassandra}
CACHE_DIR=${CASSANDRA_CACHE_DIR:-$HOME/.cache/actias-cassandra}
NATIVE_PORT=${CASSANDRA_NATIVE_PORT:-9042}
STORAGE_PORT=${CASSANDRA_STORAGE_PORT:-17000}
JMX_PORT=${CASSANDRA_JMX_PORT:-17199}
HEAP=${CASSANDRA_HEAP:-1G}
START_TIMEOUT=${CASSANDRA_START_TIMEOUT:-180}
STOP_TIMEOUT=${CASSANDRA_STOP_TIMEOUT:-60}
MLOCKALL=${CASSANDRA_MLOCKALL:-0}

CONF_DIR="$CASSANDRA_DIR/conf"
DATA_DIR="$CASSANDRA_DIR/data"
LOG_DIR="$CASSANDRA_DIR/logs"
PID_FILE="$CASSANDRA_DIR/cassandra.pid"
SYSTEM_LOG="$LOG_DIR/system.log"
STDOUT_LOG="$LOG_DIR/stdout.log"
READY_LINE="Starting listening for CQL clients"

log() {
    echo "run-cassandra: $*" >&2
}

die() {
    log "error: $*"
    exit 1
}

cassandra_version() {
    local version
    version=$(sed -n 's:.*<cassandra.version>\(.*\)</cassandra.version>.*:\1:p' "$POM")
    [[ -n "$version" ]] || die "no <cassandra.version> property found in $POM"
    echo "$version"
}

jamm_version() {
    local version
    version=$(sed -n 's:.*<jamm.version>\(.*\)</jamm.version>.*:\1:p' "$POM")
    [[ -n "$version" ]] || die "no <jamm.version> property found in $POM"
    echo "$version"
}

lib_dir() {
    echo "$CACHE_DIR/cassandra-$(cassandra_version)/lib"
}

# Prints the java command to use and fails unless it is Java 17. Cassandra 5.0
# runs on Java 11 and 17 (cassandra.apache.org/doc/latest/cassandra/reference/java17.html),
# and the JVM flags below are the ones Cassandra ships for Java 17.
java_command() {
    local java spec
    if [[ -n "${JAVA_HOME:-}" ]]; then
        java="$JAVA_HOME/bin/java"
    else
        java=$(command -v java) || die "java not found on PATH. Install Java 17 or set JAVA_HOME."
    fi
    spec=$("$java" -XshowSettings:properties -version 2>&1 |
        sed -n 's/^ *java.specification.version = //p')
    [[ "$spec" == "17" ]] ||
        die "$java is Java '${spec:-unknown}', but this script needs Java 17. Set JAVA_HOME to a Java 17 installation."
    echo "$java"
}

# Downloads cassandra-all, its runtime dependencies and jamm into the cache.
# A stamp file holding the pom's checksum makes a second run a no-op.
cmd_fetch() {
    local lib stamp checksum tmp
    lib=$(lib_dir)
    stamp="$lib/.fetched"
    checksum=$(sha256sum "$POM" | cut -d' ' -f1)
    if [[ -f "$stamp" && "$(cat "$stamp")" == "$checksum" ]]; then
        log "jars for Cassandra $(cassandra_version) already in $lib"
        return 0
    fi
    command -v mvn >/dev/null || die "mvn not found on PATH. Install Maven 3.8 or newer."

    log "downloading Cassandra $(cassandra_version) jars into $lib"
    mkdir -p "$(dirname "$lib")"
    tmp=$(mktemp -d "$(dirname "$lib")/lib.tmp.XXXXXX")
    # Maven's output goes to a file and is shown only on failure. Even with -B
    # and -q, Maven 3.8 writes stray ANSI reset codes to stdout.
    if ! timeout 900 mvn -B -q -Dstyle.color=never -f "$POM" dependency:copy-dependencies \
        -DincludeScope=runtime -DoutputDirectory="$tmp" >"$tmp.log" 2>&1; then
        tail -n 40 "$tmp.log" >&2
        rm -rf "$tmp" "$tmp.log"
        rmdir "$(dirname "$lib")" 2>/dev/null || true
        die "mvn dependency:copy-dependencies failed or timed out after 900 s (pom: $POM)"
    fi
    rm -f "$tmp.log"
    [[ -f "$tmp/cassandra-all-$(cassandra_version).jar" ]] || {
        rm -rf "$tmp"
        die "cassandra-all-$(cassandra_version).jar is missing after mvn dependency:copy-dependencies"
    }
    echo "$checksum" >"$tmp/.fetched"
    rm -rf "$lib"
    mv "$tmp" "$lib"
    log "fetched $(find "$lib" -name '*.jar' | wc -l) jars into $lib"
}

# Prints the pid from the pid file if that process is a running CassandraDaemon.
running_pid() {
    local pid
    [[ -f "$PID_FILE" ]] || return 1
    pid=$(cat "$PID_FILE")
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    [[ -r "/proc/$pid/cmdline" ]] || return 1
    grep -qa 'org.apache.cassandra.service.CassandraDaemon' "/proc/$pid/cmdline" || return 1
    echo "$pid"
}

# The single-quoted scripts below get the host and port as $0 and $1 of the child bash.
# shellcheck disable=SC2016
port_open() {
    timeout 2 bash -c 'exec 3<>"/dev/tcp/$0/$1"' "$HOST" "$1" 2>/dev/null
}

# Sends a CQL protocol v4 OPTIONS request and checks that the reply header is a
# v4 response (0x84), flags 0, stream 0, opcode SUPPORTED (0x06).
# shellcheck disable=SC2016
cql_handshake() {
    timeout 5 bash -c '
        exec 3<>"/dev/tcp/$0/$1" || exit 1
        printf "\x04\x00\x00\x00\x05\x00\x00\x00\x00" >&3
        reply=$(head -c 5 <&3 | od -An -tx1 | tr -d " \n")
        [[ "$reply" == "8400000006" ]]' "$HOST" "$NATIVE_PORT" 2>/dev/null
}

rss_mib() {
    awk '/^VmRSS:/ { printf "%d", $2 / 1024 }' "/proc/$1/status" 2>/dev/null
}

file_size() {
    if [[ -f "$1" ]]; then stat -c %s "$1"; else echo 0; fi
}

# Prints the last 40 lines that the current start wrote to stdout.log and
# system.log, skipping what earlier runs left in those files.
print_log_tail() {
    local file offset
    for file in "$STDOUT_LOG" "$SYSTEM_LOG"; do
        offset=$STDOUT_LOG_OFFSET
        [[ "$file" == "$SYSTEM_LOG" ]] && offset=$SYSTEM_LOG_OFFSET
        if (($(file_size "$file") > offset)); then
            log "last 40 lines that this start wrote to $file:"
            tail -c "+$((offset + 1))" "$file" | tail -n 40 >&2
        fi
    done
}

# Writes $CONF_DIR/cassandra.yaml from the template, replacing the @NAME@ placeholders.
write_config() {
    local escaped_data_dir
    mkdir -p "$CONF_DIR/triggers" "$DATA_DIR" "$LOG_DIR"
    escaped_data_dir=$(printf '%s' "$DATA_DIR" | sed 's/[\\|&]/\\&/g')
    sed -e "s|@DATA_DIR@|$escaped_data_dir|g" \
        -e "s|@NATIVE_PORT@|$NATIVE_PORT|g" \
        -e "s|@STORAGE_PORT@|$STORAGE_PORT|g" \
        "$SCRIPT_DIR/cassandra.yaml" >"$CONF_DIR/cassandra.yaml"
    cp "$SCRIPT_DIR/logback.xml" "$CONF_DIR/logback.xml"
}

# Fills the array JVM_OPTS with the JVM flags for the node.
build_jvm_opts() {
    local lib=$1
    JVM_OPTS=(
        "-Xms$HEAP" "-Xmx$HEAP"

        # From conf/jvm-server.options, with two flags left out. -XX:+AlwaysPreTouch
        # would touch the whole heap at start-up, which costs time and resident
        # memory. Java 17 deprecates -XX:-UseBiasedLocking.
        -ea
        -da:net.openhft...
        -XX:+UseThreadPriorities
        -XX:+HeapDumpOnOutOfMemoryError
        "-XX:HeapDumpPath=$CASSANDRA_DIR"
        # Cassandra's start-up check warns without one of the OutOfMemoryError
        # flags, because a node that goes on after an OOM can corrupt data.
        -XX:+ExitOnOutOfMemoryError
        -Xss256k
        -XX:+UseTLAB
        -XX:+ResizeTLAB
        -XX:+UseNUMA
        -XX:+PerfDisableSharedMem
        -Djava.net.preferIPv4Stack=true

        # From conf/jvm17-server.options: G1 settings.
        -XX:+UseG1GC
        -XX:+ParallelRefProcEnabled
        -XX:MaxTenuringThreshold=1
        -XX:G1HeapRegionSize=16m
        -XX:G1RSetUpdatingPauseTimePercent=5
        -XX:MaxGCPauseMillis=300
        -XX:InitiatingHeapOccupancyPercent=70

        # From conf/jvm17-server.options: module access (exports and opens).
        -Djdk.attach.allowAttachSelf=true
        --add-exports java.base/jdk.internal.misc=ALL-UNNAMED
        --add-exports java.management.rmi/com.sun.jmx.remote.internal.rmi=ALL-UNNAMED
        --add-exports java.rmi/sun.rmi.registry=ALL-UNNAMED
        --add-exports java.rmi/sun.rmi.server=ALL-UNNAMED
        --add-exports java.sql/java.sql=ALL-UNNAMED
        --add-exports java.base/java.lang.ref=ALL-UNNAMED
        --add-exports jdk.unsupported/sun.misc=ALL-UNNAMED
        --add-exports jdk.compiler/com.sun.tools.javac.file=ALL-UNNAMED
        --add-exports jdk.attach/sun.tools.attach=ALL-UNNAMED
        --add-opens java.base/java.lang.module=ALL-UNNAMED
        --add-opens java.base/jdk.internal.loader=ALL-UNNAMED
        --add-opens java.base/jdk.internal.ref=ALL-UNNAMED
        --add-opens java.base/jdk.internal.reflect=ALL-UNNAMED
        --add-opens java.base/jdk.internal.math=ALL-UNNAMED
        --add-opens java.base/jdk.internal.module=ALL-UNNAMED
        --add-opens java.base/jdk.internal.util.jar=ALL-UNNAMED
        --add-opens jdk.management/com.sun.management.internal=ALL-UNNAMED
        --add-opens java.base/sun.nio.ch=ALL-UNNAMED
        --add-opens java.base/java.io=ALL-UNNAMED
        --add-opens java.base/java.lang.reflect=ALL-UNNAMED
        --add-opens jdk.compiler/com.sun.tools.javac=ALL-UNNAMED
        --add-opens java.base/java.lang=ALL-UNNAMED
        --add-opens java.base/java.util=ALL-UNNAMED

        # From conf/jvm17-server.options: Netty settings.
        -Dio.netty.tryReflectionSetAccessible=true
        -Dio.netty.allocator.useCacheForAllThreads=true
        -Dio.netty.allocator.maxOrder=11

        # From conf/cassandra-env.sh: jamm measures object sizes for memtable accounting.
        "-javaagent:$lib/jamm-$(jamm_version).jar"
        "-Dcassandra.jmx.local.port=$JMX_PORT"
        # "-" marks jemalloc as deliberately not preloaded, so the start-up check
        # logs that fact instead of a warning.
        -Dcassandra.libjemalloc=-

        # A single node has no peers, so skip the gossip settle wait and shorten
        # RING_DELAY from its default of 30 s.
        -Dcassandra.skip_wait_for_gossip_to_settle=0
        -Dcassandra.ring_delay_ms=1000

        "-Dcassandra.config=file://$CONF_DIR/cassandra.yaml"
        "-Dlogback.configurationFile=$CONF_DIR/logback.xml"
        "-Dcassandra.logdir=$LOG_DIR"
        "-Dcassandra.storagedir=$DATA_DIR"
        "-Dcassandra.triggers_dir=$CONF_DIR/triggers"
        # Keeps stdout and stderr open so that JVM errors reach stdout.log.
        -Dcassandra-foreground=yes
    )
}

# Fills the array LAUNCH_PREFIX with the command that keeps Cassandra from
# locking its memory. CassandraDaemon always calls mlockall(MCL_CURRENT), and
# it only logs a warning when that fails. The call succeeds as root or with an
# unlimited RLIMIT_MEMLOCK. It then faults in the whole heap, which on a 2-core
# test machine added about 4 s to start-up and 0.9 GiB of resident memory (one
# comparison, see README.md). Without CAP_IPC_LOCK and with a finite
# RLIMIT_MEMLOCK, mlockall fails with ENOMEM, as it does for an ordinary user.
build_launch_prefix() {
    LAUNCH_PREFIX=()
    [[ "$MLOCKALL" == "1" ]] && return 0
    if [[ "$(ulimit -l)" == "unlimited" ]]; then
        LAUNCH_PREFIX+=(prlimit --memlock=8388608)
    fi
    if (($(sed -n 's/^CapEff:\t//p' /proc/self/status | sed 's/^/0x/') & (1 << 14))); then
        command -v setpriv >/dev/null ||
            die "setpriv not found, so Cassandra cannot be kept from locking its memory. Install util-linux or set CASSANDRA_MLOCKALL=1."
        LAUNCH_PREFIX+=(setpriv --inh-caps=-ipc_lock --bounding-set=-ipc_lock)
    fi
}

cmd_start() {
    local pid java lib started elapsed port
    if pid=$(running_pid); then
        if cql_handshake; then
            log "Cassandra is already running (pid $pid) and accepts CQL on $HOST:$NATIVE_PORT"
            return 0
        fi
        die "Cassandra is already running (pid $pid) but does not accept CQL on $HOST:$NATIVE_PORT. Run '$0 stop' first."
    fi
    for port in "$NATIVE_PORT" "$STORAGE_PORT" "$JMX_PORT"; do
        if port_open "$port"; then
            die "port $HOST:$port is already in use by another process. Stop it or set CASSANDRA_NATIVE_PORT, CASSANDRA_STORAGE_PORT or CASSANDRA_JMX_PORT."
        fi
    done

    java=$(java_command)
    cmd_fetch
    lib=$(lib_dir)
    write_config
    build_jvm_opts "$lib"
    build_launch_prefix

    # Only log lines written after these offsets belong to the new process.
    SYSTEM_LOG_OFFSET=$(file_size "$SYSTEM_LOG")
    STDOUT_LOG_OFFSET=$(file_size "$STDOUT_LOG")

    started=$(date +%s%N)
    log "starting Cassandra $(cassandra_version) from $lib with data in $CASSANDRA_DIR"
    nohup "${LAUNCH_PREFIX[@]}" "$java" "${JVM_OPTS[@]}" -cp "$CONF_DIR:$lib/*" \
        org.apache.cassandra.service.CassandraDaemon >>"$STDOUT_LOG" 2>&1 </dev/null &
    pid=$!
    echo "$pid" >"$PID_FILE"
    # An interrupted start must not leave a half-started node behind.
    trap 'log "start interrupted, stopping pid $pid"; cmd_stop; exit 130' INT TERM

    while true; do
        elapsed=$((($(date +%s%N) - started) / 1000000))
        if ! kill -0 "$pid" 2>/dev/null; then
            rm -f "$PID_FILE"
            print_log_tail
            die "Cassandra (pid $pid) exited during start-up after $((elapsed / 1000)) s. See the logs in $LOG_DIR."
        fi
        # A pipe from tail would fail under pipefail, because grep -q closes it
        # early and tail then gets SIGPIPE. Process substitution avoids that.
        if [[ -f "$SYSTEM_LOG" ]] &&
            grep -q "$READY_LINE" < <(tail -c "+$((SYSTEM_LOG_OFFSET + 1))" "$SYSTEM_LOG") &&
            cql_handshake; then
            break
        fi
        if ((elapsed >= START_TIMEOUT * 1000)); then
            print_log_tail
            log "Cassandra did not accept CQL on $HOST:$NATIVE_PORT within $START_TIMEOUT s. Stopping pid $pid."
            cmd_stop || true
            exit 1
        fi
        sleep 0.5
    done
    trap - INT TERM
    printf 'run-cassandra: Cassandra %s is ready on %s:%s after %d.%03d s (pid %s, RSS %s MiB)\n' \
        "$(cassandra_version)" "$HOST" "$NATIVE_PORT" $((elapsed / 1000)) $((elapsed % 1000)) \
        "$pid" "$(rss_mib "$pid")" >&2
}

cmd_stop() {
    local pid waited
    if ! pid=$(running_pid); then
        rm -f "$PID_FILE"
        log "Cassandra is not running (no live CassandraDaemon in $PID_FILE)"
        return 0
    fi
    log "stopping Cassandra (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    waited=0
    while kill -0 "$pid" 2>/dev/null && ((waited < STOP_TIMEOUT * 2)); do
        sleep 0.5
        waited=$((waited + 1))
    done
    if kill -0 "$pid" 2>/dev/null; then
        log "pid $pid is still running after $STOP_TIMEOUT s. Sending SIGKILL."
        kill -KILL "$pid" 2>/dev/null || true
        waited=0
        while kill -0 "$pid" 2>/dev/null && ((waited < 20)); do
            sleep 0.5
            waited=$((waited + 1))
        done
        kill -0 "$pid" 2>/dev/null && die "pid $pid is still running after SIGKILL"
    fi
    rm -f "$PID_FILE"
    if port_open "$NATIVE_PORT"; then
        die "Cassandra (pid $pid) stopped, but $HOST:$NATIVE_PORT still accepts connections from another process"
    fi
    log "Cassandra stopped"
}

# Exits 0 when the node accepts CQL, 1 when it runs but does not accept CQL,
# and 3 when it is not running.
cmd_status() {
    local pid
    if ! pid=$(running_pid); then
        echo "Cassandra is not running (CASSANDRA_DIR=$CASSANDRA_DIR)"
        exit 3
    fi
    if cql_handshake; then
        echo "Cassandra is running (pid $pid, RSS $(rss_mib "$pid") MiB) and accepts CQL on $HOST:$NATIVE_PORT"
        exit 0
    fi
    echo "Cassandra is running (pid $pid) but does not accept CQL on $HOST:$NATIVE_PORT"
    exit 1
}

# Removes what start wrote into CASSANDRA_DIR, so that the next start begins with an empty node.
cmd_clean() {
    local pid
    if pid=$(running_pid); then
        die "Cassandra is running (pid $pid). Run '$0 stop' before clean."
    fi
    rm -rf "$CONF_DIR" "$DATA_DIR" "$LOG_DIR" "$PID_FILE" "$CASSANDRA_DIR"/java_pid*.hprof
    rmdir "$CASSANDRA_DIR" 2>/dev/null || true
    log "removed the node's files in $CASSANDRA_DIR"
}

usage() {
    cat >&2 <<EOF
Usage: $0 fetch|start|stop|status|clean

  fetch   download Cassandra $(cassandra_version) jars into $CACHE_DIR
  start   fetch if needed, then start a node with data in $CASSANDRA_DIR and wait
          up to $START_TIMEOUT s until it accepts CQL on $HOST:$NATIVE_PORT
  stop    stop the node with SIGTERM, then SIGKILL after $STOP_TIMEOUT s
  status  exit 0 if the node accepts CQL, 1 if it runs without CQL, 3 if it is not running
  clean   delete the node's configuration, data and logs (the node must be stopped)

See the comment at the top of this script for the environment variables.
EOF
}

case "${1:-}" in
    fetch) cmd_fetch ;;
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    clean) cmd_clean ;;
    -h | --help | help) usage ;;
    *)
        usage
        exit 2
        ;;
esac
