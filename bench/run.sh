#!/usr/bin/env bash
# Benchmarks Actias against nginx with lua-nginx-module in one run, and
# writes the table to bench/RESULTS.md. bench/README.md describes the
# scenarios, the settings below and how to read the table.
#
# Usage: bench/run.sh   (as root; ROUNDS=1 DURATION=3 for a smoke run)
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(dirname "$BENCH_DIR")

# Settings: environment variables, with their defaults.
ROUNDS=${ROUNDS:-3}                     # measured rounds per scenario and server
DURATION=${DURATION:-10}                # seconds per measured wrk run
WARMUP=${WARMUP:-2}                     # seconds of wrk before each measured run
CONNECTIONS=${CONNECTIONS:-64}          # wrk keep-alive connections
WRK_THREADS=${WRK_THREADS:-1}           # wrk threads, all on LOAD_CPU
S5_ROUTES=${S5_ROUTES:-1000}            # routes (distinct hosts) in S5
S6_RESTARTS=${S6_RESTARTS:-20}          # fresh starts per server in S6
IDLE_CONNECTIONS=${IDLE_CONNECTIONS:-10000} # idle keep-alive connections in MEM
BASE_PORT=${BASE_PORT:-24600}           # the ports used are BASE_PORT+1 .. +11
SERVER_CPU=${SERVER_CPU:-0}             # core for the server under test
LOAD_CPU=${LOAD_CPU:-1}                 # core for wrk, the origin and the probes
SCENARIOS=${SCENARIOS:-"S0 S1 S2 S3 S4 S5 S6 MEM"}
SERVERS=${SERVERS:-"actias nginx floor"}
RESULTS_FILE=${RESULTS_FILE:-$BENCH_DIR/RESULTS.md}
RUN_NOTE=${RUN_NOTE:-}                  # free text added under the title of RESULTS_FILE
SKIP_INSTALL=${SKIP_INSTALL:-0}         # 1 skips the Debian package check and install
KEEP_TMP=${KEEP_TMP:-0}                 # 1 keeps the temporary directory
NGINX_MODULES_DIR=${NGINX_MODULES_DIR:-/usr/lib/nginx/modules}
ACTIAS_BIN=${ACTIAS_BIN:-}              # prebuilt actias, or empty for cargo build --release
FLOOR_BIN=${FLOOR_BIN:-}                # prebuilt floor, empty to build it, or "none" to skip it

ACTIAS_PORT=$((BASE_PORT + 1))
NGINX_PORT=$((BASE_PORT + 2))
FLOOR_PORT=$((BASE_PORT + 3))
ORIGIN_PORT=$((BASE_PORT + 10))
ORIGIN_STATUS_PORT=$((BASE_PORT + 11))

# Upper bounds, in seconds, for steps that wait on another process.
PORT_WAIT_SECONDS=20
STOP_WAIT_SECONDS=10
INSTALL_TIMEOUT_SECONDS=1800
BUILD_TIMEOUT_SECONDS=3600

PACKAGES=(nginx libnginx-mod-http-lua lua-cjson wrk)

# S2 reads this key of this namespace. Both servers store it before the load.
KV_NAMESPACE=bench
KV_KEY=greeting
KV_VALUE='{"hello":"world"}'

# Processes started by this script that are still running, by pid.
STARTED_PIDS=()
TMP_DIR=""
FAILED_CHECKS=0

log() {
    printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2
}

die() {
    printf '[bench] error: %s\n' "$*" >&2
    exit 1
}

# --- Process handling -------------------------------------------------
#
# Every server and probe starts under setsid, so that it leads a process
# group of its own that also contains the children it forks later (the
# nginx workers). Stopping a pid signals that group.

forget_pid() {
    local pid=$1 kept=() p
    for p in "${STARTED_PIDS[@]}"; do
        [[ $p == "$pid" ]] || kept+=("$p")
    done
    STARTED_PIDS=("${kept[@]}")
}

# Returns success while PID runs and has not exited as a zombie.
is_running() {
    local state
    state=$(awk '{print $3}' /proc/"$1"/stat 2>/dev/null) || return 1
    [[ -n $state && $state != Z ]]
}

