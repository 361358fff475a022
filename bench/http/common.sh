# Helpers shared by bench/http/run.sh and bench/http/tls.sh (sourced, not run). They use the
# caller's log function and SERVER_PID, and alive and tree_pids from bench/procs.sh.

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
