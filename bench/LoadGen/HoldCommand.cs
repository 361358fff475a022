using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Runtime.InteropServices;
using System.Text.Json;

namespace LoadGen;

/// <summary>
/// <c>LoadGen hold --port P --connections N [--host H] [--timeout-ms MS] [--json PATH]</c>:
/// opens N connections one after the other and sends nothing on them. Once every connect has
/// returned it prints <c>holding OPEN of N ...</c> on stdout, then holds the connections until
/// its stdin ends (EOF), checks again how many are still open (not closed or reset by the
/// server), closes them all and prints <c>released: ...</c>. bench/scale.sh measures the
/// server's memory in between. Exit code 0 when all N connected and were still open at the
/// end, 1 otherwise, 2 on bad usage.
/// </summary>
internal static class HoldCommand
{
    public const string Usage =
        "usage: LoadGen hold --port N --connections N [--host 127.0.0.1] [--timeout-ms 5000] [--json PATH]";

    private const int SpareFiles = 64;

    public static int Run(string[] args)
    {
        IPAddress host = IPAddress.Loopback;
        int? port = null;
        int? count = null;
        int timeoutMs = RunOptions.DefaultTimeoutMs;
        string? json = null;
        for (int i = 0; i < args.Length; i++)
        {
            string name = args[i];
            string Value() => i + 1 < args.Length ? args[++i] : throw new UsageException($"{name} needs a value");
            switch (name)
            {
                case "--host":
                    host = RunOptions.ParseLoopback(Value());
                    break;
                case "--port":
                    port = Int(name, Value(), 1, 65535);
                    break;
                case "--connections":
                    count = Int(name, Value(), 1, 1_000_000);
                    break;
                case "--timeout-ms":
                    timeoutMs = Int(name, Value(), 1, 3_600_000);
                    break;
                case "--json":
                    json = Value();
                    break;
                case "-h" or "--help":
                    Console.WriteLine(Usage);
                    return 0;
                default:
                    throw new UsageException($"hold: unknown argument '{name}'");
            }
        }

        if (port is null || count is null)
        {
            throw new UsageException(Usage);
        }

        if (RawSockets.Probe() is string problem)
        {
            throw new UsageException($"hold needs libc sockets: {problem}");
        }

        long fileLimit = RawSockets.RaiseFileLimit();
        if (fileLimit - SpareFiles < count)
        {
            throw new UsageException(string.Create(CultureInfo.InvariantCulture,
                $"hold: {count} connections need {count + SpareFiles} descriptors, and the limit is {fileLimit} (ulimit -n; its hard limit too)"));
        }

        if (json is not null)
        {
            using FileStream probe = File.Open(json, FileMode.Create, FileAccess.Write);
        }

        HoldResult result = Hold(new IPEndPoint(host, port.Value), count.Value, timeoutMs, fileLimit);
        if (json is not null)
        {
            File.WriteAllText(json, JsonSerializer.Serialize(result, ScaleJsonContext.Default.HoldResult) + "\n");
        }

        return result.Connected == result.Requested && result.OpenAtRelease == result.Requested ? 0 : 1;
    }

    private static HoldResult Hold(IPEndPoint endPoint, int count, int timeoutMs, long fileLimit)
    {
        CultureInfo ci = CultureInfo.InvariantCulture;
        byte[] sockaddr = RawSockets.ToSockaddr(endPoint);
        int family = RawSockets.Family(endPoint);
        var fds = new List<int>(count);
        var failures = new long[FailureKind.Count];
        string? otherError = null;
        long start = Stopwatch.GetTimestamp();
        for (int i = 0; i < count; i++)
        {
            int fd = RawSockets.OpenStream(family);
            int errno = fd < 0 ? -fd : 0;
            if (fd >= 0)
            {
                RawSockets.SetConnectTimeout(fd, timeoutMs);
                errno = RawSockets.ConnectTo(fd, sockaddr);
                if (errno == 0)
                {
                    fds.Add(fd);
                    continue;
                }

                RawSockets.CloseFd(fd);
            }

            int kind = errno == RawSockets.EInProgress ? FailureKind.Timeout : RawSockets.Classify(errno);
            failures[kind]++;
            if (kind == FailureKind.Other)
            {
                otherError ??= $"errno {errno}: {Marshal.GetPInvokeErrorMessage(errno)}";
            }
        }

        double connectSeconds = Stopwatch.GetElapsedTime(start).TotalSeconds;
        long openAfterConnect = fds.Count(RawSockets.IsOpen);
        var result = new HoldResult
        {
            Host = endPoint.Address.ToString(),
            Port = endPoint.Port,
            Requested = count,
            Connected = fds.Count,
            Failed = failures.Sum(),
            Failures = FailureKind.Names.Select((n, k) => (n, k)).ToDictionary(x => x.n, x => failures[x.k]),
            OtherErrorSample = otherError,
            ConnectSeconds = Math.Round(connectSeconds, 3),
            OpenAfterConnect = openAfterConnect,
            FileLimit = fileLimit,
        };
        string kinds = string.Join(", ", result.Failures.Where(kv => kv.Value > 0).Select(kv => $"{kv.Key} {kv.Value}"));
        Console.WriteLine(string.Create(ci,
            $"holding {openAfterConnect} of {count} connections to {endPoint} (connected {fds.Count}, failed {result.Failed}{(kinds.Length > 0 ? ": " + kinds : "")}{(otherError is null ? "" : "; " + otherError)}) after {connectSeconds:F3} s; close stdin to release them"));
        Console.Out.Flush();

        long held = Stopwatch.GetTimestamp();
        while (Console.In.ReadLine() is not null)
        {
            // Anything on stdin is ignored: only its end releases the connections.
        }

        result.HeldSeconds = Math.Round(Stopwatch.GetElapsedTime(held).TotalSeconds, 3);
        result.OpenAtRelease = fds.Count(RawSockets.IsOpen);
        foreach (int fd in fds)
        {
            RawSockets.CloseFd(fd);
        }

        Console.WriteLine(string.Create(ci,
            $"released: {result.OpenAtRelease} of {fds.Count} connections were still open after {result.HeldSeconds:F1} s"));
        return result;
    }

    private static int Int(string name, string text, int min, int max) =>
        int.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out int v) && v >= min && v <= max
            ? v
            : throw new UsageException(string.Create(CultureInfo.InvariantCulture, $"{name}: '{text}' is not an integer in [{min}, {max}]"));
}
