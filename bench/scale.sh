#!/usr/bin/env bash
# How the generated server (NativeAOT) and the C server scale, side by side (loopback only).
#
#   bash bench/scale.sh [-r ROUNDS] [-d SECONDS] [--workers "1 2 5 16 64"] [--clients "1 16 64 256 1024"]
#                       [--at-clients 64] [--at-workers 5] [--idle N]
#
#   -r, --runs N        rounds per point: C and C# alternate, N runs each (default 3)
#   -d, --duration S    seconds of load per run (default 4)
#   --workers LIST      worker counts of the workers sweep (default "1 2 5 16 64"; "" for none)
#   --at-clients N      LoadGen clients during the workers sweep (default 64)
#   --clients LIST      client counts of the clients sweep (default "1 16 64 256 1024"; "" for none)
#   --at-workers N      workers during the clients sweep and the idle test (default 5)
#   --idle N            idle connections held on the echo server (default 10000; 0: no idle test)
#
# Environment (the options above win): RUNS, DURATION, WORKER_COUNTS, AT_CLIENTS, CLIENT_COUNTS,
# AT_WORKERS, IDLE_CONNECTIONS, SETTLE (1 s), SCALE_DIR (bench/results/scale).
#
# 1. Builds LoadGen, then generates the server twice from this checkout's template (isolated
#    template store) and publishes both NativeAOT: the greeting server, and the echo server
#    (--handler echo) for the idle test.
# 2. Runs bench/run.sh once per point (servers c and csharp-aot), reusing that one build:
#    every worker count at --at-clients clients, then every client count at --at-workers
#    workers (the point both sweeps share runs once). Each point's results go to
#    SCALE_DIR/points/wW-cC/ (results.md, results.json, raw/, run.log).
# 3. The idle test: starts the echo server with --at-workers workers on 127.0.0.1 port 0,
#    reads the total PSS of master and workers, lets `LoadGen hold` open N connections that
#    send nothing, waits until the workers hold them all (their socket descriptors), reads
#    the PSS again, releases the connections, reads it once more. SCALE_DIR/idle/.
# 4. `LoadGen scale-report` writes SCALE_DIR/scale.md, scale.json, scale-workers.png and
#    scale-clients.png, and prints scale.md.
set -uo pipefail
export LC_ALL=C

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(cd "$BENCH_DIR/.." && pwd)
# shellcheck source=procs.sh
. "$BENCH_DIR/procs.sh"
RUNS=${RUNS:-3}
DURATION=${DURATION:-4}
WORKER_COUNTS=${WORKER_COUNTS-1 2 5 16 64}
CLIENT_COUNTS=${CLIENT_COUNTS-1 16 64 256 1024}
AT_CLIENTS=${AT_CLIENTS:-64}
AT_WORKERS=${AT_WORKERS:-5}
IDLE_CONNECTIONS=${IDLE_CONNECTIONS:-10000}
SETTLE=${SETTLE:-1}
SCALE_DIR=${SCALE_DIR:-$BENCH_DIR/results/scale}
LOADGEN=$BENCH_DIR/LoadGen/bin/Release/net10.0/LoadGen

STARTED=$SECONDS
log() { printf '==> [%d:%02d] %s\n' $(((SECONDS - STARTED) / 60)) $(((SECONDS - STARTED) % 60)) "$*" >&2; }
die() { printf 'scale.sh: error: %s\n' "$*" >&2; exit 2; }

while (($#)); do
  case $1 in
    -r|--runs) RUNS=${2:?}; shift 2 ;;
    -d|--duration) DURATION=${2:?}; shift 2 ;;
    --workers) WORKER_COUNTS=${2?}; shift 2 ;;
    --clients) CLIENT_COUNTS=${2?}; shift 2 ;;
    --at-clients) AT_CLIENTS=${2:?}; shift 2 ;;
    --at-workers) AT_WORKERS=${2:?}; shift 2 ;;
    --idle) IDLE_CONNECTIONS=${2:?}; shift 2 ;;
    -h|--help) awk 'NR == 1 { next } /^#/ { sub(/^# ?/, ""); print; next } { exit }' "$0"; exit 0 ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
done

