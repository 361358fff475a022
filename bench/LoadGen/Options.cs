using System.Globalization;
using System.Net;

namespace LoadGen;

/// <summary>Bad command line: reported on stderr, exit code 2.</summary>
internal sealed class UsageException(string message) : Exception(message);

internal enum ClientMode
{
    /// <summary>Async sockets: C connection loops multiplexed on the thread pool via epoll.</summary>
    Async,

    /// <summary>One OS thread per client, blocking connect()/recv() through System.Net.Sockets.Socket.</summary>
    Sync,

    /// <summary>One OS thread per client, blocking socket()/connect()/recv()/close() called directly in libc (Linux).</summary>
    Raw,
}

internal sealed class RunOptions
{
    public const int DefaultConcurrency = 64;
    public const double DefaultDurationSeconds = 10;
    public const int DefaultTimeoutMs = 5000;
    public const int MaxTimeoutMs = 3_600_000;

    public required IPAddress Host { get; init; }
    public required int Port { get; init; }
    public int Concurrency { get; init; } = DefaultConcurrency;

    /// <summary>Run for this long (seconds); null when <see cref="Count"/> is used.</summary>
    public double? DurationSeconds { get; init; }

    /// <summary>Total number of connections to make; null when running for a duration.</summary>
    public long? Count { get; init; }

    public int TimeoutMs { get; init; } = DefaultTimeoutMs;
    public string? JsonPath { get; init; }
    public bool Quiet { get; init; }
    public ClientMode Mode { get; set; } = ClientMode.Raw;

    /// <summary>True when --mode was given (no silent fallback from raw then).</summary>
    public bool ModeExplicit { get; init; }

    /// <summary>Number of workers the server should have; workers never seen count as 0 in fairness.</summary>
    public int? ExpectedWorkers { get; init; }

    public static string Usage =>
        """
        LoadGen - closed-loop load generator for the one-line greeting protocol
                  (connect -> read "Hello from <pid>\n" until EOF -> close).

        usage: LoadGen [run] --port N [options]
               LoadGen report --out DIR [--baseline NAME] SERVERDIR...   (used by bench/run.sh)

          --host ADDR          loopback address to connect to (127.0.0.0/8, ::1 or
                               'localhost'); anything else is refused. Default 127.0.0.1
          --port N             server port (required)
          --concurrency C      concurrent clients, each in a closed loop (default 64)
          --duration SECONDS   run for this long (default 10) ...
          --count N            ... or make exactly N connections in total
          --timeout-ms MS      per-connection limit, connect start to EOF (default 5000)
          --workers N          expected number of server workers: workers that never
                               answered count as 0 in the fairness index
          --mode raw|sync|async
                               raw:   one thread per client, blocking socket()/connect()/
                                      recv()/close() called directly in libc (default on
                                      Linux; the fastest, see bench/README.md)
                               sync:  one thread per client, blocking System.Net.Sockets
                               async: async System.Net.Sockets on the thread pool
          --json PATH          also write all figures as JSON to PATH
          --quiet              no progress lines on stderr
          -h, --help           this text

        exit code: 0 all connections succeeded, 1 some failed, 2 bad usage
        """;

