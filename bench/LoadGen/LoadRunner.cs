using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Runtime.InteropServices;
using System.Text;
using HdrHistogram;

namespace LoadGen;

internal static class FailureKind
{
    public const int Refused = 0;       // ECONNREFUSED: nothing listening / SYN answered with RST
    public const int Reset = 1;         // ECONNRESET / ECONNABORTED / EPIPE from the peer
    public const int Timeout = 2;       // --timeout-ms exceeded (or kernel ETIMEDOUT)
    public const int ShortRead = 3;     // EOF before a complete line ending in '\n' (incl. empty reply)
    public const int NoLocalPort = 4;   // EADDRNOTAVAIL: the client ran out of ephemeral ports
    public const int Other = 5;
    public const int Count = 6;

    public static readonly string[] Names = ["refused", "reset", "timeout", "short_read", "no_local_port", "other"];

    public static int Classify(SocketError error) => error switch
    {
        SocketError.ConnectionRefused => Refused,
        SocketError.ConnectionReset or SocketError.ConnectionAborted or SocketError.Shutdown => Reset,
        SocketError.TimedOut => Timeout,
        SocketError.AddressNotAvailable or SocketError.AddressAlreadyInUse or SocketError.NoBufferSpaceAvailable
            => NoLocalPort,
        _ => Other,
    };
}

/// <summary>Per-client state: owned by one client loop, merged after the run.</summary>
internal sealed class ClientState
{
    public const int BufferSize = 512;

    public readonly byte[] Buffer = new byte[BufferSize];
    public readonly byte[] Scratch = new byte[BufferSize];

    /// <summary>
    /// Latencies of successful connections in ns. Two significant digits: exact below 256 ns, then
    /// 128 buckets per power of two, so a percentile is within 1/128 (0.8 %) of the true value.
    /// The largest value it holds, twice the largest --timeout-ms, is more than a successful
    /// connection can take. Min, max and sum are kept exactly beside it.
    /// </summary>
    public readonly LongHistogram Latency = NewHistogram();
    public long LatencyMinNs = long.MaxValue;
    public long LatencyMaxNs;
    public double LatencySumNs;
    public readonly Dictionary<int, long> PerPid = [];
    public readonly long[] Failures = new long[FailureKind.Count];
    public long NoPid;
    public string? SampleGreeting;
    public string? OtherErrorSample;

    // Read by the progress reporter on another thread.
    private long _completed;
    private long _failed;

    // Timeout watchdog: the socket in flight and when it started.
    private readonly Lock _gate = new();
    private Socket? _armed;
    private int _armedFd = -1;
    private long _armedAt;
    private bool _timedOut;

    public long Completed => Volatile.Read(ref _completed);
    public long FailedCount => Volatile.Read(ref _failed);

    public void Arm(Socket socket, long startTimestamp)
    {
        lock (_gate)
        {
            _armed = socket;
            _armedAt = startTimestamp;
            _timedOut = false;
        }
    }

    public void Arm(int fd, long startTimestamp)
    {
        lock (_gate)
        {
            _armedFd = fd;
            _armedAt = startTimestamp;
            _timedOut = false;
        }
    }

    /// <summary>Ends the watchdog's claim on the socket; true if the watchdog already killed it.</summary>
    public bool Disarm()
    {
        lock (_gate)
        {
            _armed = null;
            _armedFd = -1;
            return _timedOut;
        }
    }

    /// <summary>Called by the watchdog thread: closes the socket if it has been in flight too long.</summary>
    public void CheckTimeout(long now, long limitTicks)
    {
        lock (_gate)
        {
            if ((_armed is not null || _armedFd >= 0) && now - _armedAt > limitTicks)
            {
                _timedOut = true;
                _armed?.Dispose(); // aborts the pending connect/receive on the client's side
                if (_armedFd >= 0)
                {
                    RawSockets.Abort(_armedFd); // shutdown(): the client thread still owns and closes the fd
                }

                _armed = null;
                _armedFd = -1;
            }
        }
    }

    public void RecordFailure(int kind)
    {
        Failures[kind]++;
        Volatile.Write(ref _failed, _failed + 1);
        Volatile.Write(ref _completed, _completed + 1);
    }