positive() { { [[ $2 =~ ^[1-9][0-9]*$ ]] && (($2 <= $3)); } || die "$1: '$2' is not an integer from 1 to $3"; }
positive --runs "$RUNS" 100
[[ $DURATION =~ ^[0-9]+([.][0-9]+)?$ ]] || die "--duration: '$DURATION' is not a number of seconds"
positive --at-clients "$AT_CLIENTS" 10000
positive --at-workers "$AT_WORKERS" 1024
for w in $WORKER_COUNTS; do positive --workers "$w" 1024; done   # both servers' limit
for c in $CLIENT_COUNTS; do positive --clients "$c" 10000; done  # LoadGen's limit
{ [[ $IDLE_CONNECTIONS =~ ^[0-9]+$ ]] && ((IDLE_CONNECTIONS <= 100000)); } || die "--idle: '$IDLE_CONNECTIONS' is not an integer from 0 to 100000"

# The points, each once: (workers, clients).
POINTS=()
add_point() { [[ " ${POINTS[*]} " == *" $1,$2 "* ]] || POINTS+=("$1,$2"); }
for w in $WORKER_COUNTS; do add_point "$w" "$AT_CLIENTS"; done
for c in $CLIENT_COUNTS; do add_point "$AT_WORKERS" "$c"; done
((${#POINTS[@]} || IDLE_CONNECTIONS)) || die "nothing to measure: no points and --idle 0"

# Descriptors: LoadGen needs one per client (and the hold one per idle connection), plus its
# own. Raising this shell's soft limit to the hard one is what `ulimit -n` does for any user;
# the system's settings (sysctl) are left as they are.
max_clients=$AT_CLIENTS
for c in $CLIENT_COUNTS; do ((c > max_clients)) && max_clients=$c; done
need_files=$(((max_clients > IDLE_CONNECTIONS ? max_clients : IDLE_CONNECTIONS) + 64))
if [[ $(ulimit -n) != unlimited ]] && (($(ulimit -n) < need_files)); then
  hard=$(ulimit -Hn)
  [[ $hard == unlimited ]] || ((hard >= need_files)) ||
    die "$need_files open files are needed and the hard limit is $hard (ulimit -Hn); lower --clients or --idle, or raise the limit"
  ulimit -n "$hard" || die "cannot raise ulimit -n to $hard"
  log "raised this shell's open-files limit (ulimit -n) to $hard"
fi

# Expected duration (measured on 2 cores): LoadGen's build (about 60 s when it compiles), each
# NativeAOT publish (about 70 s); per point, run.sh's own checks of its builds and its report
# (about 5 s), and per run the load plus about 2.5 s (launch, settle, memory, stop); the idle test.
estimate=$(awk -v p=${#POINTS[@]} -v r="$RUNS" -v d="$DURATION" -v idle=$((IDLE_CONNECTIONS > 0)) \
  'BEGIN { printf "%.0f", (60 + 70 * (p > 0) + 70 * idle + p * (5 + 2 * r * (d + 2.5)) + 15 * idle) / 60 }')
rounds_word=rounds; ((RUNS == 1)) && rounds_word=round
if ((${#POINTS[@]})); then
  log "${#POINTS[@]} points (workers,clients: ${POINTS[*]}), $RUNS $rounds_word of $DURATION s per point, idle test: $IDLE_CONNECTIONS connections"
else
  log "no points; idle test: $IDLE_CONNECTIONS connections"
fi
log "expected duration: about $estimate min on 2 cores, builds included (more if other work shares the machine)"

POINTS_DIR=$SCALE_DIR/points
BUILD_DIR=$SCALE_DIR/build
IDLE_DIR=$SCALE_DIR/idle
mkdir -p "$SCALE_DIR"
rm -rf "$POINTS_DIR" "$IDLE_DIR"
mkdir -p "$POINTS_DIR"

# The settings of this machine that bear on many clients and many connections, for the report.
{
  printf 'ip_local_port_range=%s\n' "$(tr -s '\t ' '-' < /proc/sys/net/ipv4/ip_local_port_range)"
  printf 'tcp_tw_reuse=%s\n' "$(cat /proc/sys/net/ipv4/tcp_tw_reuse)"
  printf 'somaxconn=%s\n' "$(cat /proc/sys/net/core/somaxconn)"
  printf 'ulimit -n=%s\n' "$(ulimit -n)"
} > "$POINTS_DIR/meta.env"

# Builds leave no MSBuild node or compiler server running (run.sh's LoadGen build included).
export MSBUILDDISABLENODEREUSE=1 UseSharedCompilation=false DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1

log "building LoadGen (Release)"
dotnet build "$BENCH_DIR/LoadGen/LoadGen.csproj" -c Release -nologo -v quiet > "$SCALE_DIR/loadgen-build.log" 2>&1 ||
  { cat "$SCALE_DIR/loadgen-build.log" >&2; die "LoadGen build failed"; }

# build_aot DIR NAME [TEMPLATE OPTIONS...]: dotnet new prefork-server into DIR/src, published
# NativeAOT into DIR/aot (run.sh's csharp-aot runs $CS_DIR/aot/BenchServer).
HIVE=$BUILD_DIR/hive
build_aot() {
  local dir=$1 name=$2
  shift 2
  rm -rf "$dir"; mkdir -p "$dir"
  {
    dotnet new prefork-server -n "$name" -o "$dir/src" --aot --debug:custom-hive "$HIVE" "$@" &&
    dotnet publish "$dir/src" -c Release -r linux-x64 -o "$dir/aot"
  } > "$dir/build.log" 2>&1 || { tail -30 "$dir/build.log" >&2; die "the build of $name failed (log: $dir/build.log)"; }
}
rm -rf "$HIVE"; mkdir -p "$BUILD_DIR"
log "installing the template from this checkout into an isolated template store"
dotnet new install "$REPO_DIR/templates/prefork-server" --debug:custom-hive "$HIVE" > "$BUILD_DIR/install.log" 2>&1 ||
  { cat "$BUILD_DIR/install.log" >&2; die "dotnet new install failed"; }
if ((${#POINTS[@]})); then
  log "generating and publishing the C# server (NativeAOT)"
  build_aot "$BUILD_DIR/csharp" BenchServer
fi
if ((IDLE_CONNECTIONS)); then
  log "generating and publishing the echo server (--handler echo, NativeAOT)"
  build_aot "$BUILD_DIR/echo" EchoServer --handler echo
fi

# An interrupt ends the script (after the run.sh in progress has cleaned up after itself).
trap 'log "interrupted"; exit 130' INT TERM

# ---------------------------------------------------------------------------
# The points: one run.sh each
# ---------------------------------------------------------------------------
# point_summary RESULTS_MD: server, conn/s, ratio and failures from run.sh's main table.
point_summary() {
  awk -F' *[|] *' '
    /^[|] server [|] runs [|]/ { table = 1; getline; next }
    table && !/^[|]/ { exit }
    table { printf "    %-26s %10s conn/s   ratio to C %-5s  failed %s\n", $2, $4, $6, $14 }' "$1" >&2
}

point_dirs=()
failed_points=()
k=0
for point in "${POINTS[@]}"; do
  k=$((k + 1))
  w=${point%,*} c=${point#*,}
  dir=$POINTS_DIR/w$w-c$c
  point_dirs+=("$dir")
  mkdir -p "$dir"
  log "point $k of ${#POINTS[@]}: $w workers, $c clients (log: $dir/run.log)"
  CS_DIR=$BUILD_DIR/csharp CS_BUILT=1 RESULTS_DIR=$dir \
    bash "$BENCH_DIR/run.sh" -r "$RUNS" -d "$DURATION" -w "$w" -c "$c" c csharp-aot 2>&1 |
    tee "$dir/run.log" | sed -u -n -E -e 's/^==> (.*, run [0-9]+ of [0-9]+):.*/    \1/p' \
      -e '/^==> (building|generating|round|writing)/d' -e '/^(==> |run\.sh: )/p' >&2
  rc=${PIPESTATUS[0]}
  ((rc == 0)) || { failed_points+=("$point"); log "point $w workers, $c clients: run.sh exit code $rc"; }
  [[ -f $dir/results.md ]] && point_summary "$dir/results.md"
done

# ---------------------------------------------------------------------------
# The idle test
# ---------------------------------------------------------------------------
SERVER_PID=""
HOLD_PID_=""
HOLD_IN=""

meta() { printf '%s=%s\n' "$1" "$2" >> "$IDLE_DIR/meta.env"; }

pss_kb() { awk '/^Pss:/ { print $2; found = 1; exit } END { if (!found) print 0 }' "/proc/$1/smaps_rollup" 2>/dev/null || echo 0; }

sockets() { find "/proc/$1/fd" -lname 'socket:*' 2>/dev/null | wc -l; }

# snapshot PREFIX: the master's and the total PSS, each worker's PSS and socket count.
WORKER_PIDS=()
snapshot() {
  local prefix=$1 pid master total pss
  local -a each=() socks=()
  master=$(pss_kb "$SERVER_PID")
  total=$master
  for pid in "${WORKER_PIDS[@]}"; do
    pss=$(pss_kb "$pid")
    total=$((total + pss))
    each+=("$pss")
    socks+=("$(sockets "$pid")")
  done
  meta "${prefix}_master_pss_kb" "$master"
  meta "${prefix}_total_pss_kb" "$total"
  meta "${prefix}_worker_pss_kb" "${each[*]}"
  meta "${prefix}_worker_sockets" "${socks[*]}"
  meta "${prefix}_sockstat_tcp" "$(grep '^TCP:' /proc/net/sockstat)"
  SNAP_SOCKETS=0
  for pss in "${socks[@]}"; do SNAP_SOCKETS=$((SNAP_SOCKETS + pss)); done
}

worker_sockets() {
  local pid n=0
  for pid in "${WORKER_PIDS[@]}"; do n=$((n + $(sockets "$pid"))); done
  echo "$n"
}

stop_idle() {
  if [[ -n $HOLD_IN ]]; then exec {HOLD_IN}>&-; HOLD_IN=""; fi
  if [[ -n $HOLD_PID_ ]]; then
    local i
    for ((i = 0; i < 100; i++)); do alive "$HOLD_PID_" || break; sleep 0.1; done
    alive "$HOLD_PID_" && kill -KILL "$HOLD_PID_" 2>/dev/null
    wait "$HOLD_PID_" 2>/dev/null
    HOLD_PID_=""
  fi
  [[ -n $SERVER_PID ]] || return 0
  local pid=$SERVER_PID tree i
  tree=$(tree_pids "$pid")
  kill -TERM "$pid" 2>/dev/null
  for ((i = 0; i < 100; i++)); do alive "$pid" || break; sleep 0.1; done
  alive "$pid" && { log "echo server $pid ignored SIGTERM for 10 s: SIGKILL"; kill -KILL "$pid" 2>/dev/null; }
  wait "$pid" 2>/dev/null
  meta server_exit "$?"
  sleep 0.2
  for i in $tree; do alive "$i" && kill -KILL "$i" 2>/dev/null; done
  SERVER_PID=""
}

# idle_fail NOTE: records the failure, stops everything.
idle_fail() {
  log "idle test: $1 (logs: $IDLE_DIR)"
  meta status failed
  meta note "$1"
  IDLE_STATUS=failed
  stop_idle
}

idle_test() {
  local n=$IDLE_CONNECTIONS line port deadline t0 before holding accepted
  local -a cmd
  mkdir -p "$IDLE_DIR"
  # Every worker may take any share of the connections (--max-connections n): the spread is
  # the kernel's and the server's own. Nothing times out while they are held (--idle-timeout).
  # The workers take each connection as it comes (--defer-accept 0): these clients never speak,
  # and with echo's default the kernel would hold them, not the workers.
  cmd=("$BUILD_DIR/echo/aot/EchoServer" --host 127.0.0.1 --port 0 --workers "$AT_WORKERS"
    --max-connections "$n" --idle-timeout 3600 --defer-accept 0)
  meta connections "$n"
  meta workers "$AT_WORKERS"
  local shown=${cmd[*]}
  meta command "${shown//"$BENCH_DIR"/bench}"
  log "idle test: $n connections on the echo server, $AT_WORKERS workers"
  "${cmd[@]}" > "$IDLE_DIR/server.stdout.log" 2> "$IDLE_DIR/server.stderr.log" < /dev/null &
  SERVER_PID=$!
  meta server_pid "$SERVER_PID"

  # Ready: "listening on 127.0.0.1:PORT, ..." then "pool ready: N workers accepting (pids ...)".
  deadline=$((SECONDS + 30))
  until line=$(grep -m1 'pool ready: ' "$IDLE_DIR/server.stderr.log"); do
    alive "$SERVER_PID" || { idle_fail "the echo server exited before it was ready"; return; }
    ((SECONDS < deadline)) || { idle_fail "the echo server was not ready within 30 s"; return; }
    sleep 0.1
  done
  [[ $line =~ \(pids\ ([0-9 ]+)\) ]] || { idle_fail "no worker pids in: $line"; return; }
  read -r -a WORKER_PIDS <<< "${BASH_REMATCH[1]}"
  port=$(sed -n 's/.*listening on 127\.0\.0\.1:\([0-9]*\),.*/\1/p' "$IDLE_DIR/server.stderr.log" | head -1)
  [[ -n $port ]] || { idle_fail "no port in the echo server's log"; return; }
  meta port "$port"
  meta worker_pids "${WORKER_PIDS[*]}"

  sleep "$SETTLE"
  snapshot before
  before=$SNAP_SOCKETS

  # The hold client writes "holding ... (connected N, ...)" to hold.log once every connect
  # returned, then holds the connections until its stdin (a FIFO that this script keeps open) ends.
  t0=${EPOCHREALTIME/./}
  mkfifo "$IDLE_DIR/hold.stdin"
  "$LOADGEN" hold --port "$port" --connections "$n" --json "$IDLE_DIR/hold.json" \
    < "$IDLE_DIR/hold.stdin" > "$IDLE_DIR/hold.log" 2> "$IDLE_DIR/hold.stderr.log" &
  HOLD_PID_=$!
  exec {HOLD_IN}> "$IDLE_DIR/hold.stdin"
  deadline=$((SECONDS + 300))
  until line=$(grep -m1 '^holding ' "$IDLE_DIR/hold.log"); do
    alive "$HOLD_PID_" || { idle_fail "LoadGen hold exited: $(head -c 500 "$IDLE_DIR/hold.stderr.log")"; return; }
    ((SECONDS < deadline)) || { idle_fail "LoadGen hold did not connect within 300 s"; return; }
    sleep 0.1
  done
  printf '    %s\n' "$line" >&2
  [[ $line =~ \(connected\ ([0-9]+) ]] || { idle_fail "unexpected line from LoadGen hold: $line"; return; }
  local connected=${BASH_REMATCH[1]}

  # Wait (up to 60 s) until the workers hold every connection that connected.
  deadline=$((SECONDS + 60))
  while accepted=$(($(worker_sockets) - before)); ((accepted < connected && SECONDS < deadline)); do sleep 0.2; done
  meta accept_wait_ms $(((${EPOCHREALTIME/./} - t0) / 1000))
  sleep "$SETTLE"
  snapshot holding
  holding=$SNAP_SOCKETS
  log "idle test: the workers hold $((holding - before)) of $n connections"

  # Release: the end of its stdin makes hold check its connections, close them and exit.
  exec {HOLD_IN}>&-
  HOLD_IN=""
  local hold_rc=124 i
  for ((i = 0; i < 600; i++)); do alive "$HOLD_PID_" || break; sleep 0.1; done
  if alive "$HOLD_PID_"; then
    kill -KILL "$HOLD_PID_" 2>/dev/null
    wait "$HOLD_PID_" 2>/dev/null
  else
    wait "$HOLD_PID_"
    hold_rc=$?
  fi
  HOLD_PID_=""
  meta hold_exit "$hold_rc"
  sed -n 's/^released: /    released: /p' "$IDLE_DIR/hold.log" >&2
  deadline=$((SECONDS + 30))
  while (($(worker_sockets) > before && SECONDS < deadline)); do sleep 0.2; done
  sleep "$SETTLE"
  snapshot released

  local status=ok note=""
  if ((holding - before != n)); then
    status=failed note="the workers held $((holding - before)) of $n connections"
  elif ((hold_rc != 0)); then
    status=failed note="LoadGen hold exit code $hold_rc (see hold.log)"
  fi
  stop_idle
  meta status "$status"
  meta note "$note"
  IDLE_STATUS=$status
  [[ $status == ok ]] || log "idle test: $note"
}

IDLE_STATUS=""
trap stop_idle EXIT
((IDLE_CONNECTIONS)) && idle_test

# ---------------------------------------------------------------------------
# The report
# ---------------------------------------------------------------------------
log "writing $SCALE_DIR/scale.md, scale.json, scale-workers.png, scale-clients.png"
idle_args=()
((IDLE_CONNECTIONS)) && idle_args=(--idle "$IDLE_DIR")
"$LOADGEN" scale-report --out "$SCALE_DIR" --at-clients "$AT_CLIENTS" --at-workers "$AT_WORKERS" \
  --system "$POINTS_DIR" "${idle_args[@]}" "${point_dirs[@]}" || die "scale-report failed"
status=0
if ((${#failed_points[@]})); then
  log "run.sh failed at: ${failed_points[*]} (see their run.log)"
  status=1
fi
[[ $IDLE_STATUS == failed ]] && status=1
log "done: $SCALE_DIR/scale.md"
exit $status
