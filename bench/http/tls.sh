#!/usr/bin/env bash
# HTTPS benchmark: the server `dotnet new prefork-server --handler http --aot` generates
# (NativeAOT, WORKERS workers, --certificate and --certificate-key) against one ASP.NET Core
# process (bench/http/aspnet-tls, NativeAOT: Kestrel's UseHttps) and nginx (ssl, http2, WORKERS
# worker processes), all on 127.0.0.1 with one self-signed ECDSA P-256 certificate made here,
# all answering GET / with "Hello from <pid>\n". Three loads, each over TLS 1.3:
#
#   h2      h2load, HTTP/2, CONNECTIONS kept-alive connections with STREAMS streams each
#   https   wrk, HTTP/1.1 on CONNECTIONS kept-alive connections
#   new     wrk with `Connection: close`: a new connection, and a full handshake, per request
#           (its requests/s are handshakes/s)
#
#   bash bench/http/tls.sh [-r ROUNDS] [-d SECONDS] [-w WORKERS] [-c CONNECTIONS] [-m STREAMS] [-t THREADS] [SERVER...]
#
#   -r ROUNDS        every server and load runs this many times (default 2); the report gives medians
#   -d SECONDS       seconds of load per run (default 10)
#   -w WORKERS       worker processes of the generated server and of nginx (default 5)
#   -c CONNECTIONS   connections of h2load and wrk (default 64)
#   -m STREAMS       h2load's streams at a time per connection (default 10)
#   -t THREADS       threads of h2load and wrk (default 2)
#   SERVER           csharp-aot aspnet-aot nginx (default: all three, in that order)
#
# Environment: RESULTS_DIR (default bench/results): the report goes to RESULTS_DIR/tls.md, the
# load generators' output, the builds and the servers' logs to RESULTS_DIR/raw/tls/.
#
# Needs h2load (Debian: nghttp2-client), wrk, curl and openssl; the .NET 10 SDK with clang and
# zlib1g-dev for the two NativeAOT builds, and nginx. Each round runs every server with every
# load once, a fresh start each time. Every process started here is stopped (TERM, then KILL)
# by its pid, also when the script is interrupted.
set -uo pipefail
export LC_ALL=C

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
HTTP_DIR=$BENCH_DIR/http
# shellcheck source=../procs.sh
. "$BENCH_DIR/procs.sh"
# shellcheck source=common.sh
. "$HTTP_DIR/common.sh"
REPO=$(cd "$BENCH_DIR/.." && pwd)
ROUNDS=2 DURATION=10 WORKERS=5 CONNECTIONS=64 STREAMS=10 THREADS=2
READY_TIMEOUT=30
RESULTS_DIR=${RESULTS_DIR:-$BENCH_DIR/results}
RAW=$RESULTS_DIR/raw/tls
ALL_SERVERS=(csharp-aot aspnet-aot nginx)
LOADS=(h2 https new)
DOTNET_BUILD_FLAGS=(-nodeReuse:false -p:UseSharedCompilation=false)

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'http/tls.sh: error: %s\n' "$*" >&2; exit 2; }

while getopts "r:d:w:c:m:t:h" opt; do
  case $opt in
    r) ROUNDS=$OPTARG ;;
    d) DURATION=$OPTARG ;;
    w) WORKERS=$OPTARG ;;
    c) CONNECTIONS=$OPTARG ;;
    m) STREAMS=$OPTARG ;;
    t) THREADS=$OPTARG ;;
    *) sed -n '2,29p' "$0"; exit 2 ;;
  esac
done
shift $((OPTIND - 1))
for v in ROUNDS DURATION WORKERS CONNECTIONS STREAMS THREADS; do
  [[ ${!v} =~ ^[0-9]+$ ]] && ((${!v} >= 1)) || die "$v must be a whole number of at least 1, not '${!v}'"
done
SERVERS=()
for s in "$@"; do
  [[ " ${ALL_SERVERS[*]} " == *" $s "* ]] || die "unknown server '$s' (known: ${ALL_SERVERS[*]})"
  [[ " ${SERVERS[*]} " == *" $s "* ]] || SERVERS+=("$s")
