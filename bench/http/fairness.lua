-- wrk script for bench/http/run.sh's fairness run: counts the responses per worker pid,
-- read from the body's last number ("Hello from 12345"), and prints one line
-- "pid PID COUNT" per pid at the end (a body without a number counts under "none").
-- Each wrk thread keeps its own table; done() adds them up.
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

counts = {}

function response(status, headers, body)
  local pid = body and body:match("(%d+)%s*$") or "none"
  counts[pid] = (counts[pid] or 0) + 1
end

function done(summary, latency, requests)
  local total = {}
  for _, thread in ipairs(threads) do
    for pid, n in pairs(thread:get("counts")) do
      total[pid] = (total[pid] or 0) + n
    end
  end
  for pid, n in pairs(total) do
    io.write(string.format("pid %s %d\n", pid, n))
  end
end
