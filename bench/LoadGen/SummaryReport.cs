using System.Globalization;
using System.Security;
using System.Text;
using System.Text.Json;

namespace LoadGen;

/// <summary>
/// <c>LoadGen report --out DIR [--baseline NAME] RUNDIR...</c>: merges the per-server run
/// directories written by bench/run.sh (meta.env with the server-side measurements, plus
/// loadgen.json) into DIR/results.md, DIR/results.json and DIR/chart.svg.
/// </summary>
internal static class SummaryReport
{
    private static readonly CultureInfo Ci = CultureInfo.InvariantCulture;

    public static int Run(string[] args)
    {
        string? outDir = null;
        string baseline = "c";
        var runDirs = new List<string>();
        for (int i = 0; i < args.Length; i++)
        {
            switch (args[i])
            {
                case "--out":
                    outDir = i + 1 < args.Length ? args[++i] : throw new UsageException("--out needs a directory");
                    break;
                case "--baseline":
                    baseline = i + 1 < args.Length ? args[++i] : throw new UsageException("--baseline needs a server name");
                    break;
                default:
                    if (args[i].StartsWith('-'))
                    {
                        throw new UsageException($"report: unknown argument '{args[i]}'");
                    }

                    runDirs.Add(args[i]);
                    break;
            }
        }

        if (outDir is null || runDirs.Count == 0)
        {
            throw new UsageException("usage: LoadGen report --out DIR [--baseline NAME] RUNDIR...");
        }

        var servers = runDirs.Select(Load).ToList();
        ServerSummary? baseServer = servers.FirstOrDefault(s => s.Name == baseline && s.ConnectionsPerSecond > 0);
        foreach (ServerSummary s in servers)
        {
            if (baseServer is not null && s.ConnectionsPerSecond is double cps)
            {
                s.RatioToBaseline = Math.Round(cps / baseServer.ConnectionsPerSecond!.Value, 3);
            }
        }

        Dictionary<string, string> firstMeta = ReadMeta(runDirs[0]);
        var summary = new BenchSummary
        {
            GeneratedAtUtc = DateTime.UtcNow.ToString("yyyy-MM-dd'T'HH:mm:ss'Z'", Ci),
            Machine = firstMeta.GetValueOrDefault("machine", ""),
            Cores = Environment.ProcessorCount,
            Baseline = baseline,
            DurationSeconds = Num(firstMeta, "duration"),
            Workers = (int?)Num(firstMeta, "workers"),
            Concurrency = (int?)Num(firstMeta, "concurrency"),
            Servers = servers,
        };

        Directory.CreateDirectory(outDir);
        File.WriteAllText(Path.Combine(outDir, "results.json"),
            JsonSerializer.Serialize(summary, BenchJsonContext.Default.BenchSummary) + "\n");
        string md = Markdown(summary, baseServer);
        File.WriteAllText(Path.Combine(outDir, "results.md"), md);
        File.WriteAllText(Path.Combine(outDir, "chart.svg"), Svg(summary, baseServer));
        Console.Out.Write(md);
        return 0;
    }

    private static ServerSummary Load(string dir)
    {
        Dictionary<string, string> meta = ReadMeta(dir);
        var s = new ServerSummary
        {
            Name = meta.GetValueOrDefault("name", Path.GetFileName(Path.TrimEndingDirectorySeparator(dir))),
            Label = meta.GetValueOrDefault("label", ""),
            Status = meta.GetValueOrDefault("status", "failed"),
            Note = meta.GetValueOrDefault("note") is { Length: > 0 } note ? note : null,
            Command = meta.GetValueOrDefault("command"),
            Workers = (int?)Num(meta, "workers"),
            StartupMs = Num(meta, "startup_ms") is double ms ? Math.Round(ms, 1) : null,
            LoadGenExitCode = (int?)Num(meta, "loadgen_exit"),
            Idle = Memory(meta, "idle"),
            Loaded = Memory(meta, "loaded"),
        };
        if (s.Label.Length == 0)
        {
            s.Label = s.Name;
        }

        string jsonPath = Path.Combine(dir, "loadgen.json");
        if (File.Exists(jsonPath))
        {
            LoadResult? r = JsonSerializer.Deserialize(File.ReadAllText(jsonPath), BenchJsonContext.Default.LoadResult);
            if (r is not null)
            {
                s.LoadGen = r;
                s.ConnectionsPerSecond = r.ConnectionsPerSecond;
                s.Fairness = r.Fairness;
                s.P50Us = r.LatencyUs.P50;
                s.P99Us = r.LatencyUs.P99;
                s.MaxUs = r.LatencyUs.Max;
                s.Connections = r.Connections;
                s.Failed = r.Failed;
                s.Failures = r.Failures;
                if (Num(meta, "cpu_ticks") is double ticks && Num(meta, "clk_tck") is double hz && hz > 0)
                {
                    double cpuSeconds = ticks / hz;
                    s.ServerCpuSeconds = Math.Round(cpuSeconds, 3);
                    if (r.Ok > 0)
                    {
                        s.ServerCpuUsPerConnection = Math.Round(cpuSeconds * 1e6 / r.Ok, 2);
                    }

                    if (r.ElapsedSeconds > 0)
                    {
                        s.ServerCpuShareOfMachine = Math.Round(cpuSeconds / (r.ElapsedSeconds * Environment.ProcessorCount), 3);
                    }
                }
            }
        }
        else if (s.Status == "ok")
        {
            s.Status = "failed";
            s.Note ??= "no loadgen.json";
        }

        return s;
    }