done
((${#SERVERS[@]})) || SERVERS=("${ALL_SERVERS[@]}")
for tool in h2load:nghttp2-client wrk:wrk curl:curl openssl:openssl; do
  command -v "${tool%%:*}" > /dev/null || die "${tool%%:*} is not installed (Debian: apt-get install ${tool#*:})"
done
selected() { [[ " ${SERVERS[*]} " == *" $1 "* ]]; }
if selected csharp-aot || selected aspnet-aot; then command -v dotnet > /dev/null || die "the .NET SDK (dotnet) is not installed"; fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
if selected nginx; then [[ -x $NGINX ]] || die "nginx is not installed (Debian: apt-get install nginx)"; fi

rm -rf "$RAW"
mkdir -p "$RAW/build"
CERT=$RAW/cert.pem KEY=$RAW/key.pem
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj /CN=localhost \
  -addext subjectAltName=IP:127.0.0.1 -days 2 -keyout "$KEY" -out "$CERT" 2> "$RAW/openssl.log" ||
  die "openssl could not make the certificate (log: $RAW/openssl.log)"

# publish NAME PROJECT: dotnet publish (NativeAOT) into RAW/build/NAME.
publish() {
  log "building $1"
  dotnet publish "$2" -c Release -r linux-x64 "${DOTNET_BUILD_FLAGS[@]}" -o "$RAW/build/$1" > "$RAW/build/$1.log" 2>&1 ||
    { tail -20 "$RAW/build/$1.log" >&2; die "the build of $1 failed (log: $RAW/build/$1.log)"; }
}
if selected csharp-aot; then
  { dotnet new install "$REPO/templates/prefork-server" --debug:custom-hive "$RAW/build/hive" &&
    dotnet new prefork-server -n BenchTls -o "$RAW/build/src" --handler http --aot --debug:custom-hive "$RAW/build/hive"
  } > "$RAW/build/template.log" 2>&1 || die "the template did not generate (log: $RAW/build/template.log)"
  publish csharp-aot "$RAW/build/src"
fi
selected aspnet-aot && publish aspnet-aot "$HTTP_DIR/aspnet-tls"

# ---------------------------------------------------------------------------
# Servers: start_server NAME LOG sets SERVER_PID and PORT and waits until GET / answers 200
# over TLS with every worker started.
# ---------------------------------------------------------------------------
SERVER_PID="" PORT=""

# nginx over TLS, HTTP/2 by ALPN (bench/http/common.sh).
start_nginx() { # LOG
  local listen
  PORT=$(free_port) || return 1
  # nginx 1.25.1 and later take `http2 on;`; before, `http2` on the listen line.
  if printf '%s\n' "1.25.1" "$("$NGINX" -v 2>&1 | grep -o '[0-9][0-9.]*')" | sort -V -C; then
    listen="listen 127.0.0.1:$PORT ssl; http2 on;"
  else
    listen="listen 127.0.0.1:$PORT ssl http2;"
  fi
  start_nginx_with "$1" "$listen
    ssl_certificate $CERT;
    ssl_certificate_key $KEY;
    ssl_protocols TLSv1.2 TLSv1.3;" "http2_max_requests 1000000000;"
}

start_server() { # NAME LOG
  local i want=$WORKERS have=0
  PORT=""
  case $1 in
    csharp-aot)
      "$RAW/build/csharp-aot/BenchTls" --host 127.0.0.1 --port 0 --workers "$WORKERS" \
        --certificate "$CERT" --certificate-key "$KEY" > /dev/null 2> "$2" &
      SERVER_PID=$! ;;
    aspnet-aot)
      CERT=$CERT KEY=$KEY "$RAW/build/aspnet-aot/AspNetTls" > "$2" 2>&1 &
      SERVER_PID=$! want=0 ;;
    nginx) start_nginx "$2" || return 1 ;;
  esac
  for ((i = 0; i < READY_TIMEOUT * 10; i++)); do
    alive "$SERVER_PID" || return 1
    [[ -n $PORT ]] || PORT=$(sed -n 's/.*listening on \(https:\/\/\)\{0,1\}127\.0\.0\.1:\([0-9]*\).*/\2/p' "$2" | head -1)
    if [[ -n $PORT && $(curl -sk --max-time 2 -o /dev/null -w '%{http_code}' "https://127.0.0.1:$PORT/" 2>/dev/null) == 200 ]]; then
      have=$(($(wc -w <<< "$(tree_pids "$SERVER_PID")") - 1))
      ((have >= want)) && return 0
    fi
    sleep 0.1
  done
  log "$1: not ready after $READY_TIMEOUT s (port ${PORT:-unknown}, $have worker processes; log: $2)"
  return 1
}

# free_port, start_nginx_with, stop_server and median: bench/http/common.sh
trap stop_server EXIT
trap 'log "interrupted"; exit 130' INT TERM

