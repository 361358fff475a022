using System.Collections.Concurrent;
using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Text;

namespace PreforkTemplates.Tests.Infrastructure;

/// <summary>
/// A load generator for tests: <c>clients</c> threads, each connect → read to the server's
/// close → check the greeting, over and over, so that many connections are open at all
/// times. Every failed connection is counted with its time, by the kinds of <see cref="FailureLog"/>:
/// <c>refused</c> (the connect was refused), <c>reset</c> (connected, then reset before any
/// data), <c>empty</c> (connected, then closed with no data), <c>short</c> (closed in the middle
/// of the greeting), <c>timeout</c> (no answer within 10 s), or the socket error for anything else.
/// It stops when disposed, or after <c>limit</c> at the latest.
/// </summary>
public sealed class Load : LoadBase
{
    private readonly int port;
    private readonly TimeSpan limit;
    private readonly ConcurrentDictionary<int, int> perPid = new();
    private readonly ConcurrentQueue<(TimeSpan At, int Pid)> successes = new();
    private long attempted;

    public Load(int port, int clients = 16, TimeSpan? limit = null)
    {
        this.port = port;
        this.limit = limit ?? TimeSpan.FromSeconds(60);
        Start(clients, "load");
    }

    public long Attempted => Interlocked.Read(ref attempted);
    public int Succeeded => successes.Count;
    public IReadOnlyDictionary<int, int> PerPid => perPid;

    /// <summary>Pids that answered at or after <paramref name="since"/>.</summary>
    public IReadOnlySet<int> PidsSince(TimeSpan since) => successes.Where(s => s.At >= since).Select(s => s.Pid).ToHashSet();

    /// <summary>The longest time between two successful answers: the worst gap in service.</summary>
    public TimeSpan LongestGap()
    {
        var times = successes.Select(s => s.At).Order().ToList();
        return times.Count < 2 ? TimeSpan.Zero : times.Zip(times.Skip(1), (a, b) => b - a).Max();
    }

    /// <summary>Waits until at least <paramref name="count"/> more connections have succeeded.</summary>
    public void WaitForSuccesses(int count, TimeSpan? timeout = null)
    {
        int target = successes.Count + count;
        if (!Proc.WaitUntil(() => successes.Count >= target, timeout ?? TimeSpan.FromSeconds(20)))
            throw new TimeoutException($"the load did not reach {count} more answers; failures: {Summary()}");
    }

    /// <summary>The failures of one kind.</summary>
    public IReadOnlyList<Failure> Of(string kind) => failures.Of(kind);

    /// <summary>Attempted, succeeded, failed by kind (every kind named, 0 included), the longest gap, and the first failures.</summary>
    public string Summary() =>
        failures.Summary($"{Attempted} attempted, {Succeeded} answered, failed", $"; longest gap {LongestGap().TotalMilliseconds:0} ms");

    protected override void Run(int client)
    {
        var buffer = new byte[1024];
        while (!Stopping && clock.Elapsed < limit)
        {
            Interlocked.Increment(ref attempted);
            using var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
            socket.ReceiveTimeout = 10_000;
            string stage = "connect";
            try
            {
                socket.Connect(IPAddress.Loopback, port);
                stage = "read";
                int length = 0, n;
                while ((n = socket.Receive(buffer, length, buffer.Length - length, SocketFlags.None)) > 0) length += n;
                string text = Encoding.UTF8.GetString(buffer, 0, length);
                if (!text.EndsWith('\n') || !int.TryParse(text.TrimEnd('\n').Split(' ')[^1], NumberStyles.None, CultureInfo.InvariantCulture, out int pid))
                {
                    failures.Add(length == 0 ? Empty : Short, $"'{text}'");
                    continue;
                }
                perPid.AddOrUpdate(pid, 1, (_, c) => c + 1);
                successes.Enqueue((clock.Elapsed, pid));
            }
            catch (SocketException e)
            {
                string kind = (stage, e.SocketErrorCode) switch
                {
                    ("connect", SocketError.ConnectionRefused) => Refused,
                    ("read", SocketError.ConnectionReset) => Reset,
                    (_, SocketError.TimedOut) => Timeout,
                    _ => $"{stage}: {e.SocketErrorCode}",
                };
                failures.Add(kind, e.Message);
                if (kind == Refused) Thread.Sleep(10); // nobody listens: do not spin
            }
        }
    }
}
