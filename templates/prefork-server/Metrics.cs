namespace PreforkServer;

using System;
#if (httpHandler)
using System.Collections.Generic;
#endif
using System.Diagnostics.Metrics;
#if (httpHandler)
using System.Linq;
using System.Threading;
#endif

/// <summary>
/// A worker's figures. Its instruments are in a System.Diagnostics.Metrics meter named after
/// this program, which `dotnet-counters monitor -p WORKER_PID` shows; they are read only when
/// something listens, so they cost nothing per connection. With --metrics, the worker also sends
/// <see cref="Figures"/> to the master once a second (Worker.cs), which serves the pool's sum.
/// </summary>
internal sealed class Metrics
{
    public static readonly string MeterName = typeof(Metrics).Assembly.GetName().Name!;

    private readonly Meter meter = new(MeterName);
#if (httpHandler)
    private readonly HttpMeters? http;
#endif

    /// <param name="accepted">The connections this worker has accepted so far.</param>
    /// <param name="inFlight">The connections it serves now.</param>
    /// <param name="sendsFigures">--metrics is on: gather what ASP.NET Core measures too.</param>
    public Metrics(Func<long> accepted, Func<int> inFlight, bool sendsFigures)
    {
        meter.CreateObservableCounter("prefork.connections.accepted", accepted, "{connection}", "Connections this worker has accepted");
        meter.CreateObservableUpDownCounter("prefork.connections.in_flight", inFlight, "{connection}", "Connections this worker serves now");
        meter.CreateObservableCounter("prefork.log.dropped", () => Log.Dropped, "{line}", "Log lines this worker could not write");
#if (httpHandler)
        if (sendsFigures) http = new HttpMeters();
#endif
    }

    /// <summary>What the worker sends the master (ControlPipe.cs).</summary>
#if (httpHandler)
    public ControlPipe.Figures Figures() => http?.Figures() ?? ControlPipe.Figures.None with { LogDropped = Log.Dropped };
#else
    public ControlPipe.Figures Figures() => ControlPipe.Figures.None with { LogDropped = Log.Dropped };
#endif
#if (httpHandler)

    /// <summary>
    /// ASP.NET Core's own instruments, added up in this worker: http.server.request.duration
    /// (a histogram per method, status and route) and Kestrel's active and queued connections.
    /// A listener enables them; each answered request then costs one lock and one lookup here.
    /// </summary>
    private sealed class HttpMeters
    {
        private readonly MeterListener listener = new();
        private readonly Lock gate = new();
        private readonly Dictionary<(string Method, string Status, string Route), (long Count, double Sum, long[] Buckets)> requests = [];
        private long active, queued;

        public HttpMeters()
        {
            listener.InstrumentPublished = (instrument, l) =>
            {
                if ((instrument.Meter.Name, instrument.Name) is ("Microsoft.AspNetCore.Hosting", "http.server.request.duration")
                    or ("Microsoft.AspNetCore.Server.Kestrel", "kestrel.active_connections" or "kestrel.queued_connections"))
                    l.EnableMeasurementEvents(instrument);
            };
            listener.SetMeasurementEventCallback<double>((_, seconds, tags, _) => Request(seconds, tags));
            listener.SetMeasurementEventCallback<long>((instrument, change, _, _) =>
            {
                if (instrument.Name == "kestrel.active_connections") Interlocked.Add(ref active, change);
                else Interlocked.Add(ref queued, change);
            });
            listener.Start();
        }

        private void Request(double seconds, ReadOnlySpan<KeyValuePair<string, object?>> tags)
        {
            string method = "", status = "", route = "";
            foreach (var (key, value) in tags)
            {
                switch (key)
                {
                    case "http.request.method": method = Word(value); break;
                    case "http.response.status_code": status = Word(value); break;
                    case "http.route": route = Settings.Printable(value?.ToString() ?? ""); break;
                }
            }
            int bucket = Array.FindIndex(ControlPipe.RequestDurations.DurationBounds, bound => seconds <= bound);
            lock (gate)
            {
                var key = (method, status, route);
                if (!requests.TryGetValue(key, out var series)) series = (0, 0, new long[ControlPipe.RequestDurations.DurationBounds.Length + 1]);
                series.Buckets[bucket < 0 ? series.Buckets.Length - 1 : bucket]++;
                requests[key] = (series.Count + 1, series.Sum + seconds, series.Buckets);
            }
        }

        // A method or status as one word on the pipe.
        private static string Word(object? value) => Settings.Printable(value?.ToString() ?? "").Replace(' ', '_');

        public ControlPipe.Figures Figures()
        {
            lock (gate)
            {
                return new ControlPipe.Figures(Log.Dropped, Interlocked.Read(ref active), Interlocked.Read(ref queued),
                    [.. requests.Select(r => new ControlPipe.RequestDurations(r.Key.Method, r.Key.Status, r.Key.Route, r.Value.Count, r.Value.Sum, [.. r.Value.Buckets]))]);
            }
        }
    }
#endif
}