    public static LongHistogram NewHistogram() => new(2L * RunOptions.MaxTimeoutMs * 1_000_000, 2);

    public void RecordSuccess(long latencyNs, int length)
    {
        latencyNs = Math.Clamp(latencyNs, 0, Latency.HighestTrackableValue);
        Latency.RecordValue(latencyNs);
        LatencyMinNs = Math.Min(LatencyMinNs, latencyNs);
        LatencyMaxNs = Math.Max(LatencyMaxNs, latencyNs);
        LatencySumNs += latencyNs;
        CountPid(Buffer.AsSpan(0, length));
        Volatile.Write(ref _completed, _completed + 1);
    }

    public void NoteOther(Exception e) => OtherErrorSample ??= $"{e.GetType().Name}: {e.Message}";

    private void CountPid(ReadOnlySpan<byte> reply)
    {
        int nl = reply.IndexOf((byte)'\n');
        ReadOnlySpan<byte> line = (nl >= 0 ? reply[..nl] : reply).TrimEnd(" \t\r"u8);
        SampleGreeting ??= Encoding.UTF8.GetString(line);
        int sp = line.LastIndexOfAny(" \t"u8);
        ReadOnlySpan<byte> token = sp >= 0 ? line[(sp + 1)..] : line;
        if (int.TryParse(token, NumberStyles.None, CultureInfo.InvariantCulture, out int pid))
        {
            CollectionsMarshal.GetValueRefOrAddDefault(PerPid, pid, out _)++;
        }
        else
        {
            NoPid++;
        }
    }
}

/// <summary>
/// Runs C closed-loop clients against the server: each connects, reads until EOF, closes,
/// and starts over, until the duration has passed or the connection budget is spent.
/// </summary>
internal sealed class LoadRunner
{
    private readonly RunOptions _options;
    private readonly IPEndPoint _endPoint;
    private readonly ClientState[] _clients;
    private readonly CountdownEvent _done;
    private readonly long _timeoutTicks;
    private readonly double _nsPerTick = 1e9 / Stopwatch.Frequency;
    private readonly byte[] _sockaddr;
    private readonly int _family;
    private readonly ManualResetEventSlim _go = new();  // opened once every client thread exists
    private long _remaining;
    private bool _stop;

    private LoadRunner(RunOptions options)
    {
        _options = options;
        _endPoint = new IPEndPoint(options.Host, options.Port);
        _clients = new ClientState[options.Concurrency];
        for (int i = 0; i < _clients.Length; i++)
        {
            _clients[i] = new ClientState();
        }

        _done = new CountdownEvent(options.Concurrency);
        _timeoutTicks = (long)(options.TimeoutMs / 1000.0 * Stopwatch.Frequency);
        _remaining = options.Count ?? long.MaxValue;
        _sockaddr = RawSockets.ToSockaddr(_endPoint);
        _family = RawSockets.Family(_endPoint);
    }

    public static LoadResult Run(RunOptions options) => new LoadRunner(options).Execute();

