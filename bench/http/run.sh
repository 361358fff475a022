#!/usr/bin/env bash
# HTTP benchmark: the server `dotnet new prefork-server --handler http` generates (JIT and
# NativeAOT builds) against a stock single-process ASP.NET Core minimal API (JIT and
# NativeAOT), nginx, gunicorn, unicorn and puma, on 127.0.0.1, every prefork server with
# WORKERS worker processes, all answering GET / with "Hello from <pid>\n" (the ASP.NET Core
# app: its one pid) as text/plain; charset=utf-8. The load comes from wrk, over kept-alive
# connections and with a new connection per request (wrk -H 'Connection: close').
#
#   bash bench/http/run.sh [-r ROUNDS] [-d SECONDS] [-u SECONDS] [-w WORKERS] [-c CONNECTIONS] [-t THREADS] [-f SECONDS] [SERVER...]
#
#   -r ROUNDS        every server and mode runs this many times (default 2)
#   -d SECONDS       seconds of load per run (default 10)
#   -u SECONDS       seconds of untimed load before each run, the warm-up (default 10; 0: none)
#   -w WORKERS       worker processes per prefork server (default 5)
#   -c CONNECTIONS   wrk's open connections (default 64)
#   -t THREADS       wrk's threads (default 2)
#   -f SECONDS       length of the fairness run of each prefork server (default 10; 0: none)
#   SERVER           nginx csharp-jit csharp-aot aspnet-jit aspnet-aot gunicorn unicorn puma
#                    (default: all, in that order)
#
# Environment: RESULTS_DIR (default bench/results): the report goes to RESULTS_DIR/http.md,
# wrk's output, the builds and the servers' logs to RESULTS_DIR/raw/http/.
#
# Needs wrk and curl (the script stops if one is missing). Each server needs its own tool:
# the .NET 10 SDK (with clang and zlib1g-dev for NativeAOT), nginx, gunicorn, unicorn, puma
# (Debian: apt-get install wrk nginx gunicorn unicorn puma). A server whose tool is missing,
# or whose build fails, is skipped with a line that says why, and the report says so too.
#
# Each round runs every server in every mode once, in the order given, so a slow drift of
# the machine hits them alike. Each run is a fresh start of the server, warmed up with -u
# seconds of the same load (a JIT build compiles its hot paths then), then timed; the report
# gives, per server and mode, the median over the rounds of requests/s, of wrk's p50 and p99
# latency, of the server's CPU time per request (all its processes, from /proc/PID/stat) and
# of the PSS (from /proc/PID/smaps_rollup, right after the load) per worker and of the
# master; for the kept-alive runs of a prefork server, how wrk's connections spread over the
# workers (ss, halfway through the run), with Jain's index. After the rounds, each prefork
# server runs once more, with a new connection per request and a wrk script that counts the
# answers per worker pid: its fairness (Jain's index). Every process started here is
# stopped (TERM, then KILL) by its pid, also when the script is interrupted.
set -uo pipefail
export LC_ALL=C

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
HTTP_DIR=$BENCH_DIR/http
# shellcheck source=../procs.sh
. "$BENCH_DIR/procs.sh"
# shellcheck source=common.sh
. "$HTTP_DIR/common.sh"
REPO=$(cd "$BENCH_DIR/.." && pwd)
ROUNDS=2 DURATION=10 WARMUP=10 WORKERS=5 CONNECTIONS=64 THREADS=2 FAIR_DURATION=10
READY_TIMEOUT=30   # seconds a server has to answer GET / with 200 and have all its workers
RESULTS_DIR=${RESULTS_DIR:-$BENCH_DIR/results}
RAW=$RESULTS_DIR/raw/http
ALL_SERVERS=(nginx csharp-jit csharp-aot aspnet-jit aspnet-aot gunicorn unicorn puma)
MODES=(keep-alive close)
# dotnet must not leave an MSBuild node or a compiler server running after the build.
DOTNET_BUILD_FLAGS=(-nodeReuse:false -p:UseSharedCompilation=false)

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'http/run.sh: error: %s\n' "$*" >&2; exit 2; }

while getopts "r:d:u:w:c:t:f:h" opt; do
  case $opt in
    r) ROUNDS=$OPTARG ;;
    d) DURATION=$OPTARG ;;
    u) WARMUP=$OPTARG ;;
    w) WORKERS=$OPTARG ;;
    c) CONNECTIONS=$OPTARG ;;
    t) THREADS=$OPTARG ;;
    f) FAIR_DURATION=$OPTARG ;;
    *) sed -n '2,39p' "$0"; exit 2 ;;
  esac