# ---------------------------------------------------------------------------
# Loads: run_load LOAD OUT sets RPS and ERRORS (empty if none) from the generator's output.
# ---------------------------------------------------------------------------
run_load() {
  local url="https://127.0.0.1:$PORT/"
  case $1 in
    h2)
      h2load -t "$THREADS" -c "$CONNECTIONS" -m "$STREAMS" -D "$DURATION" --warm-up-time 1 "$url" > "$2" 2>&1
      RPS=$(awk '/^finished in/ { gsub(/,/, "", $4); printf "%.0f", $4 }' "$2")
      ERRORS=$(awk '/^requests:/ { if ($10 + 0 || $12 + 0 || $14 + 0) print "failed " $10 ", errored " $12 ", timeout " $14 }
                    /^status codes:/ { n = $5 + $7 + $9; if (n) print "non-2xx " n }' "$2" | paste -sd ';' -) ;;
    https | new)
      local args=(-t "$THREADS" -c "$CONNECTIONS" -d "${DURATION}s")
      [[ $1 == new ]] && args+=(-H 'Connection: close')
      wrk "${args[@]}" "$url" > "$2" 2>&1
      RPS=$(awk '/^Requests\/sec:/ { printf "%.0f", $2 }' "$2")
      ERRORS=$(awk '/Socket errors:/ { gsub(/,/, ""); print "socket errors: connect " $4 ", read " $6 ", write " $8 ", timeout " $10 }
                    /Non-2xx/ { print "non-2xx: " $NF }' "$2" | paste -sd ';' -) ;;
  esac
}

RUNS_FILE=$RAW/runs.tsv # round server load rps errors
: > "$RUNS_FILE"
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg) # other work on the machine skews every figure: the report says how busy it was
for ((round = 1; round <= ROUNDS; round++)); do
  for server in "${SERVERS[@]}"; do
    for load in "${LOADS[@]}"; do
      out=$RAW/$server-$load-$round
      if ! start_server "$server" "$out.server.log"; then
        stop_server
        log "round $round/$ROUNDS: $server, $load: the server did not start (log: $out.server.log)"
        continue
      fi
      run_load "$load" "$out.txt"
      stop_server
      log "round $round/$ROUNDS: $server, $load: ${RPS:-no figure} requests/s${ERRORS:+, $ERRORS}"
      [[ -n $RPS ]] && printf '%s\t%s\t%s\t%s\t%s\n' "$round" "$server" "$load" "$RPS" "${ERRORS:-}" >> "$RUNS_FILE"
    done
  done
done

# ---------------------------------------------------------------------------
# The report: medians, and the generated server's and nginx's ratio to ASP.NET Core's.
# ---------------------------------------------------------------------------
figure() { awk -F'\t' -v s="$1" -v l="$2" '$2 == s && $3 == l { print $4 }' "$RUNS_FILE" | median; }
declare -A LABEL=([csharp-aot]="C# --handler http, NativeAOT, $WORKERS workers" [aspnet-aot]="ASP.NET Core, 1 process, NativeAOT"
  [nginx]="$("$NGINX" -v 2>&1 | sed 's/.*nginx\//nginx /'), $WORKERS workers")
REPORT=$RESULTS_DIR/tls.md
{
  echo "# HTTPS: the --handler http server against one ASP.NET Core process and nginx"
  echo
  echo "Written by \`bash bench/http/tls.sh -r $ROUNDS -d $DURATION -w $WORKERS -c $CONNECTIONS -m $STREAMS -t $THREADS ${SERVERS[*]}\` on $(date -u '+%Y-%m-%d %H:%M UTC')."
  echo "Machine: $(nproc) CPUs, Linux $(uname -r); $(h2load --version 2>&1 | head -1), wrk $(wrk --version 2>&1 | head -1 | awk '{ print $2 }'), $(openssl version | awk '{ print $1, $2 }')."
  echo "Load average (1, 5, 15 min) before the runs: $LOAD_BEFORE; after: $(cut -d' ' -f1-3 /proc/loadavg)."
  echo "TLS 1.3, ECDSA P-256. Requests/s, median of $ROUNDS rounds (each round's figure in brackets); × ASP.NET Core is the ratio to one ASP.NET Core process."
  echo
  echo "| server | h2load, HTTP/2, $CONNECTIONS conn × $STREAMS streams | × ASP.NET Core | wrk, HTTP/1.1 kept alive | × ASP.NET Core | wrk, new connection per request (handshakes/s) | × ASP.NET Core |"
  echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"
  for server in "${SERVERS[@]}"; do
    row="| ${LABEL[$server]} |"
    for load in "${LOADS[@]}"; do
      rps=$(figure "$server" "$load")
      base=$(figure aspnet-aot "$load")
      each=$(awk -F'\t' -v s="$server" -v l="$load" '$2 == s && $3 == l { print $4 }' "$RUNS_FILE" | paste -sd ' ' -)
      ratio=$([[ -n $rps && -n $base ]] && awk -v a="$rps" -v b="$base" 'BEGIN { printf "%.2f", a / b }')
      row+=" ${rps:-—} [${each}] | ${ratio:-—} |"
    done
    echo "$row"
  done
  echo
  errors=$(awk -F'\t' '$5 != "" { print "- round " $1 ", " $2 ", " $3 ": " $5 }' "$RUNS_FILE")
  if [[ -n $errors ]]; then echo "Errors counted by the load generators:"; echo; echo "$errors"
  else echo "The load generators counted no failed request, socket error or non-2xx answer."; fi
} > "$REPORT"
cat "$REPORT"
