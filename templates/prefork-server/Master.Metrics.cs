namespace PreforkServer;

using System;
using System.Collections.Generic;
using System.Diagnostics;
using System.Globalization;
using System.IO;
using System.Linq;
using System.Net;
using System.Text;
using System.Threading;
using System.Threading.Tasks;

/// <summary>
/// --metrics: what the master serves over HTTP (MetricsEndpoint.cs), every answer made by the
/// loop between two events: /metrics (the pool's figures, docs/metrics.md lists them),
/// /healthz, /readyz and /status (the table that `PROGRAM status` prints). The pool's counters
/// outlive the workers that counted them: the last counts of a worker that exits stay in the
/// totals, and a new master (USR2) takes over the totals of the old one on its standard input.
/// </summary>
internal sealed partial class Master
{
    private sealed record MetricsAsked(MetricsEndpoint.Question Question, TaskCompletionSource<MetricsEndpoint.Answer> Reply) : Event;
    private sealed record OldMasterSaid(string? Line) : Event;       // a new master: the old one's totals, or null at end-of-file

    /// <summary>Why workers exit, as the label of prefork_worker_exits_total.</summary>
    private static readonly string[] ExitReasons = ["crashed", "hung", "recycled", "hup", "stopped", "failed_start"];

    private const string TotalsWord = "totals";
    private const long MetricsRetryMs = 1000;

    private MetricsEndpoint? endpoint;
    private long metricsRetryAt = long.MaxValue;     // a new master: when to try to listen at --metrics again
    private Process? successor;                      // the new master (USR2) this one hands its totals to
    private readonly long masterStartedAt = Environment.TickCount64;
    private readonly List<(WorkerProcess Worker, long At)> recentlyReaped = []; // their last lines may come after their exit

    // The pool's totals, from workers that have exited (and from the masters before this one).
    private long acceptedBefore, droppedBefore, starts, readies;
    private readonly long[] exits = new long[ExitReasons.Length];
    private readonly RequestTotals requestsBefore = new();

    private bool PoolReady => poolReadyLogged && state == State.Running && !retiring && workers.Any(w => w.Ready && !w.Stopping);

    /// <summary>
    /// At start, listens at --metrics; false (logged) if it cannot. A new master (USR2) waits
    /// for the old one's totals, or its end: the old master listens there until it leaves.
    /// </summary>
    private bool StartMetrics()
    {
        if (settings.Metrics is null) return true;
        if (!upgraded) return ListenForMetrics(logFailure: true);
        new Thread(ReadOldMaster) { IsBackground = true, Name = "old master" }.Start();
        return true;
    }

    private bool ListenForMetrics(bool logFailure)
    {
        try
        {
            endpoint = new MetricsEndpoint(settings.Metrics!, question =>
            {
                var reply = new TaskCompletionSource<MetricsEndpoint.Answer>(TaskCreationOptions.RunContinuationsAsynchronously);
                events.Add(new MetricsAsked(question, reply));
                return reply.Task;
            });
            metricsRetryAt = long.MaxValue;
            Log.Info($"metrics at http://{settings.Metrics}/metrics (and /healthz, /readyz, /status)");
            return true;
        }
        catch (HttpListenerException e)
        {
            if (logFailure) Log.Info($"--metrics: cannot listen on {settings.Metrics}: {e.Message}");
            return false;
        }
    }

    /// <summary>A new master that could not listen yet (the old one was still leaving) tries again.</summary>
    private void ListenForMetricsWhenDue()
    {
        if (Environment.TickCount64 < metricsRetryAt) return;
        bool first = metricsRetryAt == 0;
        if (!ListenForMetrics(logFailure: first)) metricsRetryAt = Environment.TickCount64 + MetricsRetryMs;
    }

    /// <summary>A new master reads its standard input, where the old one writes its totals as it leaves.</summary>
    private void ReadOldMaster()
    {
        try
        {
            using var fromOld = new StreamReader(Console.OpenStandardInput());
            while (fromOld.ReadLine() is string line) events.Add(new OldMasterSaid(line));
        }
        catch (IOException) { }
        events.Add(new OldMasterSaid(null));
    }