done
shift $((OPTIND - 1))
for v in ROUNDS DURATION WARMUP WORKERS CONNECTIONS THREADS FAIR_DURATION; do
  [[ ${!v} =~ ^[0-9]+$ ]] || die "$v must be a whole number, not '${!v}'"
done
((ROUNDS >= 1 && DURATION >= 1 && WORKERS >= 1 && CONNECTIONS >= 1 && THREADS >= 1)) ||
  die "-r, -d, -w, -c and -t must be at least 1"
SERVERS=()
for s in "$@"; do
  [[ " ${ALL_SERVERS[*]} " == *" $s "* ]] || die "unknown server '$s' (known: ${ALL_SERVERS[*]})"
  [[ " ${SERVERS[*]} " == *" $s "* ]] || SERVERS+=("$s")
done
((${#SERVERS[@]})) || SERVERS=("${ALL_SERVERS[@]}")

command -v wrk > /dev/null || die "wrk is not installed (Debian: apt-get install wrk)"
command -v curl > /dev/null || die "curl is not installed (Debian: apt-get install curl)"
command -v ss > /dev/null || die "ss is not installed (Debian: apt-get install iproute2)"

rm -rf "$RAW"
mkdir -p "$RAW"

# ---------------------------------------------------------------------------
# Which servers can run. SKIP[NAME] is the reason a selected server does not.
# ---------------------------------------------------------------------------
declare -A SKIP=() LABEL=()
skip() { # NAME REASON
  SKIP[$1]=$2
  printf '%s: skipped: %s\n' "$1" "$2" >&2
}
selected() { [[ " ${SERVERS[*]} " == *" $1 "* && -z ${SKIP[$1]:-} ]]; }
# the version a tool prints, e.g. version_of 'gunicorn --version' -> 20.1.0
version_of() { $1 2>&1 | grep -o '[0-9][0-9.]*[0-9]' | head -1; }

for s in "${SERVERS[@]}"; do
  case $s in
    nginx)
      NGINX=$(command -v nginx || echo /usr/sbin/nginx)
      if [[ -x $NGINX ]]; then LABEL[$s]="nginx $(version_of "$NGINX -v")"
      else skip "$s" "nginx not installed (Debian: apt-get install nginx)"; fi ;;
    csharp-* | aspnet-*)
      command -v dotnet > /dev/null || skip "$s" "the .NET SDK (dotnet) not installed" ;;
    gunicorn)
      if GUNICORN=$(command -v gunicorn); then
        # the interpreter of its #! line, for the Python version
        py=$(sed -n '1s/^#! *\([^ ]*\).*/\1/p' "$GUNICORN")
        LABEL[$s]="gunicorn $(version_of "$GUNICORN --version"), sync worker (Python $(version_of "${py:-python3} --version"))"
      else skip "$s" "gunicorn not installed (Debian: apt-get install gunicorn)"; fi ;;
    unicorn)
      if UNICORN=$(command -v unicorn); then LABEL[$s]="unicorn $(version_of "$UNICORN -v") (Ruby $(version_of "ruby -e print(RUBY_VERSION)"))"
      else skip "$s" "unicorn not installed (Debian: apt-get install unicorn)"; fi ;;
    puma)
      if PUMA=$(command -v puma); then LABEL[$s]="puma $(version_of "$PUMA --version"), 1 thread per worker (Ruby $(version_of "ruby -e print(RUBY_VERSION)"))"
      else skip "$s" "puma not installed (Debian: apt-get install puma)"; fi ;;
  esac
done
LABEL[csharp-jit]="C# --handler http (JIT)"
LABEL[csharp-aot]="C# --handler http (NativeAOT)"
LABEL[aspnet-jit]="ASP.NET Core minimal API, 1 process (JIT)"
LABEL[aspnet-aot]="ASP.NET Core minimal API, 1 process (NativeAOT)"

# ---------------------------------------------------------------------------
# Builds: the .NET servers are published once, before the first round, into RAW/build/NAME.
# ---------------------------------------------------------------------------

