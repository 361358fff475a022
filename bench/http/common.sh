# Helpers shared by bench/http/run.sh and bench/http/tls.sh (sourced, not run). They use the
# caller's log function, SERVER_PID, RAW, NGINX and WORKERS, and alive and tree_pids from
# bench/procs.sh.

# A port nobody listens on, for the servers that cannot report a port the kernel chose.
# 20000-29999 is below Linux's ephemeral range (32768-60999), so wrk's own connections,
# and what is left of them in TIME_WAIT, never hold one. 100 tries at most.
free_port() {
  local port i
  for ((i = 0; i < 100; i++)); do
    port=$((20000 + RANDOM % 10000))
    ss -Htan "sport = :$port" | grep -q . || { echo "$port"; return 0; }
  done
  return 1
}

# TERM to the master (a graceful stop for each of these servers); up to 10 s for it and its
# process tree to end, then KILL for whatever is left of that tree.
stop_server() {
  [[ -n $SERVER_PID ]] || return 0
  local tree i p left
  tree=$(tree_pids "$SERVER_PID")
  kill -TERM "$SERVER_PID" 2>/dev/null
  for ((i = 0; i < 100; i++)); do
    left=""
    for p in $tree; do alive "$p" && left+="$p "; done
    [[ -z $left ]] && break
    sleep 0.1
  done
  for p in $left; do
    log "pid $p still alive 10 s after TERM to $SERVER_PID: KILL"
    kill -KILL "$p" 2>/dev/null
  done
  wait "$SERVER_PID" 2>/dev/null
  SERVER_PID=""
}

# median of the numbers on stdin (empty input: no output).
median() {
  sort -n | awk 'NF { v[++n] = $1 }
    END { if (!n) exit; if (n % 2) print v[(n + 1) / 2]; else printf "%.0f\n", (v[n / 2] + v[n / 2 + 1]) / 2 }'
}

# start_nginx_with LOG SERVER [HTTP]: starts nginx (NGINX) with WORKERS worker processes on a
# configuration written to RAW/nginx/nginx.conf: logging off, no limit on requests per
# connection (nginx's default closes a connection after 1000: the C# server never does),
# temporary files below RAW/nginx/tmp, the lines HTTP in its http block and one server block
# of the lines SERVER that answers GET / with "Hello from $pid\n" ($pid is the worker's, so
# the body is the C# server's). Sets SERVER_PID.
start_nginx_with() {
  local dir=$RAW/nginx
  mkdir -p "$dir/tmp"
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
  ${3:-}
  server {
    $2
    location / { return 200 "Hello from \$pid\n"; }
  }
}
EOF
  "$NGINX" -p "$dir" -c "$dir/nginx.conf" -g 'daemon off;' > "$1" 2>&1 &
  SERVER_PID=$!
}