    private void OnOldMasterSaid(string? line)
    {
        if (line is not null && TakeOverTotals(line)) Log.Info($"took over the old master's totals ({acceptedBefore} connections accepted)");
        if (endpoint is null && metricsRetryAt == long.MaxValue) metricsRetryAt = 0; // listen now
    }

    /// <summary>The loop is exiting: stop listening; an old master that retires hands its totals to the new one.</summary>
    private void StopMetrics()
    {
        endpoint?.Dispose();
        endpoint = null;
        if (successor is null) return;
        if (settings.Metrics is not null) ControlPipe.WriteLine(successor.StandardInput.BaseStream, Totals());
        successor.StandardInput.Dispose();
        successor.Dispose();
    }

    private void CountStart() => starts++;

    private void CountReady() => readies++;

    /// <summary>A worker was reaped: its last counts join the totals, and its exit is counted by reason.</summary>
    private void CountExit(WorkerProcess worker)
    {
        string reason = !worker.Ready ? "failed_start"
            : worker.KilledAsHung ? "hung"
            : worker.Stopping && worker.Generation < generation ? "hup"
            : worker.Retiring ? "recycled"
            : worker.Stopping || state != State.Running ? "stopped"
            : "crashed";
        exits[Array.IndexOf(ExitReasons, reason)]++;
        acceptedBefore += worker.Counts.Accepted;
        droppedBefore += worker.Figures.LogDropped;
        requestsBefore.Add(worker.Figures.Requests, 1);
        long now = Environment.TickCount64;
        recentlyReaped.RemoveAll(r => now - r.At > 5000);
        recentlyReaped.Add((worker, now));
    }

    /// <summary>A heartbeat or figures from a worker, alive or reaped a moment ago (its last lines).</summary>
    private void TakeCounts(WorkerProcess worker, string line)
    {
        if (ControlPipe.Heartbeat.TryParse(line, out ControlPipe.Heartbeat counts))
        {
            if (worker.Reaped) acceptedBefore += counts.Accepted - worker.Counts.Accepted;
            worker.Counts = counts;
        }
        else if (ControlPipe.Figures.TryParse(line, out ControlPipe.Figures figures))
        {
            if (worker.Reaped)
            {
                droppedBefore += figures.LogDropped - worker.Figures.LogDropped;
                requestsBefore.Add(worker.Figures.Requests, -1);
                requestsBefore.Add(figures.Requests, 1);
            }
            worker.Figures = figures;
        }
    }

    private WorkerProcess? RecentlyReaped(Process child) => recentlyReaped.Find(r => r.Worker.Is(child)).Worker;

    private MetricsEndpoint.Answer AnswerMetrics(MetricsEndpoint.Question question)
    {
        const string text = "text/plain; charset=utf-8";
        return question.Path switch
        {
            "/metrics" => question.OpenMetrics
                ? new(200, "application/openmetrics-text; version=1.0.0; charset=utf-8", Render(openMetrics: true))
                : new(200, "text/plain; version=0.0.4; charset=utf-8", Render(openMetrics: false)),
            "/healthz" => new(200, text, "ok\n"),
            "/readyz" => PoolReady ? new(200, text, "ready\n") : new(503, text, state == State.Running && !retiring ? "starting\n" : "stopping\n"),
            "/status" => new(200, text, Status()),
            _ => new(404, text, "not found: try /metrics, /healthz, /readyz or /status\n"),
        };
    }

    /// <summary>One worker per index: the one that serves it (during a HUP, not the one it replaces).</summary>
    private IEnumerable<WorkerProcess> OnePerIndex() => workers
        .GroupBy(w => w.Index)
        .Select(g => g.OrderBy(w => w.Stopping).ThenByDescending(w => w.StartedAt).First())
        .OrderBy(w => w.Index);

    private long AcceptedInAll => acceptedBefore + workers.Sum(w => w.Counts.Accepted);

