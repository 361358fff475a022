using System.Globalization;
using System.Text;

namespace LoadGen;

/// <summary>The human-readable result table printed on stdout.</summary>
internal static class TextReport
{
    private const int BarWidth = 40;
    private static readonly string[] Eighths = ["", "▏", "▎", "▍", "▌", "▋", "▊", "▉"];

    public static void Print(LoadResult r, TextWriter w)
    {
        CultureInfo ci = CultureInfo.InvariantCulture;
        string run = r.RequestedCount is long n
            ? string.Create(ci, $"{n} connections")
            : string.Create(ci, $"{r.RequestedDurationSeconds:0.###} s");
        string target = r.Host.Contains(':') ? $"[{r.Host}]:{r.Port}" : $"{r.Host}:{r.Port}";
        var sb = new StringBuilder();
        sb.AppendLine(ci, $"target              {target}   ({r.Mode} client, concurrency {r.Concurrency}, {run}, timeout {r.TimeoutMs} ms)");
        sb.AppendLine(ci, $"elapsed             {r.ElapsedSeconds:F3} s");
        sb.AppendLine(ci, $"connections         {r.Connections}   (ok {r.Ok}, failed {r.Failed})");
        sb.AppendLine(ci, $"throughput          {r.ConnectionsPerSecond:F1} successful conn/s");
        string kinds = string.Join(", ", r.Failures.Select(kv => $"{kv.Key} {kv.Value}"));
        sb.AppendLine(ci, $"failed              {r.Failed}   ({kinds})");
        if (r.OtherErrorSample is not null)
        {
            sb.AppendLine(ci, $"  first other error {r.OtherErrorSample}");
        }

        LatencySummary l = r.LatencyUs;
        sb.AppendLine(ci, $"latency (µs)        p50 {l.P50:F1}   p90 {l.P90:F1}   p99 {l.P99:F1}   p99.9 {l.P999:F1}   max {l.Max:F1}   (mean {l.Mean:F1}, min {l.Min:F1})");
        sb.AppendLine("                    successful connections only, connect() start to EOF");
        sb.AppendLine(ci, $"LoadGen CPU         {r.ClientCpuSeconds:F2} s = user {r.ClientCpuUserSeconds:F2} s + system {r.ClientCpuSystemSeconds:F2} s   ({r.ClientCpuUsPerConnection:F1} µs per connection)");
        if (r.SampleGreeting is not null)
        {
            sb.AppendLine(ci, $"sample greeting     \"{r.SampleGreeting}\"");
        }

        sb.AppendLine();
        sb.AppendLine(ci, $"connections per worker pid ({r.PerPid.Count} pids seen{(r.ExpectedWorkers is int ew ? string.Create(ci, $", {ew} expected") : "")}):");
        long max = r.PerPid.Count == 0 ? 0 : r.PerPid.Max(p => p.Connections);
        foreach (PidCount p in r.PerPid)
        {
            double share = r.Ok == 0 ? 0 : 100.0 * p.Connections / r.Ok;
            sb.AppendLine(ci, $"  pid {p.Pid,-8} {p.Connections,10}  {share,5:F1}%  {Bar(p.Connections, max)}");
        }

        if (r.NoPid > 0)
        {
            sb.AppendLine(ci, $"  (no pid)     {r.NoPid,10}  greetings without a trailing integer");
        }

        string fairness = r.Fairness is double f
            ? string.Create(ci, $"{f:F4}   over {r.FairnessWorkers} workers (1 = perfectly even, {1.0 / r.FairnessWorkers:F2} = one worker took everything)")
            : "n/a (no pids seen)";
        sb.AppendLine(ci, $"fairness (Jain)     {fairness}");
        w.Write(sb.ToString());
        w.Flush();
    }

    /// <summary>A bar of █ scaled so that <paramref name="max"/> is <see cref="BarWidth"/> cells, with ⅛-cell resolution.</summary>
    internal static string Bar(long value, long max)
    {
        if (max <= 0 || value <= 0)
        {
            return "";
        }

        int eighths = (int)Math.Round(8.0 * BarWidth * value / max);
        if (eighths == 0)
        {
            eighths = 1; // a worker that got anything shows something
        }

        return new string('█', eighths / 8) + Eighths[eighths % 8];
    }
}
