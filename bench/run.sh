#!/usr/bin/env bash
# Benchmark of prefork greeting servers on this machine (loopback only).
#
#   bash bench/run.sh [-r RUNS] [-d SECONDS] [-w WORKERS] [-c CONCURRENCY] [SERVER...]
#   bash bench/run.sh --list
#
#   -r, --runs N          rounds: every selected server runs N times (default 3)
#   -d, --duration S      seconds of load per run (default 10)
#   -w, --workers N       workers per server (default 5)
#   -c, --concurrency N   concurrent LoadGen clients (default 64)
#   --list                print the known servers
#
# Environment (the options above win): RUNS (3), DURATION (10), WORKERS (5),
# CONCURRENCY (64), SERVERS ("c csharp-jit csharp-aot node-rr node-none ruby"),
# LOADGEN_MODE (LoadGen's default), READY_TIMEOUT (30 s), SETTLE (0.5 s idle before
# measuring), RESULTS_DIR.
#
# Every server is built once (before the first run). Then the servers are measured in
# RUNS rounds; each round runs every selected server once, in the order given
# (alternating, so slow drifts of the machine hit every server alike). Each run is a
# fresh launch: start with WORKERS workers on 127.0.0.1 port 0, wait until ready and learn
# the port (startup time), measure idle memory, run LoadGen for DURATION seconds, measure
# server CPU and loaded memory, stop the server with SIGTERM. Raw data goes to
# bench/results/raw/SERVER/run-K/. Then bench/results/{results.md,results.json,chart.png}
# are written: per server, the median over its runs of every figure (the ratio to C is
# taken per round against that round's C run, then its median), the min-max of conn/s
# and of the ratio, and failed connections summed over all runs.
#
# Adding a server = adding one server_NAME function (see "Servers" below).
set -uo pipefail
export LC_ALL=C

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=procs.sh
. "$BENCH_DIR/procs.sh"
RUNS=${RUNS:-3}
DURATION=${DURATION:-10}
WORKERS=${WORKERS:-5}
CONCURRENCY=${CONCURRENCY:-64}
SERVERS=${SERVERS:-c csharp-jit csharp-aot node-rr node-none ruby}
LOADGEN_MODE=${LOADGEN_MODE:-}
READY_TIMEOUT=${READY_TIMEOUT:-30}
SETTLE=${SETTLE:-0.5}
RESULTS_DIR=${RESULTS_DIR:-$BENCH_DIR/results}
RAW_DIR=$RESULTS_DIR/raw
LOADGEN=$BENCH_DIR/LoadGen/bin/Release/net10.0/LoadGen
C_BIN=$BENCH_DIR/c-server/prefork

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'run.sh: error: %s\n' "$*" >&2; exit 2; }

# ---------------------------------------------------------------------------
# Servers
#
# server_NAME (NAME as given on the command line, '-' becomes '_') describes a
# server. It must set
#   SERVER_LABEL   name shown in the results
#   SERVER_CMD     array: the command line, listening on 127.0.0.1 port 0
#                  (any free port) with $WORKERS workers
# and may set
#   SERVER_READY_STREAM   stdout (default) or stderr: the stream SERVER_READY reads
#   SERVER_READY          function that reads the server's output lines with
#                         next_line until the server is ready, and sets
#                         SERVER_PORT (default: ready_line, for "ready <port>")
# or call `skip "reason"` (e.g. runtime not installed) and return 1.
#
# Example for a server that logs "Now listening on http://127.0.0.1:PORT" on
# stderr once per worker:
#   server_example() {
#     SERVER_LABEL="Example"
#     SERVER_CMD=(example-server --port 0 --workers "$WORKERS")
#     SERVER_READY_STREAM=stderr
#     SERVER_READY=ready_example
#   }
#   ready_example() { wait_for_line 'listening on .*:([0-9]+)' "$WORKERS"; }
# ---------------------------------------------------------------------------
ALL_SERVERS=(c csharp-jit csharp-aot node-rr node-none ruby)

server_c() {
  SERVER_LABEL="C"
  SERVER_CMD=("$C_BIN" 0 "$WORKERS")
}