    private LoadResult Execute()
    {
        using var self = Process.GetCurrentProcess();
        TimeSpan userBefore = self.UserProcessorTime, systemBefore = self.PrivilegedProcessorTime;
        // The clock starts once every client exists: starting 1024 threads can take seconds on a
        // busy machine, and a run measured from the first would mix fewer clients into its figures.
        StartClients();
        string startedAt = DateTime.UtcNow.ToString("O", CultureInfo.InvariantCulture);
        long start = Stopwatch.GetTimestamp();
        _go.Set();
        var watchdog = new Thread(Watchdog) { IsBackground = true, Name = "timeout-watchdog" };
        watchdog.Start();

        double? duration = _options.DurationSeconds;
        bool stopRequested = false;
        double nextReport = 1;
        long lastCompleted = 0;
        double lastReportAt = 0;
        while (true)
        {
            double now = Stopwatch.GetElapsedTime(start).TotalSeconds;
            if (duration is double d && !stopRequested && now >= d)
            {
                Volatile.Write(ref _stop, true);
                stopRequested = true;
            }

            double nextEvent = nextReport;
            if (duration is double d2 && !stopRequested)
            {
                nextEvent = Math.Min(nextEvent, d2);
            }

            int waitMs = Math.Max(1, (int)Math.Ceiling((nextEvent - now) * 1000));
            if (_done.Wait(waitMs))
            {
                break;
            }

            now = Stopwatch.GetElapsedTime(start).TotalSeconds;
            if (now >= nextReport)
            {
                long completed = 0, failed = 0;
                foreach (ClientState c in _clients)
                {
                    completed += c.Completed;
                    failed += c.FailedCount;
                }

                if (!_options.Quiet)
                {
                    double rate = (completed - lastCompleted) / Math.Max(1e-9, now - lastReportAt);
                    Console.Error.WriteLine(string.Create(
                        CultureInfo.InvariantCulture,
                        $"[{now,6:F1} s] {completed,10} connections  {rate,9:F0} conn/s  failed {failed}"));
                }

                lastCompleted = completed;
                lastReportAt = now;
                nextReport = Math.Floor(now) + 1;
            }
        }

        double elapsed = Stopwatch.GetElapsedTime(start).TotalSeconds;
        self.Refresh();
        double user = (self.UserProcessorTime - userBefore).TotalSeconds;
        double system = (self.PrivilegedProcessorTime - systemBefore).TotalSeconds;
        watchdog.Join();
        return Summarize(startedAt, elapsed, user, system);
    }

    private void StartClients()
    {
        if (_options.Mode is ClientMode.Sync or ClientMode.Raw)
        {
            for (int i = 0; i < _clients.Length; i++)
            {
                ClientState c = _clients[i];
                Action loop = _options.Mode == ClientMode.Raw ? () => RawClient(c) : () => SyncClient(c);
                var t = new Thread(() =>
                {
                    _go.Wait();
                    loop();
                }, maxStackSize: 256 * 1024)
                {
                    IsBackground = true,
                    Name = $"client-{i}",
                };
                t.Start();
            }
        }
        else
        {
            foreach (ClientState c in _clients)
            {
                _ = Task.Run(() => AsyncClient(c)); // tasks, made at once: no gate needed
            }
        }
    }

    private bool TakeTicket() =>
        _options.Count is null ? !Volatile.Read(ref _stop) : Interlocked.Decrement(ref _remaining) >= 0;

    private void SyncClient(ClientState c)
    {
        try
        {
            byte[] buffer = c.Buffer;
            while (TakeTicket())
            {
                long t0 = Stopwatch.GetTimestamp();
                int kind = -1, length = 0;
                long total = 0;
                byte last = 0;
                Socket? socket = null;
                Exception? error = null;
                try
                {
                    socket = new Socket(_endPoint.AddressFamily, SocketType.Stream, ProtocolType.Tcp);
                    c.Arm(socket, t0);
                    socket.Connect(_endPoint);
                    while (true)
                    {
                        Span<byte> dst = length < buffer.Length ? buffer.AsSpan(length) : c.Scratch;
                        int n = socket.Receive(dst, SocketFlags.None);
                        if (n == 0)
                        {
                            break;
                        }

                        if (length < buffer.Length)
                        {
                            length += n;
                        }

                        total += n;
                        last = dst[n - 1];
                    }
                }
                catch (SocketException e)
                {
                    kind = FailureKind.Classify(e.SocketErrorCode);
                    error = e;
                }
                catch (Exception e)
                {
                    // ObjectDisposedException after a watchdog close lands here too (then it is a timeout).
                    kind = FailureKind.Other;
                    error = e;
                }

                Finish(c, t0, socket, kind, error, length, total, last);
            }
        }
        catch (Exception e)
        {
            c.NoteOther(e);
            c.RecordFailure(FailureKind.Other);
        }
        finally
        {
            _done.Signal();
        }
    }