    private (int Length, int Limit) ListenQueue => listenerReleased ? (-1, -1) : Posix.ListenQueue(int.Parse(listenFd, CultureInfo.InvariantCulture));

    /// <summary>/metrics: the Prometheus text format 0.0.4, or OpenMetrics 1.0.</summary>
    private string Render(bool openMetrics)
    {
        long now = Environment.TickCount64;
        var m = new MetricsText(openMetrics);
        m.Family("prefork_workers", "gauge", "Worker processes running");
        m.Sample("prefork_workers", workers.Count);
        m.Family("prefork_workers_desired", "gauge", "Worker processes the pool should have (--workers, TTIN, TTOU)");
        m.Sample("prefork_workers_desired", target);
        m.Family("prefork_ready", "gauge", "1 while the pool accepts and is not stopping (as /readyz)");
        m.Sample("prefork_ready", PoolReady ? 1 : 0);
        m.Family("prefork_connections_accepted_total", "counter", "Connections accepted by the pool since the first master started");
        m.Sample("prefork_connections_accepted_total", AcceptedInAll);
        m.Family("prefork_connections_in_flight", "gauge", "Connections the workers serve now");
        m.Sample("prefork_connections_in_flight", workers.Sum(w => w.Counts.InFlight));
        (int length, int limit) = ListenQueue;
        m.Family("prefork_listen_queue_length", "gauge", "Connections waiting in the listening socket's queue for a worker to accept them");
        if (length >= 0) m.Sample("prefork_listen_queue_length", length);
        m.Family("prefork_listen_queue_limit", "gauge", "The most connections the listening socket's queue holds (the backlog)");
        if (limit >= 0) m.Sample("prefork_listen_queue_limit", limit);
        m.Family("prefork_worker_starts_total", "counter", "Worker processes started");
        m.Sample("prefork_worker_starts_total", starts);
        m.Family("prefork_worker_ready_total", "counter", "Worker processes that became ready (accepting)");
        m.Sample("prefork_worker_ready_total", readies);
        m.Family("prefork_worker_exits_total", "counter", "Worker processes that exited, by reason");
        for (int i = 0; i < ExitReasons.Length; i++) m.Sample("prefork_worker_exits_total", exits[i], ("reason", ExitReasons[i]));
        m.Family("prefork_log_lines_dropped_total", "counter", "Log lines the master and the workers could not write");
        m.Sample("prefork_log_lines_dropped_total", droppedBefore + Log.Dropped + workers.Sum(w => w.Figures.LogDropped));

        List<WorkerProcess> each = [.. OnePerIndex()];
        m.Family("prefork_worker_connections_accepted_total", "counter", "Connections the worker of this index has accepted since it started");
        foreach (WorkerProcess w in each) m.Sample("prefork_worker_connections_accepted_total", w.Counts.Accepted, Label(w));
        m.Family("prefork_worker_connections_in_flight", "gauge", "Connections the worker of this index serves now");
        foreach (WorkerProcess w in each) m.Sample("prefork_worker_connections_in_flight", w.Counts.InFlight, Label(w));
        m.Family("prefork_worker_heartbeat_age_seconds", "gauge", "Seconds since the worker of this index last spoke to the master");
        foreach (WorkerProcess w in each) m.Sample("prefork_worker_heartbeat_age_seconds", Math.Max(0, now - w.LastHeartbeat) / 1000.0, Label(w));
        m.Family("prefork_worker_resident_memory_bytes", "gauge", "Resident memory of the worker of this index");
        foreach (WorkerProcess w in each)
            if (Posix.ResidentBytes(w.Pid) is >= 0 and long rss) m.Sample("prefork_worker_resident_memory_bytes", rss, Label(w));
        m.Family("prefork_worker_gc_collections_total", "counter", "Garbage collections (generation 0) of the worker of this index since it started");
        foreach (WorkerProcess w in each) m.Sample("prefork_worker_gc_collections_total", w.Counts.Collections, Label(w));
#if (httpHandler)

        // ASP.NET Core's own instruments, summed over the workers.
        var requests = new RequestTotals();
        requests.Add(requestsBefore);
        foreach (WorkerProcess w in workers) requests.Add(w.Figures.Requests, 1);
        m.Family("http_server_request_duration_seconds", "histogram", "Duration of HTTP server requests (ASP.NET Core's http.server.request.duration)");
        requests.Render(m, "http_server_request_duration_seconds");
        m.Family("kestrel_active_connections", "gauge", "Connections Kestrel serves now (kestrel.active_connections)");
        m.Sample("kestrel_active_connections", workers.Sum(w => w.Figures.HttpActive));
        m.Family("kestrel_queued_connections", "gauge", "Connections waiting for Kestrel to start them (kestrel.queued_connections)");
        m.Sample("kestrel_queued_connections", workers.Sum(w => w.Figures.HttpQueued));
#endif
        return m.ToString();
    }

