using System.Globalization;
using System.Text;
using System.Text.Json;

namespace LoadGen;

/// <summary>
/// <c>LoadGen report --out DIR [--baseline NAME] SERVERDIR...</c>: merges the raw directories
/// written by bench/run.sh into DIR/results.md, DIR/results.json and DIR/chart.png.
/// Each SERVERDIR holds one <c>run-K</c> directory per round (meta.env with the server-side
/// measurements, plus loadgen.json); a SERVERDIR without <c>run-K</c> directories is read as a
/// single run. Every per-server figure is the median over the server's successful runs; the
/// ratio to the baseline is computed per round against the baseline's run of the same round,
/// then its median is taken; failures are summed over all runs.
/// </summary>
internal static class SummaryReport
{
    private static readonly CultureInfo Ci = CultureInfo.InvariantCulture;

    public static int Run(string[] args)
    {
        string? outDir = null;
        string baseline = "c";
        var serverDirs = new List<string>();
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

                    serverDirs.Add(args[i]);
                    break;
            }
        }

        if (outDir is null || serverDirs.Count == 0)
        {
            throw new UsageException("usage: LoadGen report --out DIR [--baseline NAME] SERVERDIR...");
        }

        var loaded = serverDirs.Select(LoadServer).ToList();
        List<ServerSummary> servers = [.. loaded.Select(l => l.Server)];

        // The baseline's conn/s per round: every run's ratio is taken against the same round.
        ServerSummary? baseServer = servers.FirstOrDefault(s => s.Name == baseline && s.Runs.Any(IsMeasured));
        Dictionary<int, double> baseCps = baseServer is null
            ? []
            : baseServer.Runs.Where(r => IsMeasured(r) && r.ConnectionsPerSecond > 0)
                .ToDictionary(r => r.Run, r => r.ConnectionsPerSecond!.Value);
        foreach (ServerSummary s in servers)
        {
            Aggregate(s, baseCps);
        }

        Dictionary<string, string> firstMeta = loaded.Select(l => l.FirstMeta).FirstOrDefault(m => m.Count > 0) ?? [];
        var summary = new BenchSummary
        {
            GeneratedAtUtc = DateTime.UtcNow.ToString("yyyy-MM-dd'T'HH:mm:ss'Z'", Ci),
            Machine = firstMeta.GetValueOrDefault("machine", ""),
            Cores = Environment.ProcessorCount,
            Baseline = baseline,
            DurationSeconds = Num(firstMeta, "duration"),
            Workers = (int?)Num(firstMeta, "workers"),
            Concurrency = (int?)Num(firstMeta, "concurrency"),
            Rounds = servers.SelectMany(s => s.Runs).Where(r => r.Status != "skipped").Select(r => r.Run).DefaultIfEmpty(0).Max(),
            Order = [.. servers.Where(s => s.Status != "skipped").Select(s => s.Name)],
            Servers = servers,
        };

        Directory.CreateDirectory(outDir);
        File.WriteAllText(Path.Combine(outDir, "results.json"),
            JsonSerializer.Serialize(summary, BenchJsonContext.Default.BenchSummary) + "\n");
        string md = Markdown(summary, baseServer);
        File.WriteAllText(Path.Combine(outDir, "results.md"), md);
        Chart(Path.Combine(outDir, "chart.png"), summary, baseServer);
        Console.Out.Write(md);
        return 0;
    }

    /// <summary>A run that produced figures the medians can use.</summary>
    private static bool IsMeasured(RunSummary r) => r.Status == "ok" && r.LoadGen is not null && r.ConnectionsPerSecond is not null;

    private static (ServerSummary Server, Dictionary<string, string> FirstMeta) LoadServer(string dir)
    {
        // run-K subdirectories, in round order; without any, DIR itself is one run (older layout).
        var runDirs = new List<(string Dir, int Run)>();
        if (Directory.Exists(dir))
        {
            foreach (string d in Directory.GetDirectories(dir))
            {
                string leaf = Path.GetFileName(d);
                if (leaf.StartsWith("run-", StringComparison.Ordinal) &&
                    int.TryParse(leaf.AsSpan(4), NumberStyles.None, Ci, out int k) && k > 0)
                {
                    runDirs.Add((d, k));
                }
            }
        }

        if (runDirs.Count == 0)
        {
            runDirs.Add((dir, 1));
        }

        runDirs.Sort((a, b) => a.Run.CompareTo(b.Run));
        var metas = runDirs.Select(r => ReadMeta(r.Dir)).ToList();
        var s = new ServerSummary
        {
            Name = metas.Select(m => m.GetValueOrDefault("name")).FirstOrDefault(n => !string.IsNullOrEmpty(n))
                ?? Path.GetFileName(Path.TrimEndingDirectorySeparator(dir)),
            Label = metas.Select(m => m.GetValueOrDefault("label")).FirstOrDefault(n => !string.IsNullOrEmpty(n)) ?? "",
            Runs = [.. runDirs.Select((r, i) => LoadRun(r.Dir, r.Run, metas[i]))],
        };
        if (s.Label.Length == 0)
        {
            s.Label = s.Name;
        }

        return (s, metas[0]);
    }

    private static RunSummary LoadRun(string dir, int run, Dictionary<string, string> meta)
    {
        var r = new RunSummary
        {
            Run = run,
            Status = meta.GetValueOrDefault("status", "failed"),
            Note = meta.GetValueOrDefault("note") is { Length: > 0 } note ? note : null,
            Command = meta.GetValueOrDefault("command"),
            Workers = (int?)Num(meta, "workers"),
            StartupMs = Num(meta, "startup_ms") is double ms ? Math.Round(ms, 1) : null,
            LoadGenExitCode = (int?)Num(meta, "loadgen_exit"),
            ServerExitCode = (int?)Num(meta, "server_exit"),
            Idle = Memory(meta, "idle"),
            Loaded = Memory(meta, "loaded"),
        };
        if (meta.Count == 0)
        {
            r.Note ??= "no meta.env (the run did not start)";
        }

        string jsonPath = Path.Combine(dir, "loadgen.json");
        if (File.Exists(jsonPath))
        {
            LoadResult? lr = JsonSerializer.Deserialize(File.ReadAllText(jsonPath), BenchJsonContext.Default.LoadResult);
            if (lr is not null)
            {
                r.LoadGen = lr;
                r.ConnectionsPerSecond = lr.ConnectionsPerSecond;
                r.Fairness = lr.Fairness;
                r.P50Us = lr.LatencyUs.P50;
                r.P99Us = lr.LatencyUs.P99;
                r.MaxUs = lr.LatencyUs.Max;
                r.Connections = lr.Connections;
                r.Failed = lr.Failed;
                r.Failures = lr.Failures;
                // cpu_ns (exact, from schedstat); cpu_ticks and clk_tck in results of older runs.
                double? cpu = Num(meta, "cpu_ns") is double ns ? ns / 1e9
                    : Num(meta, "cpu_ticks") is double ticks && Num(meta, "clk_tck") is double hz && hz > 0 ? ticks / hz : null;
                if (cpu is double cpuSeconds)
                {
                    r.ServerCpuSeconds = Math.Round(cpuSeconds, 3);
                    if (lr.Ok > 0)
                    {
                        r.ServerCpuUsPerConnection = Math.Round(cpuSeconds * 1e6 / lr.Ok, 2);
                    }

                    if (lr.ElapsedSeconds > 0)
                    {
                        r.ServerCpuShareOfMachine = Math.Round(cpuSeconds / (lr.ElapsedSeconds * Environment.ProcessorCount), 3);
                    }
                }
            }
        }
        else if (r.Status == "ok")
        {
            r.Status = "failed";
            r.Note ??= "no loadgen.json";
        }

        return r;
    }

    /// <summary>Per-round ratios, then the medians (and ranges) over the successful runs.</summary>
    private static void Aggregate(ServerSummary s, Dictionary<int, double> baseCps)
    {
        var ratios = new List<double>();
        foreach (RunSummary r in s.Runs)
        {
            if (IsMeasured(r) && baseCps.TryGetValue(r.Run, out double b))
            {
                double ratio = r.ConnectionsPerSecond!.Value / b;
                ratios.Add(ratio);
                r.RatioToBaseline = Math.Round(ratio, 3);
            }
        }

        List<RunSummary> attempted = [.. s.Runs.Where(r => r.Status != "skipped")];
        List<RunSummary> ok = [.. attempted.Where(IsMeasured)];
        s.RunsAttempted = attempted.Count;
        s.RunCount = ok.Count;
        s.Command = s.Runs.Select(r => r.Command).FirstOrDefault(c => !string.IsNullOrEmpty(c));
        s.Workers = s.Runs.Select(r => r.Workers).FirstOrDefault(w => w is not null);
        if (attempted.Count == 0)
        {
            s.Status = "skipped";
            s.Note = s.Runs.Select(r => r.Note).FirstOrDefault(n => n is not null) ?? "skipped";
            return;
        }

        s.Status = ok.Count > 0 ? "ok" : "failed";
        s.Note = GroupNotes(attempted, attempted.Count);

        List<double> cps = [.. ok.Select(r => r.ConnectionsPerSecond!.Value)];
        s.ConnectionsPerSecond = Round(Median(cps), 1);
        s.ConnectionsPerSecondMin = cps.Count > 0 ? cps.Min() : null;
        s.ConnectionsPerSecondMax = cps.Count > 0 ? cps.Max() : null;
        s.RatioRounds = ratios.Count;
        s.RatioToBaseline = Round(Median(ratios), 3);
        s.RatioToBaselineMin = ratios.Count > 0 ? Math.Round(ratios.Min(), 3) : null;
        s.RatioToBaselineMax = ratios.Count > 0 ? Math.Round(ratios.Max(), 3) : null;
        s.ServerCpuUsPerConnection = Round(Median(ok.Select(r => r.ServerCpuUsPerConnection)), 2);
        s.ServerCpuShareOfMachine = Round(Median(ok.Select(r => r.ServerCpuShareOfMachine)), 3);
        s.ServerCpuSeconds = Round(Median(ok.Select(r => r.ServerCpuSeconds)), 3);
        s.Fairness = Round(Median(ok.Select(r => r.Fairness)), 5);
        s.P50Us = Round(Median(ok.Select(r => r.P50Us)), 1);
        s.P99Us = Round(Median(ok.Select(r => r.P99Us)), 1);
        s.MaxUs = Round(Median(ok.Select(r => r.MaxUs)), 1);
        s.StartupMs = Round(Median(ok.Select(r => r.StartupMs)), 1);
        s.Idle = MedianMemory(ok.Select(r => r.Idle));
        s.Loaded = MedianMemory(ok.Select(r => r.Loaded));
        s.Connections = RoundLong(Median(ok.Select(r => (double?)r.Connections)));
        s.PidsSeen = Median(ok.Select(r => (double?)r.LoadGen!.PerPid.Count));
        s.ClientCpuUsPerConnection = Round(Median(ok.Select(r => (double?)r.LoadGen!.ClientCpuUsPerConnection)), 2);
        s.ClientCpuUserUsPerConnection = Round(Median(ok.Select(r => PerConnUs(r.LoadGen!.ClientCpuUserSeconds, r.LoadGen.Connections))), 2);
        s.ClientCpuSystemUsPerConnection = Round(Median(ok.Select(r => PerConnUs(r.LoadGen!.ClientCpuSystemSeconds, r.LoadGen.Connections))), 2);

        // Failures: summed over every run that got as far as LoadGen, successful or not.
        List<RunSummary> withLoad = [.. attempted.Where(r => r.LoadGen is not null)];
        if (withLoad.Count > 0)
        {
            s.Failed = withLoad.Sum(r => r.Failed ?? 0);
            var kinds = new Dictionary<string, long>(StringComparer.Ordinal);
            foreach (KeyValuePair<string, long> kv in withLoad.SelectMany(r => r.Failures ?? []))
            {
                kinds[kv.Key] = kinds.GetValueOrDefault(kv.Key) + kv.Value;
            }

            s.Failures = kinds;
        }
    }

    /// <summary>
    /// The notes of <paramref name="runs"/>: "note" when the server ran once, otherwise
    /// "run 2: note; runs 1, 3: other" ("every run: note" when all <paramref name="total"/> runs share it).
    /// </summary>
    private static string? GroupNotes(List<RunSummary> runs, int total)
    {
        if (total == 1)
        {
            return runs.Count == 1 ? runs[0].Note : null;
        }

        var parts = runs.Where(r => r.Note is not null)
            .GroupBy(r => r.Note!, StringComparer.Ordinal)
            .Select(g =>
            {
                int[] ks = [.. g.Select(r => r.Run)];
                string which = ks.Length == total ? "every run"
                    : ks.Length == 1 ? $"run {ks[0]}"
                    : "runs " + string.Join(", ", ks);
                return $"{which}: {g.Key}";
            })
            .ToList();
        return parts.Count == 0 ? null : string.Join("; ", parts);
    }

    /// <summary>Median of the values present; the mean of the two middle ones for an even count.</summary>
    internal static double? Median(IEnumerable<double?> values) =>
        Median(values.Where(v => v is not null).Select(v => v!.Value));

    private static double? Median(IEnumerable<double> values)
    {
        double[] v = [.. values];
        if (v.Length == 0)
        {
            return null;
        }

        Array.Sort(v);
        int mid = v.Length / 2;
        return v.Length % 2 == 1 ? v[mid] : (v[mid - 1] + v[mid]) / 2;
    }

    private static double? Round(double? v, int digits) => v is double d ? Math.Round(d, digits) : null;

    private static long? RoundLong(double? v) => v is double d ? (long)Math.Round(d) : null;

    private static double? PerConnUs(double seconds, long connections) =>
        connections == 0 ? null : seconds * 1e6 / connections;

    /// <summary>Field by field median of the snapshots (each field over the runs that have it).</summary>
    private static MemorySnapshot? MedianMemory(IEnumerable<MemorySnapshot?> snapshots)
    {
        List<MemorySnapshot> m = [.. snapshots.Where(x => x is not null).Select(x => x!)];
        if (m.Count == 0)
        {
            return null;
        }

        return new MemorySnapshot
        {
            WorkerProcesses = (int)Math.Round(Median(m.Select(x => (double)x.WorkerProcesses))!.Value),
            PssKiBPerWorker = Round(Median(m.Select(x => x.PssKiBPerWorker)), 1),
            RssKiBPerWorker = Round(Median(m.Select(x => x.RssKiBPerWorker)), 1),
            MasterPssKiB = RoundLong(Median(m.Select(x => (double?)x.MasterPssKiB))),
            MasterRssKiB = RoundLong(Median(m.Select(x => (double?)x.MasterRssKiB))),
            TotalPssKiB = RoundLong(Median(m.Select(x => (double?)x.TotalPssKiB))),
            TotalRssKiB = RoundLong(Median(m.Select(x => (double?)x.TotalRssKiB))),
        };
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

    internal static Dictionary<string, string> ReadMeta(string dir)
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

    internal static double? Num(Dictionary<string, string> meta, string key) =>
        meta.TryGetValue(key, out string? v) && double.TryParse(v, NumberStyles.Float, Ci, out double d) ? d : null;

    internal static string F(double? v, string format, string missing = "—") =>
        v is double d ? d.ToString(format, Ci) : missing;

    private static string Mem(MemorySnapshot? m) =>
        m?.PssKiBPerWorker is double pss && m.RssKiBPerWorker is double rss
            ? string.Create(Ci, $"{pss / 1024:F2} / {rss / 1024:F2}")
            : "—";

    internal static string Md(string text) => text.Replace("|", "\\|", StringComparison.Ordinal);

    private static string Markdown(BenchSummary sum, ServerSummary? baseServer)
    {
        var sb = new StringBuilder();
        string baseLabel = baseServer?.Label ?? sum.Baseline;
        List<ServerSummary> measured = [.. sum.Servers.Where(s => s.Status != "skipped")];
        string order = string.Join(", ", measured.Select(s => Md(s.Label)));
        sb.AppendLine("# Prefork greeting server benchmark");
        sb.AppendLine();
        sb.AppendLine(Ci, $"Generated {sum.GeneratedAtUtc} by `bash bench/run.sh` on {Md(sum.Machine)}, {sum.Cores} cores. ");
        sb.AppendLine(Ci, $"Every server: {F(sum.Workers, "0")} workers on 127.0.0.1; LoadGen: {F(sum.Concurrency, "0")} closed-loop clients for {F(sum.DurationSeconds, "0.###")} s per run. ");
        if (sum.Rounds == 1)
        {
            sb.AppendLine(Ci, $"One run per server, in the order {order}. ");
        }
        else
        {
            sb.AppendLine(Ci, $"{sum.Rounds} rounds, each running every server once in the order {order}; every run is a fresh launch. ");
        }

        sb.AppendLine(Ci, $"Each figure is the median over a server's successful runs (the mean of the two middle runs for an even count); \"ratio to {Md(baseLabel)}\" is the median of the per-round ratios to that round's {Md(baseLabel)} run; \"failed\" is the sum over all runs. ");
        sb.AppendLine("LoadGen and the server share the same cores, so throughput is that of the whole machine. ");
        sb.AppendLine("Column meanings and how CPU and memory are measured: bench/README.md.");
        sb.AppendLine();
        sb.AppendLine(Ci, $"| server | runs | conn/s | conn/s min–max | ratio to {Md(baseLabel)} | ratio min–max | server CPU µs/conn | fairness | p99 µs | startup ms | idle PSS / RSS per worker (MiB) | loaded PSS / RSS per worker (MiB) | failed |");
        sb.AppendLine("|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|");
        foreach (ServerSummary s in sum.Servers)
        {
            string name = Md(s.Label);
            if (s.Status == "skipped")
            {
                sb.AppendLine(Ci, $"| {name} | 0 | {Md(s.Note ?? "skipped")} | — | — | — | — | — | — | — | — | — | — |");
                continue;
            }

            string runs = s.RunCount == s.RunsAttempted ? s.RunCount.ToString(Ci) : string.Create(Ci, $"{s.RunCount} of {s.RunsAttempted}");
            string failed = s.Failed is long f ? f.ToString("N0", Ci) : "—";
            string? failNote = s.Status == "ok" ? GroupNotes([.. s.Runs.Where(r => r.Status == "failed")], s.RunsAttempted) : s.Note ?? s.Status;
            if (failNote is not null)
            {
                failed += $" ({Md(failNote)})";
            }

            sb.AppendLine(Ci,
                $"| {name} | {runs} | {F(s.ConnectionsPerSecond, "N0")} | {Range(s.ConnectionsPerSecondMin, s.ConnectionsPerSecondMax, "N0")} | {F(s.RatioToBaseline, "0.00")} | {Range(s.RatioToBaselineMin, s.RatioToBaselineMax, "0.00")} | {F(s.ServerCpuUsPerConnection, "0.0")} | {F(s.Fairness, "0.0000")} | {F(s.P99Us, "0")} | {F(s.StartupMs, "0.0")} | {Mem(s.Idle)} | {Mem(s.Loaded)} | {failed} |");
        }

        sb.AppendLine();
        sb.AppendLine("Details (medians over the successful runs; failures: sums over all runs):");
        sb.AppendLine();
        sb.AppendLine("| server | connections per run | p50 µs | max µs | server CPU (share of all cores) | LoadGen CPU µs/conn (user + system) | pids seen | master PSS / RSS idle (MiB) | failures by kind |");
        sb.AppendLine("|---|--:|--:|--:|--:|--:|--:|--:|---|");
        foreach (ServerSummary s in sum.Servers.Where(s => s.RunCount > 0))
        {
            string master = s.Idle?.MasterPssKiB is long mp && s.Idle.MasterRssKiB is long mr
                ? string.Create(Ci, $"{mp / 1024.0:F2} / {mr / 1024.0:F2}")
                : "—";
            string kinds = s.Failures is null || s.Failed is null or 0
                ? "none"
                : string.Join(", ", s.Failures.Where(kv => kv.Value > 0).Select(kv => string.Create(Ci, $"{kv.Key} {kv.Value}")));
            sb.AppendLine(Ci,
                $"| {Md(s.Label)} | {F(s.Connections, "N0")} | {F(s.P50Us, "0")} | {F(s.MaxUs, "0")} | {F(s.ServerCpuShareOfMachine * 100, "0")} % | {F(s.ClientCpuUsPerConnection, "0.0")} ({F(s.ClientCpuUserUsPerConnection, "0.0")} + {F(s.ClientCpuSystemUsPerConnection, "0.0")}) | {F(s.PidsSeen, "0.#")} | {master} | {kinds} |");
        }

        sb.AppendLine();
        sb.AppendLine("Every run, in the order it ran:");
        sb.AppendLine();
        sb.AppendLine(Ci, $"| round | server | conn/s | ratio to {Md(baseLabel)} | server CPU µs/conn | fairness | p99 µs | startup ms | idle PSS / RSS per worker (MiB) | failed | note |");
        sb.AppendLine("|--:|---|--:|--:|--:|--:|--:|--:|--:|--:|---|");
        foreach ((RunSummary r, ServerSummary s) in measured
            .SelectMany(s => s.Runs.Where(r => r.Status != "skipped").Select(r => (Run: r, Server: s)))
            .OrderBy(x => x.Run.Run))
        {
            string note = r.Status == "ok" ? r.Note ?? "" : $"{r.Status}: {r.Note ?? ""}";
            sb.AppendLine(Ci,
                $"| {r.Run} | {Md(s.Label)} | {F(r.ConnectionsPerSecond, "N0")} | {F(r.RatioToBaseline, "0.00")} | {F(r.ServerCpuUsPerConnection, "0.0")} | {F(r.Fairness, "0.0000")} | {F(r.P99Us, "0")} | {F(r.StartupMs, "0.0")} | {Mem(r.Idle)} | {F(r.Failed, "N0")} | {Md(note)} |");
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

    private static string Range(double? min, double? max, string format) =>
        min is double lo && max is double hi ? $"{lo.ToString(format, Ci)}–{hi.ToString(format, Ci)}" : "—";

    /// <summary>chart.png: each server's median ratio to the baseline, with its min–max range.</summary>
    private static void Chart(string path, BenchSummary sum, ServerSummary? baseServer)
    {
        string baseLabel = baseServer?.Label ?? sum.Baseline;
        string runs = sum.Rounds == 1 ? "1 run per server" : string.Create(Ci, $"Median of {sum.Rounds} alternating runs (line: min–max)");
        string subtitle = string.Create(Ci, $"{runs}, {F(sum.Workers, "0")} workers, {F(sum.Concurrency, "0")} clients, {F(sum.DurationSeconds, "0.###")} s per run, {sum.Cores} cores shared with the load generator");
        List<Charts.Bar> rows = [.. sum.Servers.Select(s =>
        {
            string range = s.RatioToBaselineMin is double lo && s.RatioToBaselineMax is double hi && hi > lo
                ? string.Create(Ci, $", {lo:0.00}–{hi:0.00}")
                : "";
            string text = s.RatioToBaseline is double ratio
                ? string.Create(Ci, $"{ratio:0.00}× ({F(s.ConnectionsPerSecond, "N0")}/s{range})")
                : s.Note ?? s.Status;
            return new Charts.Bar(s.Label, s.RatioToBaseline, s.RatioToBaselineMin, s.RatioToBaselineMax, text, s == baseServer);
        })];
        Charts.SaveBars(path, $"Connections/s relative to {baseLabel} (higher is better)", subtitle,
            $"ratio to {baseLabel} (dashed: 1.0×)", rows);
    }
}
