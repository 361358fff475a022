#!/usr/bin/env bash
# HTTP benchmark: the server `dotnet new prefork-server --handler http` generates (JIT and
# NativeAOT builds) against nginx, each with WORKERS worker processes on 127.0.0.1, both
# answering every request with a 17-byte text/plain body. The load comes from wrk, over
# kept-alive connections and with a new connection per request (wrk -H 'Connection: close').
#
#   bash bench/http/run.sh [-r ROUNDS] [-d SECONDS] [-w WORKERS] [-c CONNECTIONS] [-t THREADS] [SERVER...]
#
#   -r ROUNDS        every server and mode runs this many times (default 2)
#   -d SECONDS       seconds of load per run (default 10)
#   -w WORKERS       worker processes per server (default 5)
#   -c CONNECTIONS   wrk's open connections (default 64)
#   -t THREADS       wrk's threads (default 2)
#   SERVER           nginx, csharp-jit, csharp-aot (default: all three, in that order)
#
# Environment: RESULTS_DIR (default bench/results): the report goes to RESULTS_DIR/http.md,
# wrk's output and the servers' logs to RESULTS_DIR/raw/http/.
#
# Needs the .NET 10 SDK (with clang and zlib1g-dev for NativeAOT), wrk and nginx. On Debian:
# apt-get install wrk nginx. A missing tool stops the script with that line.
#
# Each round runs every server in every mode once, in the order given, so a slow drift of
# the machine hits them alike. Each run is a fresh start of the server; the report gives,
# per server and mode, the median over the rounds of requests/s and of wrk's p50 and p99
# latency. Every server started here is stopped (TERM, then KILL) by its pid, also when the
# script is interrupted.
set -uo pipefail
export LC_ALL=C

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=../procs.sh
. "$BENCH_DIR/procs.sh"
REPO=$(cd "$BENCH_DIR/.." && pwd)
ROUNDS=2 DURATION=10 WORKERS=5 CONNECTIONS=64 THREADS=2
RESULTS_DIR=${RESULTS_DIR:-$BENCH_DIR/results}
RAW=$RESULTS_DIR/raw/http
BODY="Hello from nginx"   # nginx's body; the C# server's is "Hello from <pid>" (5 to 7 digits)

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'http/run.sh: error: %s\n' "$*" >&2; exit 2; }

while getopts "r:d:w:c:t:h" opt; do
  case $opt in
    r) ROUNDS=$OPTARG ;;
    d) DURATION=$OPTARG ;;
    w) WORKERS=$OPTARG ;;
    c) CONNECTIONS=$OPTARG ;;
    t) THREADS=$OPTARG ;;
    *) sed -n '2,26p' "$0"; exit 2 ;;
  esac