    public static RunOptions Parse(IReadOnlyList<string> args)
    {
        IPAddress host = IPAddress.Loopback;
        int? port = null;
        int concurrency = DefaultConcurrency;
        double? duration = null;
        long? count = null;
        int timeoutMs = DefaultTimeoutMs;
        string? json = null;
        bool quiet = false;
        ClientMode mode = RawSockets.IsSupported ? ClientMode.Raw : ClientMode.Sync;
        bool modeExplicit = false;
        int? workers = null;

        for (int i = 0; i < args.Count; i++)
        {
            string arg = args[i];
            string? inlineValue = null;
            int eq = arg.IndexOf('=');
            if (arg.StartsWith("--", StringComparison.Ordinal) && eq > 0)
            {
                inlineValue = arg[(eq + 1)..];
                arg = arg[..eq];
            }

            string Value()
            {
                if (inlineValue is not null)
                {
                    return inlineValue;
                }

                if (i + 1 >= args.Count)
                {
                    throw new UsageException($"{arg} needs a value");
                }

                return args[++i];
            }

            switch (arg)
            {
                case "--host":
                    host = ParseLoopback(Value());
                    break;
                case "--port":
                    port = ParseInt(arg, Value(), 1, 65535);
                    break;
                case "--concurrency":
                case "-c":
                    concurrency = ParseInt(arg, Value(), 1, 10_000);
                    break;
                case "--duration":
                case "-d":
                    string d = Value();
                    if (!double.TryParse(d, NumberStyles.Float, CultureInfo.InvariantCulture, out double secs)
                        || !double.IsFinite(secs) || secs <= 0 || secs > 86_400)
                    {
                        throw new UsageException($"--duration: '{d}' is not a number of seconds in (0, 86400]");
                    }

                    duration = secs;
                    break;
                case "--count":
                case "-n":
                    count = ParseLong(arg, Value(), 1, long.MaxValue / 2);
                    break;
                case "--timeout-ms":
                    timeoutMs = ParseInt(arg, Value(), 1, MaxTimeoutMs);
                    break;
                case "--workers":
                    workers = ParseInt(arg, Value(), 1, 100_000);
                    break;
                case "--mode":
                    string m = Value();
                    modeExplicit = true;
                    mode = m switch
                    {
                        "sync" => ClientMode.Sync,
                        "async" => ClientMode.Async,
                        "raw" => ClientMode.Raw,
                        _ => throw new UsageException($"--mode: '{m}' is not one of raw, sync, async"),
                    };
                    break;
                case "--json":
                    json = Value();
                    if (json.Length == 0)
                    {
                        throw new UsageException("--json needs a file path");
                    }

                    break;
                case "--quiet":
                case "-q":
                    if (inlineValue is not null)
                    {
                        throw new UsageException("--quiet takes no value");
                    }

                    quiet = true;
                    break;
                default:
                    throw new UsageException($"unknown argument '{args[i]}'");
            }
        }

        if (port is null)
        {
            throw new UsageException("--port is required");
        }

        if (duration is not null && count is not null)
        {
            throw new UsageException("give either --duration or --count, not both");
        }

        if (duration is null && count is null)
        {
            duration = DefaultDurationSeconds;
        }

        return new RunOptions
        {
            Host = host,
            Port = port.Value,
            Concurrency = concurrency,
            DurationSeconds = duration,
            Count = count,
            TimeoutMs = timeoutMs,
            JsonPath = json,
            Quiet = quiet,
            Mode = mode,
            ModeExplicit = modeExplicit,
            ExpectedWorkers = workers,
        };
    }

    /// <summary>Only loopback targets are allowed: this tool must never load another machine.</summary>
    public static IPAddress ParseLoopback(string text)
    {
        if (string.Equals(text, "localhost", StringComparison.OrdinalIgnoreCase))
        {
            return IPAddress.Loopback; // no DNS lookup on purpose
        }

        string literal = text.StartsWith('[') && text.EndsWith(']') ? text[1..^1] : text;
        if (!IPAddress.TryParse(literal, out IPAddress? address))
        {
            throw new UsageException(
                $"--host '{text}' is not an IP address; only loopback addresses (127.0.0.0/8, ::1) are allowed");
        }

        if (address.IsIPv4MappedToIPv6)
        {
            address = address.MapToIPv4();
        }

        if (!IPAddress.IsLoopback(address))
        {
            throw new UsageException(
                $"--host {address} is not a loopback address: refusing to generate load against it " +
                "(only 127.0.0.0/8 and ::1 are allowed)");
        }

        return address;
    }

    private static int ParseInt(string name, string text, int min, int max) =>
        (int)ParseLong(name, text, min, max);

    private static long ParseLong(string name, string text, long min, long max)
    {
        if (!long.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out long v) || v < min || v > max)
        {
            throw new UsageException($"{name}: '{text}' is not an integer in [{min}, {max}]");
        }

        return v;
    }
}