    private static MemorySnapshot? Memory(Dictionary<string, string> meta, string prefix)
    {
        if (Num(meta, prefix + "_workers") is not double workers)
        {
            return null;
        }

        var m = new MemorySnapshot
        {
            WorkerProcesses = (int)workers,
            MasterPssKiB = (long?)Num(meta, prefix + "_master_pss_kb"),
            MasterRssKiB = (long?)Num(meta, prefix + "_master_rss_kb"),
        };
        double? pss = Num(meta, prefix + "_worker_pss_kb_sum");
        double? rss = Num(meta, prefix + "_worker_rss_kb_sum");
        if (workers > 0)
        {
            m.PssKiBPerWorker = pss is double p ? Math.Round(p / workers, 1) : null;
            m.RssKiBPerWorker = rss is double q ? Math.Round(q / workers, 1) : null;
        }

        m.TotalPssKiB = (long?)((pss ?? 0) + (m.MasterPssKiB ?? 0));
        m.TotalRssKiB = (long?)((rss ?? 0) + (m.MasterRssKiB ?? 0));
        return m;
    }

    private static Dictionary<string, string> ReadMeta(string dir)
    {
        var meta = new Dictionary<string, string>(StringComparer.Ordinal);
        string path = Path.Combine(dir, "meta.env");
        if (!File.Exists(path))
        {
            return meta;
        }

        foreach (string line in File.ReadAllLines(path))
        {
            int eq = line.IndexOf('=');
            if (eq > 0 && !line.StartsWith('#'))
            {
                meta[line[..eq].Trim()] = line[(eq + 1)..];
            }
        }

        return meta;
    }

    private static double? Num(Dictionary<string, string> meta, string key) =>
        meta.TryGetValue(key, out string? v) && double.TryParse(v, NumberStyles.Float, Ci, out double d) ? d : null;

    private static string F(double? v, string format, string missing = "—") =>
        v is double d ? d.ToString(format, Ci) : missing;

    private static string Mem(MemorySnapshot? m) =>
        m?.PssKiBPerWorker is double pss && m.RssKiBPerWorker is double rss
            ? string.Create(Ci, $"{pss / 1024:F2} / {rss / 1024:F2}")
            : "—";

    private static string Md(string text) => text.Replace("|", "\\|", StringComparison.Ordinal);

