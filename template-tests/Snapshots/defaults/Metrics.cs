namespace MyServer;

using System;
using System.Diagnostics.Metrics;

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

    /// <param name="accepted">The connections this worker has accepted so far.</param>
    /// <param name="inFlight">The connections it serves now.</param>
    /// <param name="sendsFigures">--metrics is on: gather what ASP.NET Core measures too.</param>
    public Metrics(Func<long> accepted, Func<int> inFlight, bool sendsFigures)
    {
        meter.CreateObservableCounter("prefork.connections.accepted", accepted, "{connection}", "Connections this worker has accepted");
        meter.CreateObservableUpDownCounter("prefork.connections.in_flight", inFlight, "{connection}", "Connections this worker serves now");
        meter.CreateObservableCounter("prefork.log.dropped", () => Log.Dropped, "{line}", "Log lines this worker could not write");
    }

    /// <summary>What the worker sends the master (ControlPipe.cs).</summary>
    public ControlPipe.Figures Figures() => ControlPipe.Figures.None with { LogDropped = Log.Dropped };
}