# The generated server, from this checkout's template (isolated template store), published
# as a JIT apphost (csharp-jit) and as NativeAOT (csharp-aot), as far as they are selected.
build_csharp() {
  local dir=$RAW/build s
  mkdir -p "$dir"
  log "generating and building the C# server (--handler http)"
  if ! {
    dotnet new install "$REPO/templates/prefork-server" --debug:custom-hive "$dir/hive" &&
    dotnet new prefork-server -n BenchHttp -o "$dir/src" --handler http --aot --debug:custom-hive "$dir/hive"
  } > "$dir/csharp.log" 2>&1; then
    tail -20 "$dir/csharp.log" >&2
    for s in csharp-jit csharp-aot; do selected "$s" && skip "$s" "the template did not generate (log: $dir/csharp.log)"; done
    return
  fi
  publish_dotnet csharp-jit "$dir/src" -p:PublishAot=false --self-contained false
  publish_dotnet csharp-aot "$dir/src"
}

# The stock ASP.NET Core app of bench/http/aspnet/, JIT (aspnet-jit) and NativeAOT (aspnet-aot).
build_aspnet() {
  log "building the ASP.NET Core minimal API (bench/http/aspnet)"
  publish_dotnet aspnet-jit "$HTTP_DIR/aspnet" -p:PublishAot=false --self-contained false
  publish_dotnet aspnet-aot "$HTTP_DIR/aspnet"
}

# publish_dotnet NAME PROJECT [ARGS...]: dotnet publish into RAW/build/NAME, if NAME is selected.
publish_dotnet() {
  local name=$1 project=$2 out=$RAW/build/$1
  shift 2
  selected "$name" || return 0
  mkdir -p "$RAW/build"
  if ! dotnet publish "$project" -c Release -r linux-x64 "${DOTNET_BUILD_FLAGS[@]}" "$@" -o "$out" \
      > "$out.log" 2>&1; then
    tail -20 "$out.log" >&2
    skip "$name" "the build failed (log: $out.log)"
  elif grep -q ' warning ' "$out.log"; then
    log "$name: the build has warnings (log: $out.log)"
  fi
}

if selected csharp-jit || selected csharp-aot; then build_csharp; fi
if selected aspnet-jit || selected aspnet-aot; then build_aspnet; fi

# ---------------------------------------------------------------------------
# Servers. Each start_NAME LOG starts the server, sets SERVER_PID (the master, or the one
# process) and, as soon as it knows it, PORT; start_server then waits until it is ready.
# ---------------------------------------------------------------------------
SERVER_PID=""
PORT=""

# wait_log LOG REGEX: waits (READY_TIMEOUT) until a line of LOG matches the sed REGEX (no '#'
# in it), whose first group is the port; sets PORT.
wait_log() {
  local i
  for ((i = 0; i < READY_TIMEOUT * 10; i++)); do
    PORT=$(sed -n "s#$2#\\1#p" "$1" 2>/dev/null | head -1)
    [[ -n $PORT ]] && return 0
    alive "$SERVER_PID" || return 1
    sleep 0.1
  done
  return 1
}

# The generated server: the master logs "listening on 127.0.0.1:PORT, ..." and, once every
# worker accepts, "pool ready: N workers accepting" (stderr).
start_csharp() { # BINARY LOG
  "$1" --host 127.0.0.1 --port 0 --workers "$WORKERS" > /dev/null 2> "$2" &
  SERVER_PID=$!
  local i
  for ((i = 0; i < READY_TIMEOUT * 10; i++)); do
    grep -qs 'pool ready' "$2" && break
    alive "$SERVER_PID" || return 1
    sleep 0.1
  done
  PORT=$(sed -n 's/.*listening on 127\.0\.0\.1:\([0-9]*\).*/\1/p' "$2" | head -1)
}

# The ASP.NET Core app: one process, port 0; it prints "listening on http://127.0.0.1:PORT".
start_aspnet() { # BINARY LOG
  "$1" > "$2" 2>&1 &
  SERVER_PID=$!
  wait_log "$2" '.*listening on http://127\.0\.0\.1:\([0-9]*\).*'
}

# nginx: as many worker processes as the C# server (bench/http/common.sh).
start_nginx() { # LOG
  PORT=$(free_port) || return 1
  start_nginx_with "$1" "listen 127.0.0.1:$PORT;"
}

# gunicorn with its default sync worker (one request at a time per worker, and it closes
# every connection after its answer), warnings only, no access log. No .pyc in the checkout.
start_gunicorn() { # LOG
  PORT=$(free_port) || return 1
  PYTHONDONTWRITEBYTECODE=1 "$GUNICORN" --workers "$WORKERS" --worker-class sync --bind "127.0.0.1:$PORT" \
    --chdir "$HTTP_DIR" --log-level warning wsgi_app:app > "$1" 2>&1 &
  SERVER_PID=$!
}

