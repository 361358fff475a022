using System.Diagnostics;

namespace PreforkTemplates.Tests.Infrastructure;

/// <summary>
/// What every load generator here shares: a clock started with it, its failures by kind
/// (<see cref="FailureLog"/>), and its client threads, started by <see cref="Start"/> once the
/// load is set up, each running <see cref="Run"/> until the load is disposed.
/// </summary>
public abstract class LoadBase : IDisposable
{
    public const string Refused = FailureLog.Refused, Reset = FailureLog.Reset, Empty = FailureLog.Empty, Short = FailureLog.Short, Timeout = FailureLog.Timeout;

    protected readonly Stopwatch clock = Stopwatch.StartNew();
    protected readonly FailureLog failures;
    private Thread[] threads = [];
    private volatile bool stop;

    protected LoadBase() => failures = new FailureLog(clock);

    /// <summary>True once the load is disposed: every client's loop ends on it.</summary>
    protected bool Stopping => stop;

    public IReadOnlyList<Failure> Failures => failures.All;

    /// <summary>The time on the load's clock, the one failures are recorded on.</summary>
    public TimeSpan Now => clock.Elapsed;

    /// <summary>Starts <paramref name="clients"/> background threads named "<paramref name="name"/> N", each running <see cref="Run"/>(N).</summary>
    protected void Start(int clients, string name)
    {
        threads = [.. Enumerable.Range(0, clients).Select(i => new Thread(() => Run(i)) { IsBackground = true, Name = $"{name} {i}" })];
        foreach (Thread thread in threads) thread.Start();
    }

    /// <summary>One client, over and over until <see cref="Stopping"/>.</summary>
    protected abstract void Run(int client);

    public void Dispose()
    {
        stop = true;
        foreach (Thread thread in threads) thread.Join(TimeSpan.FromSeconds(15));
    }
}