# Stops the process group led by PID, which this script started. Sends
# SIGNAL, waits up to STOP_WAIT_SECONDS for the leader, then sends SIGKILL
# to what is left of the group.
stop_pid() {
    local pid=$1 signal=${2:-TERM} i
    forget_pid "$pid"
    [[ -n $pid ]] || return 0
    kill -s "$signal" -- -"$pid" 2>/dev/null || true
    for ((i = 0; i < STOP_WAIT_SECONDS * 20; i++)); do
        is_running "$pid" || break
        sleep 0.05
    done
    if is_running "$pid" && [[ $signal != KILL ]]; then
        log "pid $pid did not stop after SIG$signal within ${STOP_WAIT_SECONDS}s; sending SIGKILL"
    fi
    kill -KILL -- -"$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

cleanup() {
    local status=$? pid
    trap - EXIT INT TERM
    for pid in "${STARTED_PIDS[@]}"; do
        stop_pid "$pid" TERM
    done
    # The S6 probe starts each server in a process group of its own and
    # records the group's pid here.
    if [[ -n $TMP_DIR && -s $TMP_DIR/probe.pid ]]; then
        stop_pid "$(cat "$TMP_DIR/probe.pid")" KILL
    fi
    if [[ -n $TMP_DIR && -d $TMP_DIR ]]; then
        if [[ $KEEP_TMP == 1 || $status -ne 0 ]]; then
            log "configs and logs kept in $TMP_DIR"
        else
            rm -rf "$TMP_DIR"
        fi
    fi
    exit "$status"
}

# Fails unless nothing listens on PORT.
require_free_port() {
    local port=$1 users
    users=$(ss -Hltnp "sport = :$port" 2>/dev/null || true)
    if [[ -n $users ]]; then
        die "port $port is already in use: $users
Stop that process or choose other ports with BASE_PORT (ports BASE_PORT+1 to +11 are used)."
    fi
}

# Waits until PORT accepts connections while PID runs.
wait_for_port() {
    local port=$1 pid=$2 log_file=$3 i
    for ((i = 0; i < PORT_WAIT_SECONDS * 20; i++)); do
        if ! kill -0 "$pid" 2>/dev/null; then
            log "process $pid exited before listening on $port; last lines of $log_file:"
            tail -n 20 "$log_file" >&2 || true
            return 1
        fi
        if (exec 3<>/dev/tcp/127.0.0.1/"$port") 2>/dev/null; then
            return 0
        fi
        sleep 0.05
    done
    log "port $port did not accept connections within ${PORT_WAIT_SECONDS}s; last lines of $log_file:"
    tail -n 20 "$log_file" >&2 || true
    return 1
}

# Prints the resident memory in KiB of PID plus that of its children.
rss_kib() {
    local pid=$1 total=0 p value
    for p in "$pid" $(cat /proc/"$pid"/task/*/children 2>/dev/null); do
        value=$(awk '/^VmRSS:/ {print $2}' /proc/"$p"/status 2>/dev/null || true)
        total=$((total + ${value:-0}))
    done
    echo "$total"
}

# --- Setup ------------------------------------------------------------

install_peers() {
    local missing=() package
    for package in "${PACKAGES[@]}"; do
        if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'install ok installed'; then
            missing+=("$package")
        fi
    done
    if [[ ${#missing[@]} -eq 0 ]]; then
        return 0
    fi
    [[ $(id -u) -eq 0 ]] || die "missing packages ${missing[*]}; run as root or install them first"
    log "installing ${missing[*]}"
    # Debian starts nginx on port 80 after installing it unless a policy
    # forbids starting services, so add one for the install if none exists.
    local policy_added=0
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod +x /usr/sbin/policy-rc.d
        policy_added=1
    fi
    local status=0
    timeout "$INSTALL_TIMEOUT_SECONDS" apt-get update -q || status=$?
    if [[ $status -eq 0 ]]; then
        DEBIAN_FRONTEND=noninteractive timeout "$INSTALL_TIMEOUT_SECONDS" \
            apt-get install -y -q --no-install-recommends "${missing[@]}" || status=$?
    fi
    if [[ $policy_added == 1 ]]; then
        rm -f /usr/sbin/policy-rc.d
    fi
    [[ $status -eq 0 ]] || die "apt-get failed with status $status while installing ${missing[*]}"
}

build_actias() {
    if [[ -n $ACTIAS_BIN ]]; then
        [[ -x $ACTIAS_BIN ]] || die "ACTIAS_BIN=$ACTIAS_BIN is not an executable file"
        return 0
    fi
    log "building Actias: cargo build --release"
    (cd "$REPO_DIR" && timeout "$BUILD_TIMEOUT_SECONDS" cargo build --release --bin actias) ||
        die "cargo build --release failed"
    ACTIAS_BIN=$REPO_DIR/target/release/actias
}

build_floor() {
    if [[ $FLOOR_BIN == none ]]; then
        return 0
    fi
    if [[ -n $FLOOR_BIN ]]; then
        [[ -x $FLOOR_BIN ]] || die "FLOOR_BIN=$FLOOR_BIN is not an executable file"
        return 0
    fi
    # Start from the root lock file so that the floor is built with the same
    # Pingora and Tokio versions as Actias. Cargo drops the unused entries.
    cp "$REPO_DIR/Cargo.lock" "$BENCH_DIR/floor/Cargo.lock"
    log "building the Pingora floor: cargo build --release --manifest-path bench/floor/Cargo.toml"
    timeout "$BUILD_TIMEOUT_SECONDS" cargo build --release \
        --manifest-path "$BENCH_DIR/floor/Cargo.toml" \
        --target-dir "$BENCH_DIR/floor/target" ||
        die "building bench/floor failed"
    FLOOR_BIN=$BENCH_DIR/floor/target/release/actias-bench-floor
}

# --- Configs ----------------------------------------------------------

# Writes the Actias config of a scenario to DIR/actias.yaml.
write_actias_config() {
    local scenario=$1 dir=$2 i
    mkdir -p "$dir"
    cp "$BENCH_DIR"/scripts/*.lua "$dir/"
    {
        cat <<EOF
server:
  threads: 1
  grace_period_seconds: 0
  graceful_shutdown_timeout_seconds: 0
listeners:
  - address: 127.0.0.1:$ACTIAS_PORT
origins:
  - name: o
    servers: ["127.0.0.1:$ORIGIN_PORT"]
EOF
        # The embedded store is a redb file next to the config, so each
        # scenario directory has its own.
        if [[ $scenario == S2 ]]; then
            printf 'kv:\n  backend: embedded\n  embedded:\n    path: kv.redb\n'
        fi
        echo "routes:"
        case $scenario in
        S0) printf '  - {name: s0, default: true, script: ok.lua}\n' ;;
        S1) printf '  - {name: s1, default: true, script: hello.lua}\n' ;;
        S2) printf '  - {name: s2, default: true, script: kv_get.lua, kv: [%s]}\n' "$KV_NAMESPACE" ;;
        S3) printf '  - {name: s3, default: true, origin: o}\n' ;;
        S4) printf '  - {name: s4, default: true, script: add_header.lua, origin: o}\n' ;;
        S5)
            for ((i = 1; i <= S5_ROUTES; i++)); do
                printf '  - {name: h%d, hosts: ["h%d.bench.test"], script: hello.lua}\n' "$i" "$i"
            done
            ;;
        *) die "no Actias config for scenario $scenario" ;;
        esac
    } >"$dir/actias.yaml"
}

# Stores the S2 key in the store named by the Actias config CONFIG, with the
# `actias kv` command. It runs before the server starts, because the running
# server keeps the embedded store's file locked.
seed_actias_kv() {
    local config=$1 output
    if ! output=$("$ACTIAS_BIN" kv --config "$config" put "$KV_NAMESPACE" "$KV_KEY" "$KV_VALUE" 2>&1); then
        log "$ACTIAS_BIN kv --config $config put $KV_NAMESPACE $KV_KEY failed: $output"
        return 1
    fi
}

# Prints the lines shared by every nginx config: one worker, no access log,
# and every path under DIR.
nginx_common() {
    local dir=$1
    cat <<EOF
daemon off;
master_process on;
worker_processes 1;
worker_rlimit_nofile $NOFILE;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
load_module $NGINX_MODULES_DIR/ndk_http_module.so;
load_module $NGINX_MODULES_DIR/ngx_http_lua_module.so;
events {
    worker_connections $((IDLE_CONNECTIONS + 1024));
}
EOF
}

nginx_http_common() {
    local dir=$1
    cat <<EOF
    access_log off;
    default_type text/plain;
    # nginx closes a client connection after 1000 requests by default, but
    # Pingora does not, so lift the limit to compare the same keep-alive use.
    keepalive_requests 100000000;
    keepalive_timeout 300s;
    client_body_temp_path $dir/client_body;
    proxy_temp_path $dir/proxy;
    fastcgi_temp_path $dir/fastcgi;
    uwsgi_temp_path $dir/uwsgi;
    scgi_temp_path $dir/scgi;
EOF
}

# Prints the location blocks of the nginx peer for a scenario.
nginx_locations() {
    case $1 in
    S0)
        cat <<'EOF'
        location / {
            return 200 "ok";
        }
EOF
        ;;
    S1 | S5)
        # Actias sends a Content-Length, and without one nginx would send the
        # body chunked.
        cat <<'EOF'
        location / {
            content_by_lua_block {
                local cjson = require "cjson"
                local body = cjson.encode({hello = "world"})
                ngx.header["Content-Type"] = "application/json"
                ngx.header["Content-Length"] = #body
                ngx.print(body)
            }
        }
EOF
        ;;
    S2)
        # The http block declares the shared dictionary and stores the key
        # (see write_nginx_config). ngx.print sends no trailing newline, so
        # the body is the same as Actias's.
        cat <<EOF
        location / {
            content_by_lua_block {
                local body = ngx.shared.$KV_NAMESPACE:get("$KV_KEY")
                ngx.header["Content-Type"] = "application/json"
                ngx.header["Content-Length"] = #body
                ngx.print(body)
            }
        }
EOF
        ;;
    S3 | S4)
        if [[ $1 == S4 ]]; then
            cat <<'EOF'
        access_by_lua_block {
            ngx.req.set_header("x-bench", "1")
        }
        header_filter_by_lua_block {
            ngx.header["x-bench"] = "1"
        }
EOF
        fi
        # Actias forwards the client's Host and adds X-Forwarded-For and
        # X-Forwarded-Proto, so the peer does the same.
        cat <<'EOF'
        location / {
            proxy_pass http://origin;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $http_host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
        }
EOF
        ;;
    *) die "no nginx config for scenario $1" ;;
    esac
}

# Writes the nginx peer config of a scenario to DIR/nginx.conf.
write_nginx_config() {
    local scenario=$1 dir=$2 i
    mkdir -p "$dir"
    {
        nginx_common "$dir"
        echo "http {"
        nginx_http_common "$dir"
        cat <<EOF
    server_names_hash_max_size $((S5_ROUTES * 4 + 512));
    server_names_hash_bucket_size 64;
    upstream origin {
        server 127.0.0.1:$ORIGIN_PORT;
        keepalive 64;
        keepalive_requests 100000000;
        keepalive_timeout 300s;
    }
EOF
        if [[ $scenario == S2 ]]; then
            # init_by_lua runs in the master before the workers fork, and the
            # shared dictionary is shared memory, so the worker reads the key.
            cat <<EOF
    lua_shared_dict $KV_NAMESPACE 1m;
    init_by_lua_block {
        assert(ngx.shared.$KV_NAMESPACE:set("$KV_KEY", '$KV_VALUE'))
    }
EOF
        fi
        if [[ $scenario == S5 ]]; then
            for ((i = 1; i <= S5_ROUTES; i++)); do
                printf '    server {\n        listen 127.0.0.1:%d;\n        server_name h%d.bench.test;\n' \
                    "$NGINX_PORT" "$i"
                nginx_locations S5
                printf '    }\n'
            done
        else
            printf '    server {\n        listen 127.0.0.1:%d;\n' "$NGINX_PORT"
            nginx_locations "$scenario"
            printf '    }\n'
        fi
        echo "}"
    } >"$dir/nginx.conf"
}

# Writes the origin config. The origin returns a fixed small body with the
# request's x-bench header copied to X-Origin-Bench, and serves stub_status
# on a port of its own.
write_origin_config() {
    local dir=$1
    mkdir -p "$dir"
    {
        nginx_common "$dir"
        echo "http {"
        nginx_http_common "$dir"
        cat <<EOF
    server {
        listen 127.0.0.1:$ORIGIN_PORT;
        location / {
            add_header X-Origin-Bench \$http_x_bench;
            return 200 "origin ok\n";
        }
    }
    server {
        listen 127.0.0.1:$ORIGIN_STATUS_PORT;
        location / {
            stub_status;
        }
    }
}
EOF
    } >"$dir/nginx.conf"
}

# --- Servers ----------------------------------------------------------

# Prints the port of a server.
server_port() {
    case $1 in
    actias) echo "$ACTIAS_PORT" ;;
    nginx) echo "$NGINX_PORT" ;;
    floor) echo "$FLOOR_PORT" ;;
    *) die "unknown server $1" ;;
    esac
}

# Prints the signal that stops a server at once. Pingora shuts down
# gracefully on SIGTERM and at once on SIGINT. nginx stops at once on SIGTERM.
server_stop_signal() {
    case $1 in
    nginx) echo TERM ;;
    *) echo INT ;;
    esac
}

# Writes the config of a scenario under DIR and sets SERVER_COMMAND to the
# command line that starts the server with it. For Actias in S2 it also
# stores the key, and returns non-zero if that fails.
set_server_command() {
    local server=$1 scenario=$2 dir=$3
    case $server in
    actias)
        write_actias_config "$scenario" "$dir"
        if [[ $scenario == S2 ]]; then
            seed_actias_kv "$dir/actias.yaml" || return 1
        fi
        SERVER_COMMAND=(env RUST_LOG=warn "$ACTIAS_BIN" run --config "$dir/actias.yaml")
        ;;
    nginx)
        write_nginx_config "$scenario" "$dir"
        SERVER_COMMAND=(nginx -e "$dir/error.log" -p "$dir" -c "$dir/nginx.conf")
        ;;
    floor)
        SERVER_COMMAND=("$FLOOR_BIN" "127.0.0.1:$FLOOR_PORT")
        ;;
    esac
}

# Starts a server on SERVER_CPU with the config of a scenario and sets
# SERVER_PID. Returns non-zero if it does not listen.
start_server() {
    local server=$1 scenario=$2 port dir
    port=$(server_port "$server")
    dir=$TMP_DIR/$server-$scenario
    mkdir -p "$dir"
    require_free_port "$port"
    set_server_command "$server" "$scenario" "$dir" || return 1
    setsid taskset -c "$SERVER_CPU" "${SERVER_COMMAND[@]}" >>"$dir/server.log" 2>&1 &
    SERVER_PID=$!
    STARTED_PIDS+=("$SERVER_PID")
    if ! wait_for_port "$port" "$SERVER_PID" "$dir/server.log"; then
        stop_pid "$SERVER_PID" KILL
        return 1
    fi
}

stop_server() {
    stop_pid "$SERVER_PID" "$(server_stop_signal "$1")"
}

start_origin() {
    local dir=$TMP_DIR/origin
    write_origin_config "$dir"
    require_free_port "$ORIGIN_PORT"
    require_free_port "$ORIGIN_STATUS_PORT"
    setsid taskset -c "$LOAD_CPU" nginx -e "$dir/error.log" -p "$dir" -c "$dir/nginx.conf" \
        >>"$dir/server.log" 2>&1 &
    ORIGIN_PID=$!
    STARTED_PIDS+=("$ORIGIN_PID")
    wait_for_port "$ORIGIN_PORT" "$ORIGIN_PID" "$dir/server.log" || die "the origin did not start"
    wait_for_port "$ORIGIN_STATUS_PORT" "$ORIGIN_PID" "$dir/server.log" || die "the origin did not start"
}

# Prints the number of connections the origin has accepted so far.
origin_accepts() {
    curl -sS -m 5 "http://127.0.0.1:$ORIGIN_STATUS_PORT/" | awk 'NR == 3 {print $1}'
}

# --- Checks and load --------------------------------------------------

# Sets EXPECTED_BODY and EXPECTED_HEADERS to the response that a server
# returns in a scenario.
set_expected_response() {
    local server=$1 scenario=$2
    EXPECTED_HEADERS=()
    case $scenario in
    S0) EXPECTED_BODY=ok ;;
    S1 | S5)
        EXPECTED_BODY='{"hello":"world"}'
        EXPECTED_HEADERS=("content-type: application/json")
        ;;
    S2)
        EXPECTED_BODY=$KV_VALUE
        EXPECTED_HEADERS=("content-type: application/json")
        ;;
    S3) EXPECTED_BODY="origin ok" ;;
    S4)
        EXPECTED_BODY="origin ok"
        EXPECTED_HEADERS=("x-origin-bench: 1")
        # Actias cannot add a header to a forwarded response yet.
        if [[ $server == nginx ]]; then
            EXPECTED_HEADERS+=("x-bench: 1")
        fi
        ;;
    esac
    if [[ $server == floor ]]; then
        EXPECTED_BODY='{"hello":"world"}'
    fi
}

# Sends one request and checks the response of a scenario. Prints the
# problem and returns non-zero if the response is not the expected one.
check_response() {
    local server=$1 scenario=$2 port=$3 host=${4:-bench.test} body headers status header
    set_expected_response "$server" "$scenario"

    headers=$TMP_DIR/$server-$scenario/check-headers.txt
    body=$(curl -sS -m 5 -D "$headers" -H "Host: $host" "http://127.0.0.1:$port/" 2>&1) || {
        echo "request failed: $body"
        return 1
    }
    status=$(awk 'NR == 1 {print $2}' "$headers")

    if [[ $status != 200 ]]; then
        echo "status $status, body: ${body:0:200}"
        return 1
    fi
    if [[ $body != "$EXPECTED_BODY" ]]; then
        echo "body ${body:0:200}, expected $EXPECTED_BODY"
        return 1
    fi
    for header in "${EXPECTED_HEADERS[@]}"; do
        if ! tr -d '\r' <"$headers" | grep -qix "$header"; then
            echo "header '$header' missing; headers: $(tr -d '\r' <"$headers" | tr '\n' '|')"
            return 1
        fi
    done
}

record() {
    printf '%s\n' "$1" >>"$TMP_DIR/results.jsonl"
}

record_failure() {
    local scenario=$1 server=$2 message=$3
    FAILED_CHECKS=$((FAILED_CHECKS + 1))
    log "$scenario $server: $message"
    record "$(python3 -c 'import json, sys; print(json.dumps({"kind": "failure", "scenario": sys.argv[1], "server": sys.argv[2], "message": sys.argv[3]}))' \
        "$scenario" "$server" "$message")"
}

# Runs wrk for SECONDS against PORT and prints its JSON summary line.
run_wrk() {
    local port=$1 seconds=$2 log_file=$3 hosts=${4:-0}
    BENCH_HOSTS=$hosts timeout $((seconds + 30)) taskset -c "$LOAD_CPU" \
        wrk -t "$WRK_THREADS" -c "$CONNECTIONS" -d "${seconds}s" --timeout 5s --latency \
        -s "$BENCH_DIR/wrk/bench.lua" "http://127.0.0.1:$port/" >"$log_file" 2>&1 || {
        log "wrk failed; output in $log_file:"
        tail -n 20 "$log_file" >&2
        return 1
    }
    sed -n 's/^BENCH_JSON //p' "$log_file"
}

# Prints a one-line summary of wrk's JSON summary.
describe_wrk_summary() {
    python3 -c '
import json, sys
summary = json.loads(sys.argv[1])
rate = summary["requests"] / summary["duration_us"] * 1e6
p50, p99, errors = summary["p50_us"], summary["p99_us"], sum(summary["errors"].values())
print(f"{rate:.0f} req/s, p50 {p50} us, p99 {p99} us, errors {errors}")
' "$1"
}

# Measures one scenario on one server for one round: starts the server,
# checks one response, warms up, runs wrk and stops the server.
measure() {
    local scenario=$1 server=$2 round=$3
    local port dir hosts=0 check_host=bench.test check summary
    local at_start before after accepts=null accepts_measured=null
    port=$(server_port "$server")
    dir=$TMP_DIR/$server-$scenario
    if [[ $scenario == S5 ]]; then
        hosts=$S5_ROUTES
        check_host=h$S5_ROUTES.bench.test
    fi
    local uses_origin=0
    if [[ $scenario == S3 || $scenario == S4 ]]; then
        uses_origin=1
        at_start=$(origin_accepts)
    fi

    if ! start_server "$server" "$scenario"; then
        record_failure "$scenario" "$server" "did not start"
        return 0
    fi
    if ! check=$(check_response "$server" "$scenario" "$port" "$check_host"); then
        record_failure "$scenario" "$server" "wrong response: $check"
        stop_server "$server"
        return 0
    fi

    if [[ $WARMUP -gt 0 ]]; then
        run_wrk "$port" "$WARMUP" "$dir/warmup-$round.txt" "$hosts" >/dev/null || true
    fi
    if [[ $uses_origin == 1 ]]; then
        before=$(origin_accepts)
    fi
    if ! summary=$(run_wrk "$port" "$DURATION" "$dir/wrk-$round.txt" "$hosts") || [[ -z $summary ]]; then
        record_failure "$scenario" "$server" "wrk failed, see $dir/wrk-$round.txt"
        stop_server "$server"
        return 0
    fi
    if [[ $uses_origin == 1 ]]; then
        after=$(origin_accepts)
        # Each status request is one of the connections counted: the one that
        # reads `after`, and for the whole run also the one that reads `before`.
        accepts=$((after - at_start - 2))
        accepts_measured=$((after - before - 1))
    fi
    stop_server "$server"

    record "{\"kind\": \"load\", \"scenario\": \"$scenario\", \"server\": \"$server\", \"round\": $round, \"origin_accepts\": $accepts, \"origin_accepts_measured\": $accepts_measured, \"wrk\": $summary}"
    log "$scenario $server round $round: $(describe_wrk_summary "$summary")"
}

# Prints the servers that take part in a load scenario.
scenario_servers() {
    local server
    for server in $SERVERS; do
        # The floor returns one fixed response, so it runs in S0 only.
        if [[ $server != floor ]]; then
            echo "$server"
        elif [[ $1 == S0 && $FLOOR_BIN != none ]]; then
            echo floor
        fi
    done
}

run_load_scenarios() {
    local round scenario servers server
    for ((round = 1; round <= ROUNDS; round++)); do
        for scenario in $SCENARIOS; do
            case $scenario in S0 | S1 | S2 | S3 | S4 | S5) ;; *) continue ;; esac
            servers=$(scenario_servers "$scenario")
            # Alternate the order between rounds so that neither server
            # always runs first.
            if ((round % 2 == 0)); then
                servers=$(echo "$servers" | tac)
            fi
            for server in $servers; do
                measure "$scenario" "$server" "$round"
            done
        done
    done
}

# S6: starts each server S6_RESTARTS times and times its first request.
run_startup_scenario() {
    local server restart port dir line status
    for server in $SERVERS; do
        if [[ $server == floor ]]; then
            continue
        fi
        port=$(server_port "$server")
        dir=$TMP_DIR/$server-S6
        mkdir -p "$dir"
        set_server_command "$server" S1 "$dir"
        for ((restart = 1; restart <= S6_RESTARTS; restart++)); do
            require_free_port "$port"
            status=0
            line=$(timeout 60 taskset -c "$LOAD_CPU" python3 "$BENCH_DIR/tools/first_request.py" \
                --port "$port" --expect-body '{"hello":"world"}' --pid-file "$TMP_DIR/probe.pid" \
                --stop-signal "$(server_stop_signal "$server")" --log "$dir/server.log" \
                -- taskset -c "$SERVER_CPU" "${SERVER_COMMAND[@]}") || status=$?
            # The probe stops the server itself unless timeout ended the probe.
            if [[ $status -eq 124 ]]; then
                stop_pid "$(cat "$TMP_DIR/probe.pid")" KILL
                line="the probe timed out after 60 s"
            fi
            rm -f "$TMP_DIR/probe.pid"
            if [[ $status -ne 0 ]]; then
                record_failure S6 "$server" "restart $restart: $line"
                break
            fi
            record "{\"kind\": \"startup\", \"server\": \"$server\", \"restart\": $restart, \"probe\": $line}"
            log "S6 $server start $restart: $line"
        done
    done
}

# Records the resident memory of SERVER_PID, in the state STATE, with the
# extra JSON fields EXTRA (for example `"routes": 1000, `).
record_memory() {
    local server=$1 state=$2 extra=${3:-} rss
    rss=$(rss_kib "$SERVER_PID")
    record "{\"kind\": \"memory\", \"server\": \"$server\", \"state\": \"$state\", $extra\"rss_kib\": $rss}"
}

# Opens IDLE_CONNECTIONS idle keep-alive connections to the running server,
# records its memory while they are open, then closes them.
measure_connection_memory() {
    local server=$1 port dir ready_file probe_pid i
    port=$(server_port "$server")
    dir=$TMP_DIR/$server-S1
    ready_file=$dir/connections.json
    rm -f "$ready_file"
    setsid taskset -c "$LOAD_CPU" python3 "$BENCH_DIR/tools/idle_connections.py" --port "$port" \
        --count "$IDLE_CONNECTIONS" --ready-file "$ready_file" --hold-seconds 120 \
        >>"$dir/connections.log" 2>&1 &
    probe_pid=$!
    STARTED_PIDS+=("$probe_pid")

    for ((i = 0; i < 120 * 10; i++)); do
        if [[ -s $ready_file ]] || ! is_running "$probe_pid"; then
            break
        fi
        sleep 0.1
    done
    if [[ -s $ready_file ]]; then
        sleep 1
        record_memory "$server" connections "\"probe\": $(cat "$ready_file"), "
    else
        record_failure MEM "$server" "could not open $IDLE_CONNECTIONS connections; see $dir/connections.log"
    fi
    stop_pid "$probe_pid" TERM
}

# MEM: resident memory idle, with IDLE_CONNECTIONS idle keep-alive
# connections, and with S5_ROUTES routes loaded.
run_memory_scenario() {
    local server
    for server in $SERVERS; do
        if [[ $server == floor && $FLOOR_BIN == none ]]; then
            continue
        fi

        if ! start_server "$server" S1; then
            record_failure MEM "$server" "did not start"
            continue
        fi
        sleep 1
        record_memory "$server" idle
        measure_connection_memory "$server"
        stop_server "$server"

        # The floor has no routes.
        if [[ $server == floor ]]; then
            continue
        fi
        if ! start_server "$server" S5; then
            record_failure MEM "$server" "did not start with $S5_ROUTES routes"
            continue
        fi
        sleep 1
        record_memory "$server" routes "\"routes\": $S5_ROUTES, "
        stop_server "$server"
    done
}

# --- Report -----------------------------------------------------------

package_version() {
    dpkg-query -W -f='${Version}' "$1" 2>/dev/null || echo unknown
}

write_machine_description() {
    local commit dirty=""
    commit=$(git -C "$REPO_DIR" rev-parse --short HEAD 2>/dev/null || echo unknown)
    if [[ -n $(git -C "$REPO_DIR" status --porcelain --untracked-files=no 2>/dev/null) ]]; then
        dirty=" (work tree with uncommitted changes)"
    fi
    local actias="not run" floor="not run"
    if [[ $ACTIAS_BIN != none ]]; then
        actias="$ACTIAS_BIN, built $(date -u -r "$ACTIAS_BIN" '+%Y-%m-%d %H:%M UTC')"
    fi
    if [[ $FLOOR_BIN != none ]]; then
        floor="$FLOOR_BIN, built $(date -u -r "$FLOOR_BIN" '+%Y-%m-%d %H:%M UTC')"
    fi
    M_DATE=$(date -u '+%Y-%m-%d %H:%M UTC') \
        M_CPU=$(lscpu | sed -n 's/^Model name: *//p' | head -n 1) \
        M_CORES=$(nproc) \
        M_MEMORY=$(awk '/^MemTotal:/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo) \
        M_KERNEL=$(uname -r) \
        M_LOADAVG=$(cut -d' ' -f1-3 /proc/loadavg) \
        M_NGINX="$(nginx -v 2>&1 | sed 's/^nginx version: //') (Debian $(package_version nginx))" \
        M_LUA_MODULE="libnginx-mod-http-lua $(package_version libnginx-mod-http-lua), LuaJIT $(package_version libluajit2-5.1-2), lua-cjson $(package_version lua-cjson)" \
        M_WRK=$(package_version wrk) \
        M_ACTIAS_COMMIT="$commit$dirty" \
        M_ACTIAS_BIN=$actias \
        M_FLOOR_BIN=$floor \
        M_SETTINGS="ROUNDS=$ROUNDS DURATION=$DURATION WARMUP=$WARMUP CONNECTIONS=$CONNECTIONS WRK_THREADS=$WRK_THREADS S5_ROUTES=$S5_ROUTES S6_RESTARTS=$S6_RESTARTS IDLE_CONNECTIONS=$IDLE_CONNECTIONS SERVER_CPU=$SERVER_CPU LOAD_CPU=$LOAD_CPU SCENARIOS=\"$SCENARIOS\"" \
        M_NOTE=$RUN_NOTE \
        M_CONNECTIONS=$CONNECTIONS \
        M_SERVER_CPU=$SERVER_CPU \
        M_LOAD_CPU=$LOAD_CPU \
        python3 -c '
import json, os, sys
machine = {key[2:].lower(): value for key, value in os.environ.items() if key.startswith("M_")}
with open(sys.argv[1], "w") as file:
    json.dump(machine, file, indent=1)
' "$TMP_DIR/machine.json"
}

main() {
    trap cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM

    # Every server and probe needs a descriptor per idle connection.
    ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
    NOFILE=$(ulimit -n)
    if ((NOFILE < IDLE_CONNECTIONS + 1024)); then
        die "the open-file limit is $NOFILE; IDLE_CONNECTIONS=$IDLE_CONNECTIONS needs at least $((IDLE_CONNECTIONS + 1024))"
    fi
    [[ $SKIP_INSTALL == 1 ]] || install_peers
    for tool in nginx wrk taskset curl python3 ss; do
        command -v "$tool" >/dev/null || die "$tool not found"
    done
    [[ -f $NGINX_MODULES_DIR/ngx_http_lua_module.so ]] ||
        die "$NGINX_MODULES_DIR/ngx_http_lua_module.so not found; install libnginx-mod-http-lua or set NGINX_MODULES_DIR"
    if ((SERVER_CPU >= $(nproc) || LOAD_CPU >= $(nproc))); then
        die "SERVER_CPU=$SERVER_CPU and LOAD_CPU=$LOAD_CPU need a machine with at least 2 cores"
    fi
    if [[ " $SERVERS " == *" actias "* ]]; then
        build_actias
    else
        ACTIAS_BIN=none
    fi
    if [[ " $SERVERS " != *" floor "* ]]; then
        FLOOR_BIN=none
    fi
    build_floor

    TMP_DIR=$(mktemp -d /tmp/actias-bench.XXXXXX)
    log "configs and logs in $TMP_DIR"
    : >"$TMP_DIR/results.jsonl"

    # A binary that cannot load the S1 config would fail every scenario.
    if [[ $ACTIAS_BIN != none ]]; then
        write_actias_config S1 "$TMP_DIR/check"
        if ! output=$("$ACTIAS_BIN" check --config "$TMP_DIR/check/actias.yaml" 2>&1) ||
            [[ $output != *": ok,"* ]]; then
            die "$ACTIAS_BIN check --config $TMP_DIR/check/actias.yaml did not report ok: ${output:-no output}"
        fi
    fi

    write_machine_description
    start_origin
    run_load_scenarios
    [[ " $SCENARIOS " == *" S6 "* ]] && run_startup_scenario
    [[ " $SCENARIOS " == *" MEM "* ]] && run_memory_scenario
    stop_pid "$ORIGIN_PID" TERM

    python3 "$BENCH_DIR/tools/report.py" --results "$TMP_DIR/results.jsonl" \
        --machine "$TMP_DIR/machine.json" --output "$RESULTS_FILE" \
        --full-run "$([[ $ROUNDS -ge 3 && $DURATION -ge 10 ]] && echo 1 || echo 0)"
    log "table written to $RESULTS_FILE"
    if ((FAILED_CHECKS > 0)); then
        log "$FAILED_CHECKS check(s) failed; see the table"
        exit 1
    fi
}

main "$@"