done
shift $((OPTIND - 1))
SERVERS=("$@")
((${#SERVERS[@]})) || SERVERS=(nginx csharp-jit csharp-aot)
for s in "${SERVERS[@]}"; do
  [[ $s =~ ^(nginx|csharp-jit|csharp-aot)$ ]] || die "unknown server '$s' (known: nginx csharp-jit csharp-aot)"
done
MODES=(keep-alive close)

command -v wrk > /dev/null || die "wrk is not installed (Debian: apt-get install wrk)"
command -v curl > /dev/null || die "curl is not installed (Debian: apt-get install curl)"
if [[ " ${SERVERS[*]} " == *" nginx "* ]]; then
  NGINX=$(command -v nginx || echo /usr/sbin/nginx)
  [[ -x $NGINX ]] || die "nginx is not installed (Debian: apt-get install nginx)"
fi
if [[ " ${SERVERS[*]} " == *" csharp-"* ]]; then
  command -v dotnet > /dev/null || die "the .NET SDK (dotnet) is not installed"
fi

rm -rf "$RAW"
mkdir -p "$RAW"

# ---------------------------------------------------------------------------
# Servers. Each start_NAME sets SERVER_PID (the master) and PORT, or fails.
# ---------------------------------------------------------------------------
SERVER_PID=""

# The generated server, from this checkout's template (isolated template store), published
# once as a JIT apphost and once as NativeAOT.
build_csharp() {
  local dir=$RAW/build
  mkdir -p "$dir"
  log "generating and building the C# server (--handler http; JIT and NativeAOT)"
  {
    dotnet new install "$REPO/templates/prefork-server" --debug:custom-hive "$dir/hive" &&
    dotnet new prefork-server -n BenchHttp -o "$dir/src" --handler http --aot --debug:custom-hive "$dir/hive" &&
    dotnet publish "$dir/src" -c Release -r linux-x64 -p:PublishAot=false --self-contained false -o "$dir/jit" &&
    dotnet publish "$dir/src" -c Release -r linux-x64 -o "$dir/aot"
  } > "$dir/build.log" 2>&1 || { tail -40 "$dir/build.log" >&2; die "C# server build failed (log: $dir/build.log)"; }
}

# waits (30 s at most) until the server answers GET / with 200.
wait_http() {
  local i
  for ((i = 0; i < 300; i++)); do
    [[ $(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PORT/" 2>/dev/null) == 200 ]] && return 0
    alive "$SERVER_PID" || return 1
    sleep 0.1
  done
  return 1
}

start_csharp() { # BINARY LOG
  "$1" --host 127.0.0.1 --port 0 --workers "$WORKERS" > /dev/null 2> "$2" &
  SERVER_PID=$!
  local i
  for ((i = 0; i < 300; i++)); do
    if grep -q 'pool ready' "$2"; then
      PORT=$(sed -n 's/.*listening on 127\.0\.0\.1:\([0-9]*\),.*/\1/p' "$2" | head -1)
      wait_http
      return
    fi
    alive "$SERVER_PID" || return 1
    sleep 0.1
  done
  return 1
}

# A port nobody listens on, for nginx (which cannot report a port the kernel chose).
free_port() {
  local port
  while :; do
    port=$((20000 + RANDOM % 10000))
    ss -Htln "sport = :$port" | grep -q . || { echo "$port"; return; }
  done
}

start_nginx() { # LOG
  local dir=$RAW/nginx
  mkdir -p "$dir/tmp"
  PORT=$(free_port)
  # As many worker processes as the C# server, logging off, no limit on requests per
  # connection (nginx's default closes a connection after 1000: the C# server never does).
  cat > "$dir/nginx.conf" <<EOF
worker_processes $WORKERS;
pid $dir/nginx.pid;
error_log $dir/error.log;
events { worker_connections 4096; }
http {
  access_log off;
  server_tokens off;
  keepalive_requests 1000000000;
  default_type text/plain;
  charset utf-8;
  client_body_temp_path $dir/tmp/body;
  proxy_temp_path $dir/tmp/proxy;
  fastcgi_temp_path $dir/tmp/fastcgi;
  uwsgi_temp_path $dir/tmp/uwsgi;
  scgi_temp_path $dir/tmp/scgi;
  server {
    listen 127.0.0.1:$PORT;
    location / { return 200 "$BODY\n"; }
  }
}
EOF
  "$NGINX" -p "$dir" -c "$dir/nginx.conf" -g 'daemon off;' > "$1" 2>&1 &
  SERVER_PID=$!
  wait_http
}

start_server() { # NAME LOG
  case $1 in
    nginx) start_nginx "$2" ;;
    csharp-jit) start_csharp "$RAW/build/jit/BenchHttp" "$2" ;;
    csharp-aot) start_csharp "$RAW/build/aot/BenchHttp" "$2" ;;
  esac
}

# TERM to the master (graceful for both), 10 s, then KILL for whatever is left of its tree.
stop_server() {
  [[ -n $SERVER_PID ]] || return 0
  local tree i
  tree=$(tree_pids "$SERVER_PID")
  kill -TERM "$SERVER_PID" 2>/dev/null
  for ((i = 0; i < 100; i++)); do
    alive "$SERVER_PID" || break
    sleep 0.1
  done
  for i in $tree; do alive "$i" && kill -KILL "$i" 2>/dev/null; done
  wait "$SERVER_PID" 2>/dev/null
  SERVER_PID=""
}
trap stop_server EXIT
trap 'log "interrupted"; exit 130' INT TERM

# ---------------------------------------------------------------------------
# wrk and its figures
# ---------------------------------------------------------------------------

# to_us VALUE: wrk's "512.00us", "3.21ms" or "1.02s" in microseconds.
to_us() {
  awk -v v="$1" 'BEGIN {
    n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
    if (u == "ms") n *= 1000; else if (u == "s") n *= 1000000; else if (u == "m") n *= 60000000
    printf "%.0f", n }'
}

# run_wrk MODE OUT: runs wrk, then sets RPS, P50, P99 (µs) and ERRORS from its output.
run_wrk() {
  local args=(-t "$THREADS" -c "$CONNECTIONS" -d "${DURATION}s" --latency)
  [[ $1 == close ]] && args+=(-H 'Connection: close')
  wrk "${args[@]}" "http://127.0.0.1:$PORT/" > "$2" 2>&1
  RPS=$(awk '/^Requests\/sec:/ { printf "%.0f", $2 }' "$2")
  P50=$(to_us "$(awk '$1 == "50%" { print $2 }' "$2")")
  P99=$(to_us "$(awk '$1 == "99%" { print $2 }' "$2")")
  ERRORS=$(awk '/Socket errors:/ { gsub(/,/, ""); print "socket errors: connect " $4 ", read " $6 ", write " $8 ", timeout " $10 }
                /Non-2xx/ { print "non-2xx: " $NF }' "$2" | paste -sd ';' -)
}

median() { sort -n | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else printf "%.0f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

label() {
  case $1 in
    nginx) echo "nginx $("$NGINX" -v 2>&1 | sed 's|.*nginx/||')" ;;
    csharp-jit) echo "C# --handler http (JIT)" ;;
    csharp-aot) echo "C# --handler http (NativeAOT)" ;;
  esac
}

# ---------------------------------------------------------------------------
# The runs
# ---------------------------------------------------------------------------
[[ " ${SERVERS[*]} " == *" csharp-"* ]] && build_csharp

RUNS_FILE=$RAW/runs.tsv
: > "$RUNS_FILE"
for ((round = 1; round <= ROUNDS; round++)); do
  for server in "${SERVERS[@]}"; do
    for mode in "${MODES[@]}"; do
      out=$RAW/$server-$mode-$round
      if ! start_server "$server" "$out.server.log"; then
        stop_server
        die "$server did not start (log: $out.server.log)"
      fi
      log "round $round/$ROUNDS: $server, $mode, port $PORT: wrk -t $THREADS -c $CONNECTIONS -d ${DURATION}s"
      run_wrk "$mode" "$out.wrk.txt"
      stop_server
      [[ -n $RPS ]] || die "no figures from wrk (output: $out.wrk.txt)"
      log "  $RPS requests/s, p50 ${P50} us, p99 ${P99} us${ERRORS:+, $ERRORS}"
      printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$round" "$server" "$mode" "$RPS" "$P50" "$P99" "${ERRORS:-}" >> "$RUNS_FILE"
    done
  done
done

# ---------------------------------------------------------------------------
# The report
# ---------------------------------------------------------------------------
REPORT=$RESULTS_DIR/http.md
{
  echo "# HTTP: the --handler http server against nginx"
  echo
  echo "Written by \`bash bench/http/run.sh -r $ROUNDS -d $DURATION -w $WORKERS -c $CONNECTIONS -t $THREADS ${SERVERS[*]}\` on $(date -u '+%Y-%m-%d %H:%M UTC')."
  echo "Machine: $(nproc) CPUs ($(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo)), Linux $(uname -r);"
  echo "$(wrk --version 2>&1 | head -1 | awk '{ print "wrk " $2 }'), $(dotnet --version 2>/dev/null | sed 's/^/.NET SDK /')."
  echo "wrk, the servers and everything else share these CPUs. $WORKERS workers per server, on 127.0.0.1;"
  echo "wrk with $THREADS threads and $CONNECTIONS connections for $DURATION s per run; $ROUNDS rounds."
  echo "Each figure is the median over the rounds; latency is wrk's (\`--latency\`), in microseconds."
  echo
  echo "| server | connections | requests/s | p50 µs | p99 µs | requests/s of each round |"
  echo "| --- | --- | ---: | ---: | ---: | --- |"
  for mode in "${MODES[@]}"; do
    for server in "${SERVERS[@]}"; do
      rows=$(awk -F'\t' -v s="$server" -v m="$mode" '$2 == s && $3 == m' "$RUNS_FILE")
      rps=$(cut -f4 <<< "$rows" | median)
      p50=$(cut -f5 <<< "$rows" | median)
      p99=$(cut -f6 <<< "$rows" | median)
      each=$(cut -f4 <<< "$rows" | paste -sd ' ' -)
      what=$([[ $mode == close ]] && echo "new one per request (\`Connection: close\`)" || echo "kept alive")
      echo "| $(label "$server") | $what | $rps | $p50 | $p99 | $each |"
    done
  done
  echo
  errors=$(awk -F'\t' '$7 != "" { print "- round " $1 ", " $2 ", " $3 ": " $7 }' "$RUNS_FILE")
  if [[ -n $errors ]]; then
    echo "wrk counted errors:"
    echo
    echo "$errors"
  else
    echo "wrk counted no socket errors and no non-2xx answers in any run."
  fi
  echo
  echo "nginx: \`worker_processes $WORKERS\`, \`location / { return 200 \"$BODY\\n\"; }\`, \`default_type text/plain\`"
  echo "and \`charset utf-8\` (so the same Content-Type), \`access_log off\`, \`keepalive_requests 1000000000\`."
  echo "The C# server: \`--handler http\`, its default greeting \`Hello from {pid}\` (a body of 16 to 18 bytes),"
  echo "\`--workers $WORKERS\`, all else default. Raw wrk output: \`bench/results/raw/http/\` (not kept in git)."
} > "$REPORT"
cat "$REPORT"