    private void RawClient(ClientState c)
    {
        try
        {
            byte[] buffer = c.Buffer;
            while (TakeTicket())
            {
                long t0 = Stopwatch.GetTimestamp();
                int kind = -1, length = 0, errno = 0;
                long total = 0;
                byte last = 0;
                int fd = RawSockets.OpenStream(_family);
                if (fd < 0)
                {
                    errno = -fd;
                }
                else
                {
                    c.Arm(fd, t0);
                    errno = RawSockets.ConnectTo(fd, _sockaddr);
                    while (errno == 0)
                    {
                        Span<byte> dst = length < buffer.Length ? buffer.AsSpan(length) : c.Scratch;
                        int n = RawSockets.Receive(fd, dst);
                        if (n <= 0)
                        {
                            errno = -n;
                            break;
                        }

                        if (length < buffer.Length)
                        {
                            length += n;
                        }

                        total += n;
                        last = dst[n - 1];
                    }
                }

                long t1 = Stopwatch.GetTimestamp();
                bool timedOut = fd >= 0 && c.Disarm();
                if (fd >= 0)
                {
                    RawSockets.CloseFd(fd);
                }

                if (errno != 0)
                {
                    kind = RawSockets.Classify(errno);
                    if (kind == FailureKind.Other && !timedOut)
                    {
                        c.NoteOther(new IOException($"errno {errno}: {Marshal.GetPInvokeErrorMessage(errno)}"));
                    }
                }

                Complete(c, t0, t1, timedOut ? FailureKind.Timeout : kind, length, total, last);
            }
        }
        catch (Exception e)
        {
            c.NoteOther(e);
            c.RecordFailure(FailureKind.Other);
        }
        finally
        {
            _done.Signal();
        }
    }

    private async Task AsyncClient(ClientState c)
    {
        try
        {
            Memory<byte> buffer = c.Buffer;
            Memory<byte> scratch = c.Scratch;
            while (TakeTicket())
            {
                long t0 = Stopwatch.GetTimestamp();
                int kind = -1, length = 0;
                long total = 0;
                byte last = 0;
                Socket? socket = null;
                Exception? error = null;
                try
                {
                    socket = new Socket(_endPoint.AddressFamily, SocketType.Stream, ProtocolType.Tcp);
                    c.Arm(socket, t0);
                    await socket.ConnectAsync(_endPoint, CancellationToken.None).ConfigureAwait(false);
                    while (true)
                    {
                        Memory<byte> dst = length < buffer.Length ? buffer[length..] : scratch;
                        int n = await socket.ReceiveAsync(dst, SocketFlags.None, CancellationToken.None)
                            .ConfigureAwait(false);
                        if (n == 0)
                        {
                            break;
                        }

                        if (length < buffer.Length)
                        {
                            length += n;
                        }

                        total += n;
                        last = dst.Span[n - 1];
                    }
                }
                catch (SocketException e)
                {
                    kind = FailureKind.Classify(e.SocketErrorCode);
                    error = e;
                }
                catch (Exception e)
                {
                    // ObjectDisposedException after a watchdog close lands here too (then it is a timeout).
                    kind = FailureKind.Other;
                    error = e;
                }

                Finish(c, t0, socket, kind, error, length, total, last);
            }
        }
        catch (Exception e)
        {
            c.NoteOther(e);
            c.RecordFailure(FailureKind.Other);
        }
        finally
        {
            _done.Signal();
        }
    }

    /// <summary>The end of one connection, whichever client mode ran it: stop its watchdog, close it, record it.</summary>
    private void Finish(ClientState c, long t0, Socket? socket, int kind, Exception? error, int length, long total, byte last)
    {
        long t1 = Stopwatch.GetTimestamp();
        bool timedOut = c.Disarm();
        socket?.Dispose();
        if (!timedOut && kind == FailureKind.Other && error is not null)
        {
            c.NoteOther(error);
        }

        Complete(c, t0, t1, timedOut ? FailureKind.Timeout : kind, length, total, last);
    }

    private void Complete(ClientState c, long t0, long t1, int kind, int length, long total, byte last)
    {
        if (kind < 0 && (total == 0 || last != (byte)'\n'))
        {
            kind = FailureKind.ShortRead;
        }

        if (kind >= 0)
        {
            c.RecordFailure(kind);
        }
        else
        {
            c.RecordSuccess((long)((t1 - t0) * _nsPerTick), length);
        }
    }

    private void Watchdog()
    {
        int periodMs = Math.Clamp(_options.TimeoutMs / 20, 5, 100);
        while (!_done.Wait(periodMs))
        {
            long now = Stopwatch.GetTimestamp();
            foreach (ClientState c in _clients)
            {
                c.CheckTimeout(now, _timeoutTicks);
            }
        }
    }