# unicorn: its configuration is written next to its logs. RACK_ENV production: no
# middleware (development would add a request log and Rack::Lint). Unicorn too closes
# every connection after its answer.
start_unicorn() { # LOG
  local dir=$RAW/unicorn
  mkdir -p "$dir"
  PORT=$(free_port) || return 1
  cat > "$dir/unicorn.conf.rb" <<EOF
worker_processes $WORKERS
listen "127.0.0.1:$PORT"
preload_app false
EOF
  "$UNICORN" -E production -c "$dir/unicorn.conf.rb" "$HTTP_DIR/config.ru" > "$1" 2>&1 &
  SERVER_PID=$!
}

# puma in cluster mode, one thread per worker (-t 1:1), like the other prefork servers.
start_puma() { # LOG
  PORT=$(free_port) || return 1
  "$PUMA" --workers "$WORKERS" --threads 1:1 --bind "tcp://127.0.0.1:$PORT" --environment production \
    "$HTTP_DIR/config.ru" > "$1" 2>&1 &
  SERVER_PID=$!
}

# single_process NAME: the server is one process, no master, no workers.
single_process() { [[ $1 == aspnet-* ]]; }

# waits (READY_TIMEOUT) until the server answers GET / with 200 and (prefork servers) has
# WORKERS child processes.
wait_ready() { # NAME
  local i want=$WORKERS have
  single_process "$1" && want=0
  for ((i = 0; i < READY_TIMEOUT * 10; i++)); do
    alive "$SERVER_PID" || return 1
    if [[ $(curl -s --max-time 2 -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PORT/" 2>/dev/null) == 200 ]]; then
      have=$(($(wc -w <<< "$(tree_pids "$SERVER_PID")") - 1))
      ((have >= want)) && return 0
    fi
    sleep 0.1
  done
  log "$1: not ready after $READY_TIMEOUT s (port ${PORT:-unknown}, ${have:-no} worker processes)"
  return 1
}

# start_server NAME LOG: starts it and waits until it is ready. A server that did not come
# up is stopped and started once more (a fixed port may have been taken in between).
start_server() {
  local try
  for try in 1 2; do
    PORT=""
    case $1 in
      nginx) start_nginx "$2" ;;
      csharp-*) start_csharp "$RAW/build/$1/BenchHttp" "$2" ;;
      aspnet-*) start_aspnet "$RAW/build/$1/AspNetHello" "$2" ;;
      gunicorn) start_gunicorn "$2" ;;
      unicorn) start_unicorn "$2" ;;
      puma) start_puma "$2" ;;
    esac && [[ -n $PORT ]] && wait_ready "$1" && return 0
    stop_server
    ((try == 1)) && log "$1 did not start (log: $2); once more" && cp "$2" "$2.try1" 2>/dev/null
  done
  return 1
}

# free_port, start_nginx_with, stop_server and median: bench/http/common.sh
trap stop_server EXIT
trap 'log "interrupted"; exit 130' INT TERM

# ---------------------------------------------------------------------------
# wrk and its figures
# ---------------------------------------------------------------------------

# to_us VALUE: wrk's "512.00us", "3.21ms" or "1.02s" in microseconds.
to_us() {
  [[ -n $1 ]] || return 0
  awk -v v="$1" 'BEGIN {
    n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
    if (u == "ms") n *= 1000; else if (u == "s") n *= 1000000; else if (u == "m") n *= 60000000
    printf "%.0f", n }'
}

# wrk_errors OUT: wrk's socket errors and non-2xx answers, as one line (empty if none).
wrk_errors() {
  awk '/Socket errors:/ { gsub(/,/, ""); print "socket errors: connect " $4 ", read " $6 ", write " $8 ", timeout " $10 }
       /Non-2xx/ { print "non-2xx: " $NF }' "$1" | paste -sd ';' -
}

# tree_ticks PID: the CPU time (user + system, clock ticks) of PID and its descendants. The
# fields are counted after the ")" that ends the command name, which may hold spaces.
tree_ticks() {
  local p t sum=0
  for p in $(tree_pids "$1"); do
    t=$(sed 's/.*) //' "/proc/$p/stat" 2>/dev/null | awk '{ print $12 + $13 }')
    sum=$((sum + ${t:-0}))
  done
  echo "$sum"
}