# The generated server: `dotnet new prefork-server` from this checkout's template
# (isolated template store), built Release (JIT apphost) and published NativeAOT.
CS_DIR=${CS_DIR:-$RESULTS_DIR/raw/csharp}
build_csharp() {
  [[ -n ${CS_BUILT:-} ]] && return 0
  local repo hive=$CS_DIR/hive
  repo=$(cd "$BENCH_DIR/.." && pwd)
  rm -rf "$CS_DIR"; mkdir -p "$CS_DIR"
  log "generating and building the C# server (JIT and NativeAOT)"
  {
    dotnet new install "$repo/templates/prefork-server" --debug:custom-hive "$hive" &&
    dotnet new prefork-server -n BenchServer -o "$CS_DIR/src" --aot --debug:custom-hive "$hive" &&
    dotnet publish "$CS_DIR/src" -c Release -r linux-x64 -p:PublishAot=false --self-contained false -o "$CS_DIR/jit" &&
    dotnet publish "$CS_DIR/src" -c Release -r linux-x64 -o "$CS_DIR/aot"
  } > "$CS_DIR/build.log" 2>&1 || { cat "$CS_DIR/build.log" >&2; die "C# server build failed"; }
  CS_BUILT=1
}

# The C# master logs "[master PID] listening on 127.0.0.1:PORT, ..." then "... pool ready: ..."
# once every worker accepts.
ready_csharp() {
  wait_for_line 'listening on 127\.0\.0\.1:([0-9]+),' || return 1
  local port=$SERVER_PORT
  wait_for_line '(pool ready)' || return 1
  SERVER_PORT=$port
}

server_csharp_jit() {
  build_csharp
  SERVER_LABEL="C# generated (JIT)"
  SERVER_CMD=("$CS_DIR/jit/BenchServer" --host 127.0.0.1 --port 0 --workers "$WORKERS")
  SERVER_READY_STREAM=stderr
  SERVER_READY=ready_csharp
}

server_csharp_aot() {
  build_csharp
  SERVER_LABEL="C# generated (NativeAOT)"
  SERVER_CMD=("$CS_DIR/aot/BenchServer" --host 127.0.0.1 --port 0 --workers "$WORKERS")
  SERVER_READY_STREAM=stderr
  SERVER_READY=ready_csharp
}

server_node_rr() {
  need node || return 1
  SERVER_LABEL="Node.js cluster rr"
  SERVER_CMD=(node "$BENCH_DIR/node/cluster.js" 0 "$WORKERS" rr)
}

server_node_none() {
  need node || return 1
  SERVER_LABEL="Node.js cluster none"
  SERVER_CMD=(node "$BENCH_DIR/node/cluster.js" 0 "$WORKERS" none)
}

server_ruby() {
  need ruby || return 1
  SERVER_LABEL="Ruby"
  SERVER_CMD=(ruby "$BENCH_DIR/ruby/prefork.rb" 0 "$WORKERS")
}

# ---------------------------------------------------------------------------
# Readiness helpers (read the watched stream through READY_FD)
# ---------------------------------------------------------------------------

# next_line: reads one line of the watched stream into LINE, honouring
# READY_DEADLINE_US. Non-zero on timeout or when the server closed the stream.
next_line() {
  local now_us=${EPOCHREALTIME/./} left_us
  left_us=$((READY_DEADLINE_US - now_us))
  ((left_us > 0)) || return 1
  IFS= read -r -t "$((left_us / 1000000)).$(printf '%06d' $((left_us % 1000000)))" -u "$READY_FD" LINE || return 1
  printf '%s\n' "$LINE" >> "$READY_LOG"
}

# wait_for_line REGEX [COUNT]: waits until COUNT (default 1) lines match REGEX;
# SERVER_PORT is the first capture group of the first match.
wait_for_line() {
  local regex=$1 want=${2:-1} seen=0
  while next_line; do
    if [[ $LINE =~ $regex ]]; then
      ((seen == 0)) && SERVER_PORT=${BASH_REMATCH[1]}
      seen=$((seen + 1))
      ((seen >= want)) && return 0
    fi
  done
  return 1
}

# Default: the server prints "ready <port>" once all workers exist.
ready_line() { wait_for_line '^ready ([0-9]+)$'; }

# ---------------------------------------------------------------------------
# /proc measurements
# ---------------------------------------------------------------------------
CLK_TCK=$(getconf CLK_TCK)