    private LoadResult Summarize(string startedAt, double elapsed, double userCpu, double systemCpu)
    {
        double clientCpuSeconds = userCpu + systemCpu;
        LongHistogram latency = ClientState.NewHistogram();
        long minNs = long.MaxValue, maxNs = 0;
        double sumNs = 0;
        var perPid = new Dictionary<int, long>();
        var failures = new long[FailureKind.Count];
        long noPid = 0;
        string? sample = null, otherError = null;
        foreach (ClientState c in _clients)
        {
            latency.Add(c.Latency);
            minNs = Math.Min(minNs, c.LatencyMinNs);
            maxNs = Math.Max(maxNs, c.LatencyMaxNs);
            sumNs += c.LatencySumNs;
            foreach ((int pid, long count) in c.PerPid)
            {
                CollectionsMarshal.GetValueRefOrAddDefault(perPid, pid, out _) += count;
            }

            for (int k = 0; k < failures.Length; k++)
            {
                failures[k] += c.Failures[k];
            }

            noPid += c.NoPid;
            sample ??= c.SampleGreeting;
            otherError ??= c.OtherErrorSample;
        }

        long ok = latency.TotalCount;
        long failed = failures.Sum();
        var failureMap = new Dictionary<string, long>();
        for (int k = 0; k < failures.Length; k++)
        {
            failureMap[FailureKind.Names[k]] = failures[k];
        }

        List<PidCount> pids = [.. perPid.OrderBy(p => p.Key).Select(p => new PidCount { Pid = p.Key, Connections = p.Value })];
        int n = Math.Max(pids.Count, _options.ExpectedWorkers ?? 0);
        double? fairness = null;
        if (n > 0 && pids.Count > 0)
        {
            double sum = 0, sumSq = 0;
            foreach (PidCount p in pids)
            {
                sum += p.Connections;
                sumSq += (double)p.Connections * p.Connections;
            }

            fairness = sum * sum / (n * sumSq); // workers never seen add 0 to both sums
        }

        static double Us(long ns) => Math.Round(ns / 1000.0, 1);

        // HdrHistogram gives the upper edge of the percentile's bucket (never understated); capped by the true extremes.
        double Percentile(double percent) => ok == 0 ? 0 : Us(Math.Clamp(latency.GetValueAtPercentile(percent), minNs, maxNs));

        return new LoadResult
        {
            StartedAtUtc = startedAt,
            Host = _options.Host.ToString(),
            Port = _options.Port,
            Mode = _options.Mode.ToString().ToLowerInvariant(),
            Concurrency = _options.Concurrency,
            RequestedDurationSeconds = _options.DurationSeconds,
            RequestedCount = _options.Count,
            TimeoutMs = _options.TimeoutMs,
            ExpectedWorkers = _options.ExpectedWorkers,
            ElapsedSeconds = Math.Round(elapsed, 6),
            Connections = ok + failed,
            Ok = ok,
            Failed = failed,
            ConnectionsPerSecond = Math.Round(ok / elapsed, 1),
            Failures = failureMap,
            OtherErrorSample = otherError,
            LatencyUs = new LatencySummary
            {
                Min = ok == 0 ? 0 : Us(minNs),
                Mean = ok == 0 ? 0 : Math.Round(sumNs / ok / 1000.0, 1),
                P50 = Percentile(50),
                P90 = Percentile(90),
                P99 = Percentile(99),
                P999 = Percentile(99.9),
                Max = Us(maxNs),
            },
            PerPid = pids,
            NoPid = noPid,
            FairnessWorkers = n,
            Fairness = fairness is double f ? Math.Round(f, 5) : null,
            SampleGreeting = sample,
            ClientCpuSeconds = Math.Round(clientCpuSeconds, 3),
            ClientCpuUserSeconds = Math.Round(userCpu, 3),
            ClientCpuSystemSeconds = Math.Round(systemCpu, 3),
            ClientCpuUsPerConnection = ok + failed == 0 ? 0 : Math.Round(clientCpuSeconds * 1e6 / (ok + failed), 2),
        };
    }
}