# spread NAME: how the established connections to PORT spread over the server's processes
# (ss -p names the process that holds each), as "13 13 13 13 12" (most first, with a 0 for
# each worker that holds none) and Jain's index over them; empty for a single process.
spread() {
  local i
  single_process "$1" && return 0
  { ss -Htnp state established "( sport = :$PORT )" | sed -n 's/.*pid=\([0-9]*\).*/\1/p' | sort | uniq -c |
      awk '{ print $1 }'
    for ((i = 0; i < WORKERS; i++)); do echo 0; done; } |
    sort -rn | awk -v w="$WORKERS" '$1 > 0 || n < w { x[++n] = $1; s += $1; q += $1 * $1 }
      END { if (!s) exit; line = x[1]; for (i = 2; i <= n; i++) line = line "/" x[i]
            printf "%s\t%.3f", line, s * s / (n * q) }'
}

# run_wrk NAME MODE OUT: warms the server up (WARMUP s of the same load, untimed), runs wrk,
# then sets RPS, P50, P99 (µs), CPU (the server's µs per request), SPREAD and SPREAD_JAIN
# (kept alive only, read halfway through the run) and ERRORS from its output.
run_wrk() {
  local args=(-t "$THREADS" -c "$CONNECTIONS" --latency) ticks wrk_pid requests
  [[ $2 == close ]] && args+=(-H 'Connection: close')
  ((WARMUP > 0)) && wrk "${args[@]}" -d "${WARMUP}s" "http://127.0.0.1:$PORT/" > "$3.warmup" 2>&1
  ticks=$(tree_ticks "$SERVER_PID")
  wrk "${args[@]}" -d "${DURATION}s" "http://127.0.0.1:$PORT/" > "$3" 2>&1 &
  wrk_pid=$!
  SPREAD="" SPREAD_JAIN=""
  if [[ $2 == keep-alive ]]; then
    sleep "$(awk -v d="$DURATION" 'BEGIN { print d / 2 }')"
    IFS=$'\t' read -r SPREAD SPREAD_JAIN <<< "$(spread "$1")"
  fi
  wait "$wrk_pid"
  ticks=$(($(tree_ticks "$SERVER_PID") - ticks))
  RPS=$(awk '/^Requests\/sec:/ { printf "%.0f", $2 }' "$3")
  P50=$(to_us "$(awk '$1 == "50%" { print $2 }' "$3")")
  P99=$(to_us "$(awk '$1 == "99%" { print $2 }' "$3")")
  requests=$(awk '/ requests in / { print $1 }' "$3")
  CPU=""
  [[ -n $requests ]] && ((requests > 0)) &&
    CPU=$(awk -v t="$ticks" -v hz="$(getconf CLK_TCK)" -v r="$requests" 'BEGIN { printf "%.1f", t * 1e6 / hz / r }')
  ERRORS=$(wrk_errors "$3")
}

# pss_kib PID: Pss of the process (KiB) from /proc/PID/smaps_rollup; empty if it is gone.
pss_kib() { awk '$1 == "Pss:" { print $2; exit }' "/proc/$1/smaps_rollup" 2>/dev/null; }

# measure_pss NAME: MASTER_PSS (KiB; empty for a single process), WORKER_PSS (KiB, the mean
# over the master's descendants, or the one process) and NWORKERS, for the running server.
measure_pss() {
  local p kib sum=0
  MASTER_PSS="" WORKER_PSS="" NWORKERS=0
  if single_process "$1"; then
    WORKER_PSS=$(pss_kib "$SERVER_PID") && NWORKERS=1
    return
  fi
  MASTER_PSS=$(pss_kib "$SERVER_PID")
  for p in $(tree_pids "$SERVER_PID"); do
    [[ $p == "$SERVER_PID" ]] && continue
    kib=$(pss_kib "$p")
    [[ -n $kib ]] || continue
    sum=$((sum + kib)) NWORKERS=$((NWORKERS + 1))
  done
  ((NWORKERS)) && WORKER_PSS=$((sum / NWORKERS))
}

mib() { [[ -n $1 ]] && awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }
or_dash() { if [[ -n $1 ]]; then echo "$1"; else echo "—"; fi; }