    private static (string, string) Label(WorkerProcess w) => ("worker", w.Index.ToString(CultureInfo.InvariantCulture));

    /// <summary>/status: one line for the pool, one row per worker.</summary>
    private string Status()
    {
        long now = Environment.TickCount64;
        (int length, int limit) = ListenQueue;
        string poolState = PoolReady ? "ready" : state == State.Running && !retiring ? "starting" : "stopping";
        var text = new StringBuilder();
        text.Append(CultureInfo.InvariantCulture,
            $"pool {poolState}: {workers.Count} workers ({target} desired), {AcceptedInAll} connections accepted, {workers.Sum(w => w.Counts.InFlight)} in flight, " +
            $"listen queue {(length < 0 ? "-" : $"{length}/{limit}")}; master pid {Environment.ProcessId}, up {Seconds(now - masterStartedAt)}\n");
        text.Append(CultureInfo.InvariantCulture, $"{"WORKER",-7}{"PID",-9}{"AGE",-10}{"ACCEPTED",-11}{"IN FLIGHT",-11}{"RSS",-10}{"HEARTBEAT",-11}STATE\n");
        foreach (WorkerProcess w in workers.OrderBy(w => w.Index).ThenBy(w => w.StartedAt))
        {
            long rss = Posix.ResidentBytes(w.Pid);
            string workerState = w.Stopping ? "stopping" : !w.Ready ? "starting" : w.Retiring ? "retiring" : "serving";
            text.Append(CultureInfo.InvariantCulture,
                $"{w.Index,-7}{w.Pid,-9}{Seconds(now - w.StartedAt),-10}{w.Counts.Accepted,-11}{w.Counts.InFlight,-11}" +
                $"{(rss < 0 ? "-" : $"{rss / 1048576.0:0.0}M"),-10}{Seconds(Math.Max(0, now - w.LastHeartbeat)),-11}{workerState}\n");
        }
        return text.ToString();
    }

    private static string Seconds(long ms) => (ms / 1000.0).ToString("0.0", CultureInfo.InvariantCulture) + "s";

    /// <summary>The totals a new master takes over: one line, "totals ACCEPTED DROPPED STARTS READIES EXITS...", then the requests.</summary>
    private string Totals()
    {
        var requests = new RequestTotals();
        requests.Add(requestsBefore);
        foreach (WorkerProcess w in workers) requests.Add(w.Figures.Requests, 1);
        long[] counts = [AcceptedInAll, droppedBefore + Log.Dropped + workers.Sum(w => w.Figures.LogDropped), starts, readies, .. exits];
        return $"{TotalsWord} {string.Join(' ', counts.Select(c => c.ToString(CultureInfo.InvariantCulture)))}" +
               string.Concat(requests.Series().Select(r => "\t" + r));
    }