    private static string Markdown(BenchSummary sum, ServerSummary? baseServer)
    {
        var sb = new StringBuilder();
        string baseLabel = baseServer?.Label ?? sum.Baseline;
        sb.AppendLine("# Prefork greeting server benchmark");
        sb.AppendLine();
        sb.AppendLine(Ci, $"Generated {sum.GeneratedAtUtc} by `bash bench/run.sh` on {Md(sum.Machine)}, {sum.Cores} cores. ");
        sb.AppendLine(Ci, $"Every server: {F(sum.Workers, "0")} workers on 127.0.0.1; LoadGen: {F(sum.Concurrency, "0")} closed-loop clients for {F(sum.DurationSeconds, "0.###")} s. ");
        sb.AppendLine("LoadGen and the server share the same cores, so throughput is that of the whole machine. ");
        sb.AppendLine("Column meanings and how CPU and memory are measured: bench/README.md.");
        sb.AppendLine();
        sb.AppendLine(Ci, $"| server | conn/s | ratio to {Md(baseLabel)} | server CPU µs/conn | fairness | p99 µs | startup ms | idle PSS / RSS per worker (MiB) | loaded PSS / RSS per worker (MiB) | failed |");
        sb.AppendLine("|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|");
        foreach (ServerSummary s in sum.Servers)
        {
            string name = Md(s.Label);
            if (s.Status == "skipped")
            {
                sb.AppendLine(Ci, $"| {name} | {Md(s.Note ?? "skipped")} | — | — | — | — | — | — | — | — |");
                continue;
            }

            string failed = s.Failed is long f ? f.ToString(Ci) : "—";
            if (s.Status != "ok")
            {
                failed += $" ({Md(s.Note ?? s.Status)})";
            }

            sb.AppendLine(Ci,
                $"| {name} | {F(s.ConnectionsPerSecond, "N0")} | {F(s.RatioToBaseline, "0.00")} | {F(s.ServerCpuUsPerConnection, "0.0")} | {F(s.Fairness, "0.0000")} | {F(s.P99Us, "0")} | {F(s.StartupMs, "0.0")} | {Mem(s.Idle)} | {Mem(s.Loaded)} | {failed} |");
        }

        sb.AppendLine();
        sb.AppendLine("Details:");
        sb.AppendLine();
        sb.AppendLine("| server | connections | p50 µs | max µs | server CPU (share of all cores) | LoadGen CPU µs/conn (user + system) | pids seen | master PSS / RSS idle (MiB) | failures by kind |");
        sb.AppendLine("|---|--:|--:|--:|--:|--:|--:|--:|---|");
        foreach (ServerSummary s in sum.Servers.Where(s => s.LoadGen is not null))
        {
            LoadResult r = s.LoadGen!;
            string master = s.Idle?.MasterPssKiB is long mp && s.Idle.MasterRssKiB is long mr
                ? string.Create(Ci, $"{mp / 1024.0:F2} / {mr / 1024.0:F2}")
                : "—";
            string kinds = r.Failed == 0 ? "none" : string.Join(", ", r.Failures.Where(kv => kv.Value > 0).Select(kv => $"{kv.Key} {kv.Value}"));
            sb.AppendLine(Ci,
                $"| {Md(s.Label)} | {r.Connections:N0} | {F(s.P50Us, "0")} | {F(s.MaxUs, "0")} | {F(s.ServerCpuShareOfMachine * 100, "0")} % | {r.ClientCpuUsPerConnection:0.0} ({PerConn(r.ClientCpuUserSeconds, r.Connections)} + {PerConn(r.ClientCpuSystemSeconds, r.Connections)}) | {r.PerPid.Count} | {master} | {kinds} |");
        }

        sb.AppendLine();
        sb.AppendLine("Commands:");
        sb.AppendLine();
        foreach (ServerSummary s in sum.Servers.Where(s => !string.IsNullOrEmpty(s.Command)))
        {
            sb.AppendLine(Ci, $"- {Md(s.Label)}: `{s.Command}`");
        }

        return sb.ToString();
    }

    private static string Svg(BenchSummary sum, ServerSummary? baseServer)
    {
        const int width = 760, labelW = 200, barMax = 400, barH = 24, gap = 12, top = 56;
        List<ServerSummary> rows = sum.Servers;
        double maxRatio = Math.Max(1.0, rows.Max(s => s.RatioToBaseline ?? 0));
        int height = top + (rows.Count * (barH + gap)) + 40;
        string baseLabel = baseServer?.Label ?? sum.Baseline;
        var sb = new StringBuilder();
        sb.AppendLine(Ci, $"<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" viewBox=\"0 0 {width} {height}\" font-family=\"sans-serif\" font-size=\"13\">");
        sb.AppendLine(Ci, $"  <rect width=\"{width}\" height=\"{height}\" fill=\"#ffffff\"/>");
        sb.AppendLine(Ci, $"  <text x=\"16\" y=\"24\" font-size=\"16\" font-weight=\"bold\">Connections/s relative to {X(baseLabel)} (higher is better)</text>");
        sb.AppendLine(Ci, $"  <text x=\"16\" y=\"42\" fill=\"#555555\">{F(sum.Workers, "0")} workers, {F(sum.Concurrency, "0")} clients, {F(sum.DurationSeconds, "0.###")} s per server, {sum.Cores} cores shared with the load generator</text>");
        for (int i = 0; i < rows.Count; i++)
        {
            ServerSummary s = rows[i];
            int y = top + (i * (barH + gap));
            sb.AppendLine(Ci, $"  <text x=\"{labelW - 8}\" y=\"{y + 17}\" text-anchor=\"end\">{X(s.Label)}</text>");
            if (s.RatioToBaseline is double ratio)
            {
                double w = Math.Max(1, barMax * ratio / maxRatio);
                string fill = s == baseServer ? "#7f8c8d" : "#2e86de";
                sb.AppendLine(Ci, $"  <rect x=\"{labelW}\" y=\"{y}\" width=\"{w:F1}\" height=\"{barH}\" fill=\"{fill}\"/>");
                sb.AppendLine(Ci, $"  <text x=\"{labelW + w + 6:F1}\" y=\"{y + 17}\">{ratio:0.00}× ({F(s.ConnectionsPerSecond, "N0")}/s)</text>");
            }
            else
            {
                sb.AppendLine(Ci, $"  <text x=\"{labelW}\" y=\"{y + 17}\" fill=\"#999999\" font-style=\"italic\">{X(s.Note ?? s.Status)}</text>");
            }
        }

        double oneX = labelW + (barMax / maxRatio);
        int axisBottom = top + (rows.Count * (barH + gap));
        sb.AppendLine(Ci, $"  <line x1=\"{oneX:F1}\" y1=\"{top - 6}\" x2=\"{oneX:F1}\" y2=\"{axisBottom}\" stroke=\"#333333\" stroke-dasharray=\"4 3\"/>");
        sb.AppendLine(Ci, $"  <text x=\"{oneX:F1}\" y=\"{axisBottom + 16}\" text-anchor=\"middle\" fill=\"#333333\">1.0×</text>");
        sb.AppendLine("</svg>");
        return sb.ToString();
    }

    private static string PerConn(double seconds, long connections) =>
        connections == 0 ? "—" : (seconds * 1e6 / connections).ToString("0.0", Ci);

    private static string X(string text) => SecurityElement.Escape(text) ?? "";
}