# ---------------------------------------------------------------------------
# The runs
# ---------------------------------------------------------------------------
RUNS_FILE=$RAW/runs.tsv     # round server mode rps p50 p99 master-pss worker-pss workers errors cpu spread jain
FAILS_FILE=$RAW/failed.txt  # one line per run that gave no figures
FAIR_FILE=$RAW/fairness.tsv # server requests pids min max jain errors
: > "$RUNS_FILE"; : > "$FAILS_FILE"; : > "$FAIR_FILE"
RUNNABLE=()
for s in "${SERVERS[@]}"; do selected "$s" && RUNNABLE+=("$s"); done
((${#RUNNABLE[@]})) || log "no server can run"

for ((round = 1; round <= ROUNDS; round++)); do
  for server in "${RUNNABLE[@]}"; do
    for mode in "${MODES[@]}"; do
      out=$RAW/$server-$mode-$round
      if ! start_server "$server" "$out.server.log"; then
        log "round $round/$ROUNDS: $server, $mode: the server did not start (log: $out.server.log)"
        echo "round $round, $server, $mode: the server did not start (log: raw/http/${out##*/}.server.log)" >> "$FAILS_FILE"
        continue
      fi
      log "round $round/$ROUNDS: $server, $mode, port $PORT: wrk -t $THREADS -c $CONNECTIONS, ${WARMUP} s warm-up, ${DURATION} s timed"
      run_wrk "$server" "$mode" "$out.wrk.txt"
      measure_pss "$server"
      stop_server
      if [[ -z $RPS ]]; then
        log "  no figures from wrk (output: $out.wrk.txt)"
        echo "round $round, $server, $mode: no figures from wrk (raw/http/${out##*/}.wrk.txt)" >> "$FAILS_FILE"
        continue
      fi
      log "  $RPS requests/s, p50 ${P50} us, p99 ${P99} us, server CPU ${CPU:-?} us/request${SPREAD:+, connections per worker $SPREAD (Jain $SPREAD_JAIN)}, PSS $(mib "$WORKER_PSS") MiB per worker ($NWORKERS)${MASTER_PSS:+, master $(mib "$MASTER_PSS") MiB}${ERRORS:+, $ERRORS}"
      printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$round" "$server" "$mode" "$RPS" "$P50" "$P99" \
        "$MASTER_PSS" "$WORKER_PSS" "$NWORKERS" "${ERRORS:-}" "$CPU" "$SPREAD" "$SPREAD_JAIN" >> "$RUNS_FILE"
    done
  done
done

# Fairness: one run per prefork server, a new connection per request, wrk counting the
# answers per pid (fairness.lua). Jain's index over n = max(WORKERS, pids seen): a worker
# that never answered counts as 0.
if ((FAIR_DURATION > 0)); then
  for server in "${RUNNABLE[@]}"; do
    single_process "$server" && continue
    out=$RAW/$server-fairness
    if ! start_server "$server" "$out.server.log"; then
      log "fairness: $server did not start (log: $out.server.log)"
      echo "fairness, $server: the server did not start (log: raw/http/${out##*/}.server.log)" >> "$FAILS_FILE"
      continue
    fi
    log "fairness: $server, close, port $PORT: wrk -t $THREADS -c $CONNECTIONS -d ${FAIR_DURATION}s -s fairness.lua"
    wrk -t "$THREADS" -c "$CONNECTIONS" -d "${FAIR_DURATION}s" -H 'Connection: close' -s "$HTTP_DIR/fairness.lua" \
      "http://127.0.0.1:$PORT/" > "$out.wrk.txt" 2>&1
    stop_server
    line=$(awk -v w="$WORKERS" '$1 == "pid" && $2 != "none" { x[$2] = $3; n++; s += $3; q += $3 * $3
                                   if (min == "" || $3 < min) min = $3; if ($3 > max) max = $3 }
      END { if (!n) exit; k = n > w ? n : w; if (n < k) min = 0
            printf "%d\t%d\t%d\t%d\t%.3f", s, n, min, max, s * s / (k * q) }' "$out.wrk.txt")
    if [[ -z $line ]]; then
      log "  no pids counted (output: $out.wrk.txt)"
      echo "fairness, $server: no pids counted (raw/http/${out##*/}.wrk.txt)" >> "$FAILS_FILE"
      continue
    fi
    errors=$(wrk_errors "$out.wrk.txt")
    IFS=$'\t' read -r total pids lo hi jain <<< "$line"
    log "  $total answers from $pids pids ($lo to $hi each): Jain's index $jain${errors:+, $errors}"
    printf '%s\t%s\t%s\n' "$server" "$line" "${errors:-}" >> "$FAIR_FILE"
  done
fi

# ---------------------------------------------------------------------------
# The report
# ---------------------------------------------------------------------------
REPORT=$RESULTS_DIR/http.md
versions() {
  local v
  v="wrk $(wrk --version 2>&1 | head -1 | awk '{ print $2 }')"
  command -v dotnet > /dev/null && v+=", .NET SDK $(dotnet --version 2>/dev/null)"
  echo "$v"
}
{
  echo "# HTTP: the --handler http server against ASP.NET Core, nginx, gunicorn, unicorn and puma"
  echo
  echo "Written by \`bash bench/http/run.sh -r $ROUNDS -d $DURATION -u $WARMUP -w $WORKERS -c $CONNECTIONS -t $THREADS -f $FAIR_DURATION ${SERVERS[*]}\` on $(date -u '+%Y-%m-%d %H:%M UTC')."
  echo "Machine: $(nproc) CPUs ($(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo)), Linux $(uname -r);"
  echo "$(versions)."
  echo "wrk, the servers and everything else share these CPUs. $WORKERS workers per prefork server, on 127.0.0.1;"
  echo "wrk with $THREADS threads and $CONNECTIONS connections for $DURATION s per run, after $WARMUP s of the same load untimed"
  echo "(the warm-up); $ROUNDS round$( ((ROUNDS == 1)) || echo s)."
  echo "Each figure is the median over the rounds; latency is wrk's (\`--latency\`), in microseconds."
  echo "CPU µs/request: the CPU time (user + system) of all the server's processes during the timed run, over the requests wrk counted."
  echo "Connections per worker: how wrk's $CONNECTIONS kept-alive connections were spread over the workers halfway through the run"
  echo "(\`ss -tnp\`, most first), in the round of the lowest Jain's index; a worker that held none counts as 0."
  echo "PSS (MiB) is read from \`/proc/PID/smaps_rollup\` right after the load: per worker, the mean over the"
  echo "master's child processes (for the single-process ASP.NET Core app, its one process); the master's own apart."
  echo
  echo "| server | connections | requests/s | p50 µs | p99 µs | CPU µs/request | connections per worker (Jain) | PSS per worker | workers | master PSS | requests/s of each round |"
  echo "| --- | --- | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: | --- |"
  for mode in "${MODES[@]}"; do
    what=$([[ $mode == close ]] && echo "new one per request (\`Connection: close\`)" || echo "kept alive")
    for server in "${SERVERS[@]}"; do
      if [[ -n ${SKIP[$server]:-} ]]; then
        echo "| ${LABEL[$server]:-$server} | $what | skipped: ${SKIP[$server]} | | | | | | | | |"
        continue
      fi
      rows=$(awk -F'\t' -v s="$server" -v m="$mode" '$2 == s && $3 == m' "$RUNS_FILE")
      if [[ -z $rows ]]; then
        echo "| ${LABEL[$server]} | $what | failed (see below) | | | | | | | | |"
        continue
      fi
      rps=$(cut -f4 <<< "$rows" | median)
      p50=$(cut -f5 <<< "$rows" | median)
      p99=$(cut -f6 <<< "$rows" | median)
      master=$(mib "$(cut -f7 <<< "$rows" | median)")
      worker=$(mib "$(cut -f8 <<< "$rows" | median)")
      nworkers=$(cut -f9 <<< "$rows" | median)
      single_process "$server" && nworkers="1 process"
      cpu=$(cut -f11 <<< "$rows" | awk 'NF { printf "%.0f\n", $1 * 10 }' | median | awk 'NF { printf "%.1f", $1 / 10 }')
      # the round whose connections were spread least evenly
      worst=$(awk -F'\t' '$13 != "" { print $13 "\t" $12 }' <<< "$rows" | sort -n | head -1)
      spread_cell=$([[ -n $worst ]] && echo "${worst#*$'\t'} (${worst%%$'\t'*})")
      each=$(cut -f4 <<< "$rows" | paste -sd ' ' -)
      echo "| ${LABEL[$server]} | $what | $rps | $p50 | $p99 | $(or_dash "$cpu") | $(or_dash "$spread_cell") | $(or_dash "$worker") | $nworkers | $(or_dash "$master") | $each |"
    done
  done
  echo
  errors=$(awk -F'\t' '$10 != "" { print "- round " $1 ", " $2 ", " $3 ": " $10 }' "$RUNS_FILE")
  if [[ -n $errors ]]; then
    echo "wrk counted errors:"
    echo
    echo "$errors"
  else
    echo "wrk counted no socket errors and no non-2xx answers in any run."
  fi
  if [[ -s $FAILS_FILE ]]; then
    echo
    echo "Runs that gave no figures:"
    echo
    sed 's/^/- /' "$FAILS_FILE"
  fi
  echo
  echo "## Fairness"
  echo
  if ((FAIR_DURATION == 0)); then
    echo "Not measured (\`-f 0\`)."
  else
    echo "One more run of each prefork server, $FAIR_DURATION s with a new connection per request (\`Connection: close\`),"
    echo "in which a wrk script (\`bench/http/fairness.lua\`) counts the answers per worker pid, read from the body."
    echo "Jain's index (Σx)² / (n·Σx²) over the answers per worker: 1 when every worker served as many, 1/n when one"
    echo "served them all; n is the larger of $WORKERS and the pids seen, so a worker that never answered counts as 0."
    echo "wrk's per-answer script slows it down, so these runs are not timed. The single-process ASP.NET Core app has no workers to compare."
    echo
    echo "| server | answers counted | worker pids seen | answers per worker, fewest–most | Jain's index |"
    echo "| --- | ---: | ---: | --- | ---: |"
    for server in "${SERVERS[@]}"; do
      single_process "$server" && continue
      if [[ -n ${SKIP[$server]:-} ]]; then
        echo "| ${LABEL[$server]:-$server} | skipped | | | |"
        continue
      fi
      row=$(awk -F'\t' -v s="$server" '$1 == s' "$FAIR_FILE")
      if [[ -z $row ]]; then
        echo "| ${LABEL[$server]} | failed (see above) | | | |"
        continue
      fi
      IFS=$'\t' read -r _ total pids lo hi jain ferrors <<< "$row"
      echo "| ${LABEL[$server]} | $total | $pids | $lo–$hi | $jain |"
      [[ -n ${ferrors:-} ]] && fair_errors+="- ${LABEL[$server]}: $ferrors"$'\n'
    done
    if [[ -n ${fair_errors:-} ]]; then
      echo
      echo "wrk counted errors in the fairness runs:"
      echo
      printf '%s' "$fair_errors"
    fi
  fi
  echo
  echo "## The servers"
  echo
  echo "Every server answers \`GET /\` with 200, \`Content-Type: text/plain; charset=utf-8\` and \`Hello from <pid>\\n\`"
  echo "(16 to 18 bytes: the worker's pid, for the ASP.NET Core app its own), logs no requests and listens on 127.0.0.1."
  echo
  echo "- The C# server: \`dotnet new prefork-server --handler http\` from this checkout's template, \`--workers $WORKERS\`,"
  echo "  all else default; published as a JIT apphost and with NativeAOT."
  echo "- ASP.NET Core: \`bench/http/aspnet/\`, a stock minimal API (\`WebApplication.CreateSlimBuilder\`,"
  echo "  \`app.MapGet(\"/\", () => Results.Text(greeting))\` as the template's Handler.cs (so a Content-Length),"
  echo "  logging at Warning, the web SDK's defaults (server GC), one process, Kestrel on port 0; published JIT and NativeAOT."
  echo "- nginx: \`worker_processes $WORKERS\`, \`return 200 \"Hello from \$pid\\n\"\`, \`default_type text/plain\` and \`charset utf-8\`,"
  echo "  \`access_log off\`, \`keepalive_requests 1000000000\` (its default closes a connection after 1000 requests)."
  echo "- gunicorn: \`--workers $WORKERS --worker-class sync\` (its default) with \`bench/http/wsgi_app.py\`. A sync worker"
  echo "  serves one connection at a time and closes it after the answer, so \"kept alive\" is a new connection per request too."
  echo "- unicorn: \`worker_processes $WORKERS\`, \`-E production\`, \`bench/http/config.ru\`; it too closes every connection."
  echo "- puma: cluster mode, \`--workers $WORKERS --threads 1:1 --environment production\`, \`bench/http/config.ru\`."
  echo
  echo "Raw wrk output, the builds and the servers' logs: \`raw/http/\` next to this report (not kept in git)."
} > "$REPORT"
cat "$REPORT"