    private bool TakeOverTotals(string line)
    {
        string[] parts = line.Split('\t');
        string[] words = parts[0].Split(' ');
        if (words.Length != 5 + ExitReasons.Length || words[0] != TotalsWord) return false;
        var counts = new long[words.Length - 1];
        for (int i = 0; i < counts.Length; i++)
            if (!long.TryParse(words[i + 1], NumberStyles.None, CultureInfo.InvariantCulture, out counts[i])) return false;
        acceptedBefore += counts[0];
        droppedBefore += counts[1];
        starts += counts[2];
        readies += counts[3];
        for (int i = 0; i < ExitReasons.Length; i++) exits[i] += counts[4 + i];
        foreach (string part in parts.Skip(1))
            if (ControlPipe.RequestDurations.TryParse(part, out ControlPipe.RequestDurations? r)) requestsBefore.Add([r], 1);
        return true;
    }

    /// <summary>Requests (ControlPipe.RequestDurations) added up per method, status and route.</summary>
    private sealed class RequestTotals
    {
        private readonly Dictionary<(string Method, string Status, string Route), ControlPipe.RequestDurations> sums = [];

        public void Add(RequestTotals other) => Add(other.sums.Values, 1);

        public void Add(IEnumerable<ControlPipe.RequestDurations> series, int sign)
        {
            foreach (ControlPipe.RequestDurations r in series)
            {
                var key = (r.Method, r.Status, r.Route);
                long[] buckets = sums.TryGetValue(key, out var sum) ? [.. sum.Buckets] : new long[r.Buckets.Length];
                for (int i = 0; i < buckets.Length && i < r.Buckets.Length; i++) buckets[i] += sign * r.Buckets[i];
                sums[key] = r with { Count = (sum?.Count ?? 0) + sign * r.Count, Sum = (sum?.Sum ?? 0) + sign * r.Sum, Buckets = buckets };
            }
        }

        public IEnumerable<ControlPipe.RequestDurations> Series() => sums.Values;

        /// <summary>A Prometheus histogram: cumulative buckets, then the sum and the count, per method, status and route.</summary>
        public void Render(MetricsText m, string name)
        {
            foreach (ControlPipe.RequestDurations r in sums.Values.OrderBy(r => r.Route, StringComparer.Ordinal).ThenBy(r => r.Method, StringComparer.Ordinal).ThenBy(r => r.Status, StringComparer.Ordinal))
            {
                (string, string)[] labels = [("http_request_method", r.Method), ("http_response_status_code", r.Status), ("http_route", r.Route)];
                long cumulative = 0;
                for (int i = 0; i < r.Buckets.Length; i++)
                {
                    cumulative += r.Buckets[i];
                    string le = i < ControlPipe.RequestDurations.DurationBounds.Length
                        ? ControlPipe.RequestDurations.DurationBounds[i].ToString(CultureInfo.InvariantCulture) : "+Inf";
                    m.Sample(name + "_bucket", cumulative, [.. labels, ("le", le)]);
                }
                m.Sample(name + "_sum", r.Sum, labels);
                m.Sample(name + "_count", r.Count, labels);
            }
        }
    }

    /// <summary>
    /// Writes the text formats: Prometheus 0.0.4, or OpenMetrics 1.0 (a counter's family is named
    /// without its _total, and the text ends with # EOF).
    /// </summary>
    private sealed class MetricsText(bool openMetrics)
    {
        private readonly StringBuilder text = new();

        public void Family(string name, string type, string help)
        {
            string family = openMetrics && type == "counter" ? name[..^"_total".Length] : name;
            text.Append("# HELP ").Append(family).Append(' ').Append(help).Append('\n');
            text.Append("# TYPE ").Append(family).Append(' ').Append(type).Append('\n');
        }

        public void Sample(string name, double value, params (string Name, string Value)[] labels)
        {
            text.Append(name);
            if (labels.Length > 0)
            {
                text.Append('{');
                for (int i = 0; i < labels.Length; i++)
                {
                    if (i > 0) text.Append(',');
                    text.Append(labels[i].Name).Append("=\"")
                        .Append(labels[i].Value.Replace("\\", "\\\\").Replace("\"", "\\\"").Replace("\n", "\\n")).Append('"');
                }
                text.Append('}');
            }
            text.Append(' ').Append(value.ToString(CultureInfo.InvariantCulture)).Append('\n');
        }

        public override string ToString() => openMetrics ? text + "# EOF\n" : text.ToString();
    }
}