# alive and tree_pids: bench/procs.sh

# cpu_ns ROOT: nanoseconds on CPU, summed over every thread of every process of the tree
# (/proc/PID/task/TID/schedstat, field 1, exact), plus the time of children the tree has
# already reaped (cutime + cstime of /proc/PID/stat, in clock ticks). utime and stime are
# not used: they are whole ticks per process, and over many workers their rounding makes the
# CPU of a run read low (by a quarter for 64 C workers in 3 s).
cpu_ns() {
  local total=0 pid line rest task run
  local -a f
  for pid in $(tree_pids "$1"); do
    for task in /proc/"$pid"/task/*/schedstat; do
      { read -r run _ < "$task"; } 2>/dev/null || continue
      total=$((total + run))
    done
    { IFS= read -r line < "/proc/$pid/stat"; } 2>/dev/null || continue
    rest=${line##*) }
    read -r -a f <<< "$rest"
    # after "comm)": f[0]=state (field 3) ... cutime=field 16 -> f[13], cstime f[14]
    total=$((total + (f[13] + f[14]) * 1000000000 / CLK_TCK))
  done
  echo "$total"
}

# read_mem PID: sets MEM_PSS and MEM_RSS (KiB) from /proc/PID/smaps_rollup.
read_mem() {
  local k v rest
  MEM_PSS=0 MEM_RSS=0
  while read -r k v rest; do
    case $k in
      Rss:) MEM_RSS=$v ;;
      Pss:) MEM_PSS=$v ;;
    esac
  done < "/proc/$1/smaps_rollup" 2>/dev/null
}

# mem_snapshot PREFIX ROOT: master and per-worker (all descendants) PSS/RSS into meta.env.
mem_snapshot() {
  local prefix=$1 root=$2 pid workers=0 pss=0 rss=0
  read_mem "$root"
  meta "${prefix}_master_pss_kb" "$MEM_PSS"
  meta "${prefix}_master_rss_kb" "$MEM_RSS"
  for pid in $(tree_pids "$root"); do
    [[ $pid == "$root" ]] && continue
    read_mem "$pid"
    workers=$((workers + 1)); pss=$((pss + MEM_PSS)); rss=$((rss + MEM_RSS))
  done
  meta "${prefix}_workers" "$workers"
  meta "${prefix}_worker_pss_kb_sum" "$pss"
  meta "${prefix}_worker_rss_kb_sum" "$rss"
}

# ---------------------------------------------------------------------------
# Running one server
# ---------------------------------------------------------------------------
SERVER_PID=""
DRAIN_PID=""
RUN_DIR=""

meta() { printf '%s=%s\n' "$1" "$2" >> "$RUN_DIR/meta.env"; }

need() {
  command -v "$1" > /dev/null 2>&1 && return 0
  skip "skipped: $1 not installed"
  return 1
}

SKIP_REASON=""
skip() { SKIP_REASON=$1; }

# stop_server: SIGTERM to the master, wait (10 s), then SIGKILL whatever is left of its tree.
stop_server() {
  [[ -n $SERVER_PID ]] || return 0
  local pid=$SERVER_PID tree i
  tree=$(tree_pids "$pid")
  kill -TERM "$pid" 2>/dev/null
  for ((i = 0; i < 100; i++)); do
    alive "$pid" || break
    sleep 0.1
  done
  if alive "$pid"; then
    log "server $pid ignored SIGTERM for 10 s: SIGKILL"
    kill -KILL "$pid" 2>/dev/null
  fi
  wait "$pid" 2>/dev/null
  SERVER_EXIT=$?
  sleep 0.2
  for i in $tree; do
    if alive "$i"; then
      log "worker $i outlived its master: SIGKILL"
      kill -KILL "$i" 2>/dev/null
    fi
  done
  SERVER_PID=""
  if [[ -n $DRAIN_PID ]]; then
    wait "$DRAIN_PID" 2>/dev/null
    DRAIN_PID=""
  fi
  if [[ -n ${READY_FD:-} ]]; then
    exec {READY_FD}<&-
    READY_FD=""
  fi
}

cleanup() {
  stop_server
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT TERM

# resolve_server NAME: resets the SERVER_* variables and calls server_NAME, whose status
# it returns (non-zero: skipped, reason in SKIP_REASON).
resolve_server() {
  local fn=server_${1//-/_}
  declare -F "$fn" > /dev/null || die "unknown server '$1' (known: ${ALL_SERVERS[*]})"
  SERVER_LABEL=$1 SERVER_CMD=() SERVER_READY=ready_line SERVER_READY_STREAM=stdout SKIP_REASON="" SERVER_PORT=""
  "$fn"
}

# new_run_dir NAME RUN: (re)creates RUN_DIR=$RAW_DIR/NAME/run-RUN with the common meta.env lines.
new_run_dir() {
  RUN_DIR=$RAW_DIR/$1/run-$2
  rm -rf "$RUN_DIR"; mkdir -p "$RUN_DIR"
  meta name "$1"
  meta run "$2"
  meta runs "$RUNS"
  meta workers "$WORKERS"
  meta concurrency "$CONCURRENCY"
  meta duration "$DURATION"
  meta machine "$MACHINE"
}

# record_skip NAME: the server (or its runtime) is not available; noted in RUN_DIR.
record_skip() {
  meta label "$SERVER_LABEL"
  meta status skipped
  meta note "${SKIP_REASON:-skipped}"
  printf '%s: %s\n' "$1" "${SKIP_REASON:-skipped}"
}

# run_server NAME RUN: one complete measurement with a fresh launch of the server;
# results in $RAW_DIR/NAME/run-RUN.
run_server() {
  local name=$1 run=$2
  new_run_dir "$name" "$run"
  if ! resolve_server "$name"; then
    record_skip "$name"
    return 0
  fi
  meta label "$SERVER_LABEL"
  local shown=${SERVER_CMD[*]}
  meta command "${shown//"$BENCH_DIR"/bench}"
  log "$SERVER_LABEL, run $run of $RUNS: ${SERVER_CMD[*]}"

  # Launch: the watched stream goes through a FIFO that SERVER_READY reads, the other to a log file.
  local fifo=$RUN_DIR/ready.fifo t0_us t1_us other_log=$RUN_DIR/server.stderr.log
  READY_LOG=$RUN_DIR/server.$SERVER_READY_STREAM.log
  [[ $SERVER_READY_STREAM == stdout ]] || other_log=$RUN_DIR/server.stdout.log
  mkfifo "$fifo"
  t0_us=${EPOCHREALTIME/./}
  if [[ $SERVER_READY_STREAM == stdout ]]; then
    "${SERVER_CMD[@]}" > "$fifo" 2> "$other_log" < /dev/null &
  else
    "${SERVER_CMD[@]}" 2> "$fifo" > "$other_log" < /dev/null &
  fi
  SERVER_PID=$!
  exec {READY_FD}< "$fifo"
  READY_DEADLINE_US=$((t0_us + READY_TIMEOUT * 1000000))
  if ! "$SERVER_READY" || [[ -z $SERVER_PORT ]]; then
    local why="not ready within ${READY_TIMEOUT} s"
    alive "$SERVER_PID" || why="exited before it was ready"
    log "$name: $why (see $RUN_DIR/server.*.log)"
    meta status failed
    meta note "$why"
    stop_server
    return 0
  fi
  t1_us=${EPOCHREALTIME/./}
  # Keep draining the stream so the server never blocks on a full pipe.
  cat <&"$READY_FD" >> "$READY_LOG" &
  DRAIN_PID=$!
  rm -f "$fifo"
  meta port "$SERVER_PORT"
  meta server_pid "$SERVER_PID"
  meta startup_ms "$(awk -v us=$((t1_us - t0_us)) 'BEGIN { printf "%.3f", us / 1000 }')"
  meta clk_tck "$CLK_TCK"

  sleep "$SETTLE"
  mem_snapshot idle "$SERVER_PID"

  local cpu0 cpu1 rc=0
  cpu0=$(cpu_ns "$SERVER_PID")
  "$LOADGEN" --host 127.0.0.1 --port "$SERVER_PORT" --duration "$DURATION" \
    --concurrency "$CONCURRENCY" --workers "$WORKERS" ${LOADGEN_MODE:+--mode "$LOADGEN_MODE"} \
    --json "$RUN_DIR/loadgen.json" | tee "$RUN_DIR/loadgen.txt" || rc=$?
  cpu1=$(cpu_ns "$SERVER_PID")
  mem_snapshot loaded "$SERVER_PID"
  meta cpu_ns $((cpu1 - cpu0))
  meta loadgen_exit "$rc"

  local status=ok note=""
  if ! alive "$SERVER_PID"; then
    status=failed; note="server died during the load"
  elif ((rc == 1)); then
    note="some connections failed"
  elif ((rc != 0)); then
    status=failed; note="LoadGen exit code $rc"
  fi
  stop_server
  if [[ $status == ok && ${SERVER_EXIT:-0} -ne 0 ]]; then
    note="${note:+$note; }exit code $SERVER_EXIT after SIGTERM"
  fi
  meta status "$status"
  meta note "$note"
  meta server_exit "${SERVER_EXIT:-}"
  echo
}

# ---------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------
selected=()
while (($#)); do
  case $1 in
    -r|--runs) RUNS=${2:?}; shift 2 ;;
    -d|--duration) DURATION=${2:?}; shift 2 ;;
    -w|--workers) WORKERS=${2:?}; shift 2 ;;
    -c|--concurrency) CONCURRENCY=${2:?}; shift 2 ;;
    --list) printf '%s\n' "${ALL_SERVERS[@]}"; exit 0 ;;
    -h|--help) awk 'NR == 1 { next } /^#/ { sub(/^# ?/, ""); print; next } { exit }' "$0"; exit 0 ;;
    -*) die "unknown option $1" ;;
    *) selected+=("$1"); shift ;;
  esac
done
((${#selected[@]})) || read -r -a selected <<< "$SERVERS"
[[ $RUNS =~ ^[1-9][0-9]*$ ]] || die "RUNS must be a positive integer"
[[ $DURATION =~ ^[0-9]+([.][0-9]+)?$ ]] || die "DURATION must be a number of seconds"
[[ $WORKERS =~ ^[1-9][0-9]*$ ]] || die "WORKERS must be a positive integer"
[[ $CONCURRENCY =~ ^[1-9][0-9]*$ ]] || die "CONCURRENCY must be a positive integer"
[[ $READY_TIMEOUT =~ ^[1-9][0-9]*$ ]] || die "READY_TIMEOUT must be a positive integer (seconds)"

# Each server once, in the order given; unknown names stop the script before anything runs.
servers=()
for s in "${selected[@]}"; do
  declare -F "server_${s//-/_}" > /dev/null || die "unknown server '$s' (known: ${ALL_SERVERS[*]})"
  [[ " ${servers[*]} " == *" $s "* ]] || servers+=("$s")
done
((${#servers[@]})) || die "no server selected"

MACHINE="$(uname -sm) $(uname -r | cut -d- -f1), $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)"

mkdir -p "$RAW_DIR"
log "building LoadGen (Release)"
dotnet build "$BENCH_DIR/LoadGen/LoadGen.csproj" -c Release -nologo -v quiet \
  > "$RAW_DIR/build.log" 2>&1 || { cat "$RAW_DIR/build.log" >&2; die "LoadGen build failed"; }
log "building the C server"
cc -O2 -Wall -Wextra -Werror -o "$C_BIN" "$BENCH_DIR/c-server/prefork.c" || die "C server build failed"

# Resolve every server once before the first run: builds (such as build_csharp) happen
# here rather than between two measured runs, and a missing runtime is recorded once as
# skipped (raw/NAME/run-1) instead of in every round.
declare -A SKIPPED=()
server_dirs=()
for s in "${servers[@]}"; do
  rm -rf "${RAW_DIR:?}/$s"
  server_dirs+=("$RAW_DIR/$s")
  if ! resolve_server "$s"; then
    SKIPPED[$s]=1
    new_run_dir "$s" 1
    record_skip "$s"
  fi
done

# RUNS rounds; each runs every server once, always in the same order.
for ((round = 1; round <= RUNS; round++)); do
  for s in "${servers[@]}"; do
    [[ -n ${SKIPPED[$s]:-} ]] && continue
    log "round $round of $RUNS: $s"
    run_server "$s" "$round"
  done
done

log "writing $RESULTS_DIR/results.md, results.json, chart.png"
"$LOADGEN" report --out "$RESULTS_DIR" --baseline c "${server_dirs[@]}"
