using System.Globalization;
using System.Text;
using System.Text.Json;
using static LoadGen.SummaryReport;

namespace LoadGen;

/// <summary>
/// <c>LoadGen scale-report --out DIR [--at-clients 64] [--at-workers 5] [--idle IDLEDIR] [--system DIR] POINTDIR...</c>:
/// the report of bench/scale.sh. Every POINTDIR is the output folder of one bench/run.sh
/// invocation (its results.json holds each server's medians at that worker and client count).
/// The points with <c>--at-clients</c> clients make the workers sweep, those with
/// <c>--at-workers</c> workers the clients sweep (a point can be in both). IDLEDIR holds the
/// idle-connection test: meta.env (the script's measurements) and hold.json (LoadGen hold's);
/// DIR/meta.env of <c>--system</c> lists settings of the machine (port range, limits) for the report.
/// Writes DIR/scale.md, DIR/scale.json, DIR/scale-workers.png and DIR/scale-clients.png.
/// </summary>
internal static class ScaleReport
{
    public const string Usage =
        "usage: LoadGen scale-report --out DIR [--at-clients 64] [--at-workers 5] [--idle IDLEDIR] [--system DIR] POINTDIR...";

    private static readonly CultureInfo Ci = CultureInfo.InvariantCulture;

    /// <summary>Column headers name the servers briefly; the text under the title gives their labels.</summary>
    private static readonly Dictionary<string, string> ShortNames = new(StringComparer.Ordinal)
    {
        ["c"] = "C",
        ["csharp-aot"] = "C# AOT",
        ["csharp-jit"] = "C# JIT",
    };

    private sealed record Metric(string Header, Func<ScalePointServer, string> Cell);

    public static int Run(string[] args)
    {
        string? outDir = null, idleDir = null, systemDir = null;
        int atClients = 64, atWorkers = 5;
        var pointDirs = new List<string>();
        for (int i = 0; i < args.Length; i++)
        {
            string name = args[i];
            string Value() => i + 1 < args.Length ? args[++i] : throw new UsageException($"{name} needs a value");
            switch (name)
            {
                case "--out":
                    outDir = Value();
                    break;
                case "--idle":
                    idleDir = Value();
                    break;
                case "--system":
                    systemDir = Value();
                    break;
                case "--at-clients":
                    atClients = PositiveInt(name, Value());
                    break;
                case "--at-workers":
                    atWorkers = PositiveInt(name, Value());
                    break;
                default:
                    if (name.StartsWith('-'))
                    {
                        throw new UsageException($"scale-report: unknown argument '{name}'");
                    }

                    pointDirs.Add(name);
                    break;
            }
        }

        if (outDir is null || (pointDirs.Count == 0 && idleDir is null))
        {
            throw new UsageException(Usage);
        }

        var missing = new List<string>();
        var summaries = new List<(BenchSummary Bench, ScalePoint Point)>();
        foreach (string dir in pointDirs)
        {
            string path = Path.Combine(dir, "results.json");
            BenchSummary? bench = File.Exists(path)
                ? JsonSerializer.Deserialize(File.ReadAllText(path), BenchJsonContext.Default.BenchSummary)
                : null;
            if (bench?.Workers is not int workers || bench.Concurrency is not int clients)
            {
                Console.Error.WriteLine($"LoadGen scale-report: {path}: missing or incomplete; the point is left out");
                missing.Add(Path.GetRelativePath(outDir, dir));
                continue;
            }

            summaries.Add((bench, new ScalePoint
            {
                Workers = workers,
                Clients = clients,
                Dir = Path.GetRelativePath(outDir, dir),
                Rounds = bench.Rounds,
                Servers = [.. bench.Servers.Select(ToPointServer)],
            }));
        }

        BenchSummary? first = summaries.Select(s => s.Bench).FirstOrDefault();
        var servers = new List<ScaleServer>();
        foreach (ServerSummary s in summaries.SelectMany(x => x.Bench.Servers))
        {
            ScaleServer? known = servers.Find(k => k.Name == s.Name);
            if (known is null)
            {
                servers.Add(new ScaleServer { Name = s.Name, Label = s.Label, Command = s.Command });
            }
            else
            {
                known.Command ??= s.Command;
            }
        }

        List<ScalePoint> points = [.. summaries.Select(s => s.Point)];
        var summary = new ScaleSummary
        {
            GeneratedAtUtc = DateTime.UtcNow.ToString("yyyy-MM-dd'T'HH:mm:ss'Z'", Ci),
            Machine = first?.Machine ?? "",
            Cores = first?.Cores ?? Environment.ProcessorCount,
            Baseline = first?.Baseline ?? "c",
            DurationSeconds = first?.DurationSeconds,
            Rounds = first?.Rounds,
            Servers = servers,
            WorkersSweep = Sweep("workers", "clients", atClients, points.Where(p => p.Clients == atClients), p => p.Workers),
            ClientsSweep = Sweep("clients", "workers", atWorkers, points.Where(p => p.Workers == atWorkers), p => p.Clients),
            MachineSettings = systemDir is null ? [] : ReadMeta(systemDir),
            Idle = idleDir is null ? null : LoadIdle(idleDir),
        };

        Directory.CreateDirectory(outDir);
        File.WriteAllText(Path.Combine(outDir, "scale.json"),
            JsonSerializer.Serialize(summary, ScaleJsonContext.Default.ScaleSummary) + "\n");
        WorkersChart(Path.Combine(outDir, "scale-workers.png"), summary);
        ClientsChart(Path.Combine(outDir, "scale-clients.png"), summary);
        string md = Markdown(summary, missing);
        File.WriteAllText(Path.Combine(outDir, "scale.md"), md);
        Console.Out.Write(md);
        return 0;
    }

    private static int PositiveInt(string name, string text) =>
        int.TryParse(text, NumberStyles.None, Ci, out int v) && v > 0
            ? v
            : throw new UsageException($"{name}: '{text}' is not a positive integer");

    private static ScaleSweep Sweep(string varies, string fixedName, int fixedValue, IEnumerable<ScalePoint> points, Func<ScalePoint, int> key) =>
        new()
        {
            Varies = varies,
            Fixed = fixedName,
            FixedValue = fixedValue,
            Points = [.. points.GroupBy(key).Select(g => g.Last()).OrderBy(key)],
        };

    private static ScalePointServer ToPointServer(ServerSummary s)
    {
        List<LoadResult> runs = [.. s.Runs.Where(r => r.Status == "ok" && r.LoadGen is not null).Select(r => r.LoadGen!)];
        s.Runs = [];
        return new ScalePointServer
        {
            Medians = s,
            LoadGenElapsedSeconds = Median(runs.Select(r => (double?)r.ElapsedSeconds)),
            ClientsInFlight = Median(runs.Select(r => (double?)(r.ConnectionsPerSecond * r.LatencyUs.Mean / 1e6))) is double f
                ? Math.Round(f, 1)
                : null,
        };
    }

    private static IdleSummary LoadIdle(string dir)
    {
        Dictionary<string, string> meta = ReadMeta(dir);
        string holdPath = Path.Combine(dir, "hold.json");
        HoldResult? hold = File.Exists(holdPath)
            ? JsonSerializer.Deserialize(File.ReadAllText(holdPath), ScaleJsonContext.Default.HoldResult)
            : null;
        List<long> before = Longs(meta, "before_worker_sockets"), holding = Longs(meta, "holding_worker_sockets");
        List<long> perWorker = before.Count == holding.Count ? [.. holding.Zip(before, (h, b) => h - b)] : [];
        long? accepted = perWorker.Count > 0 ? perWorker.Sum() : null;
        var idle = new IdleSummary
        {
            Status = meta.GetValueOrDefault("status", meta.Count == 0 ? "not run" : "failed"),
            Note = meta.GetValueOrDefault("note") is { Length: > 0 } note ? note : null,
            Command = meta.GetValueOrDefault("command"),
            Workers = (int?)Num(meta, "workers"),
            Requested = (long?)Num(meta, "connections"),
            Connected = hold?.Connected,
            OpenAfterConnect = hold?.OpenAfterConnect,
            OpenAtRelease = hold?.OpenAtRelease,
            ConnectFailures = hold?.Failures,
            ConnectSeconds = hold?.ConnectSeconds,
            Accepted = accepted,
            PerWorker = perWorker,
            Fairness = Jain(perWorker),
            AcceptWaitMs = Num(meta, "accept_wait_ms"),
            TotalPssKiBBefore = (long?)Num(meta, "before_total_pss_kb"),
            TotalPssKiBHolding = (long?)Num(meta, "holding_total_pss_kb"),
            TotalPssKiBAfterRelease = (long?)Num(meta, "released_total_pss_kb"),
            MasterPssKiBBefore = (long?)Num(meta, "before_master_pss_kb"),
            MasterPssKiBHolding = (long?)Num(meta, "holding_master_pss_kb"),
            Hold = hold,
        };
        if (idle.TotalPssKiBBefore is long b && idle.TotalPssKiBHolding is long h && accepted is > 0)
        {
            idle.PssKiBPerConnection = Math.Round((double)(h - b) / accepted.Value, 2);
        }

        return idle;
    }

    private static List<long> Longs(Dictionary<string, string> meta, string key) =>
        [.. meta.GetValueOrDefault(key, "").Split(' ', StringSplitOptions.RemoveEmptyEntries)
            .Select(t => long.TryParse(t, NumberStyles.Integer, Ci, out long v) ? v : 0)];

    /// <summary>Jain's index, (Σx)² / (n·Σx²); null without any value.</summary>
    private static double? Jain(List<long> x)
    {
        double sum = x.Sum(), sumSq = x.Sum(v => (double)v * v);
        return x.Count == 0 || sumSq == 0 ? null : Math.Round(sum * sum / (x.Count * sumSq), 5);
    }

    private static string ShortName(ScaleServer s) => ShortNames.GetValueOrDefault(s.Name, s.Label);

    private static string Rounds(int? n) => n == 1 ? "1 round" : $"{F(n, "0")} rounds";

    private static string MiB(long? kib) => kib is long k ? (k / 1024.0).ToString("0.0", Ci) : "—";

    private static string Failed(ScalePointServer p)
    {
        ServerSummary m = p.Medians;
        if (m.Failed is not long f)
        {
            return m.Status == "ok" ? "—" : Md(m.Status);
        }

        string kinds = string.Join(", ", (m.Failures ?? []).Where(kv => kv.Value > 0).Select(kv => $"{kv.Key} {kv.Value.ToString("N0", Ci)}"));
        return f == 0 ? "0" : $"{f.ToString("N0", Ci)} ({kinds})";
    }

    private static string Markdown(ScaleSummary sum, List<string> missing)
    {
        var sb = new StringBuilder();
        ScaleServer? baseServer = sum.Servers.Find(s => s.Name == sum.Baseline);
        string baseShort = baseServer is null ? sum.Baseline : ShortName(baseServer);
        sb.AppendLine("# Scaling: the generated server against the C server");
        sb.AppendLine();
        sb.AppendLine(Ci, $"Generated {sum.GeneratedAtUtc} by `bash bench/scale.sh`{(sum.Machine.Length > 0 ? " on " + Md(sum.Machine) : "")}. ");
        sb.AppendLine(Ci, $"**Every figure comes from a machine with {sum.Cores} cores**, which the servers, LoadGen and the kernel's TCP work for both share: conn/s is the throughput of the whole machine, and the curves say nothing of a machine with more cores. ");
        if (sum.Servers.Count > 0)
        {
            sb.AppendLine(Ci, $"Each point is one run of `bench/run.sh`: {Rounds(sum.Rounds)} of {F(sum.DurationSeconds, "0.###")} s, each round running every server once (fresh launch, alternating); a figure is the median over a server's runs at that point, and \"÷ {Md(baseShort)}\" is the median of the per-round ratios to {Md(baseShort)}. ");
        }

        if (sum.MachineSettings.Count > 0)
        {
            sb.AppendLine("Settings of the machine during the run: " + string.Join(", ", sum.MachineSettings.Select(kv => $"`{Md(kv.Key)}` {Md(kv.Value)}")) + ". ");
        }

        sb.AppendLine("Column meanings: bench/README.md (\"What the figures mean\", \"Scaling\"); every point's own report is in its folder (`points/…/results.md`).");
        sb.AppendLine();
        foreach (ScaleServer s in sum.Servers)
        {
            sb.AppendLine(Ci, $"- **{Md(ShortName(s))}**: {Md(s.Label)}{(s.Command is null ? "" : $"; at the first point: `{Md(s.Command)}`")}");
        }

        sb.AppendLine();
        ScaleSweep w = sum.WorkersSweep, c = sum.ClientsSweep;
        Metric conns = new("conn/s", p => F(p.Medians.ConnectionsPerSecond, "N0"));
        Metric cpuShare = new("server CPU share", p => F(p.Medians.ServerCpuShareOfMachine * 100, "0") + " %");
        Metric cpu = new("server CPU µs/conn", p => F(p.Medians.ServerCpuUsPerConnection, "0.0"));
        Metric clientCpu = new("LoadGen CPU µs/conn", p => F(p.Medians.ClientCpuUsPerConnection, "0.0"));
        Metric p99 = new("p99 µs", p => F(p.Medians.P99Us, "0"));
        Metric inFlight = new("in flight", p => F(p.ClientsInFlight, "0"));
        Metric run = new("run s", p => F(p.LoadGenElapsedSeconds, "0.0"));
        Metric failed = new("failed", Failed);
        const string Where = "Where the time goes (server CPU share: of all cores during the load; LoadGen: its own CPU per connection; in flight: clients inside a connection on average, conn/s × mean latency; run: LoadGen's wall time). " +
            "Server CPU is the time on CPU of every thread of the server (schedstat; bench/README.md, \"How CPU is measured\").";
        Section(sb, sum, w, $"Workers ({w.FixedValue} clients)", "![conn/s and server CPU per connection by worker count](scale-workers.png)",
            [conns, cpu, new("fairness", p => F(p.Medians.Fairness, "0.000")), new("startup ms", p => F(p.Medians.StartupMs, "0.0")),
                new("total PSS MiB, idle / loaded", p => $"{MiB(p.Medians.Idle?.TotalPssKiB)} / {MiB(p.Medians.Loaded?.TotalPssKiB)}"), failed],
            Where, [cpuShare, clientCpu, p99, inFlight, run]);
        Section(sb, sum, c, $"Clients ({c.FixedValue} workers)", "![conn/s and latency by client count](scale-clients.png)",
            [conns, new("p50 µs", p => F(p.Medians.P50Us, "0")), p99, failed],
            Where, [cpuShare, cpu, clientCpu, inFlight, new("max µs", p => F(p.Medians.MaxUs, "0")), run]);

        if (sum.Idle is IdleSummary idle)
        {
            Idle(sb, idle);
        }

        var notes = new List<string>();
        foreach (ScalePoint p in w.Points.Concat(c.Points).Distinct())
        {
            foreach ((ServerSummary s, double? elapsed) in p.Servers.Select(x => (x.Medians, x.LoadGenElapsedSeconds)))
            {
                ScaleServer? server = sum.Servers.Find(x => x.Name == s.Name);
                string where = string.Create(Ci, $"{p.Workers} workers, {p.Clients} clients, {Md(server is null ? s.Name : ShortName(server))}");
                if (s.Note is not null || s.Status != "ok")
                {
                    notes.Add(string.Create(Ci, $"{where}: {s.Status}, {s.RunCount} of {s.RunsAttempted} runs measured{(s.Note is null ? "" : "; " + Md(s.Note))}"));
                }

                // LoadGen starts one thread per client, and the time it takes is part of the run.
                if (elapsed is double e && sum.DurationSeconds is double d && e > d * 1.25)
                {
                    notes.Add(string.Create(Ci, $"{where}: LoadGen's runs lasted {e:0.0} s for {d:0.###} s asked: starting its {p.Clients} client threads took about {e - d:0.0} s, while fewer clients ran (see \"in flight\")"));
                }
            }
        }

        notes.AddRange(missing.Select(m => $"`{Md(m)}`: no results.json (the point did not finish); left out"));
        if (notes.Count > 0)
        {
            sb.AppendLine("## Notes");
            sb.AppendLine();
            foreach (string n in notes)
            {
                sb.AppendLine(Ci, $"- {n}");
            }

            sb.AppendLine();
        }

        return sb.ToString();
    }

    /// <summary>A sweep's section: its chart, its main table, the table of where the time goes, the changes of conn/s.</summary>
    private static void Section(StringBuilder sb, ScaleSummary sum, ScaleSweep sweep, string title, string chart,
        Metric[] main, string whereText, Metric[] where)
    {
        if (sweep.Points.Count == 0)
        {
            return;
        }

        sb.AppendLine(Ci, $"## {title}");
        sb.AppendLine();
        sb.AppendLine(chart);
        sb.AppendLine();
        Table(sb, sum, sweep, true, main);
        sb.AppendLine();
        sb.AppendLine(whereText);
        sb.AppendLine();
        Table(sb, sum, sweep, false, where);
        sb.AppendLine();
        Changes(sb, sum, sweep);
    }

    /// <summary>
    /// One row per point; per metric one column per server, side by side (with
    /// <paramref name="ratio"/>, each other server's ratio to the baseline after the first metric).
    /// </summary>
    private static void Table(StringBuilder sb, ScaleSummary sum, ScaleSweep sweep, bool ratio, params Metric[] metrics)
    {
        ScaleServer? baseServer = sum.Servers.Find(s => s.Name == sum.Baseline);
        string baseShort = baseServer is null ? sum.Baseline : ShortName(baseServer);
        var headers = new List<string> { sweep.Varies };
        var cells = new List<Func<ScalePoint, string>> { p => (sweep.Varies == "workers" ? p.Workers : p.Clients).ToString(Ci) };
        for (int m = 0; m < metrics.Length; m++)
        {
            Metric metric = metrics[m];
            foreach (ScaleServer s in sum.Servers)
            {
                headers.Add($"{ShortName(s)} {metric.Header}");
                cells.Add(p => Find(p, s) is ScalePointServer ps ? metric.Cell(ps) : "—");
            }

            if (ratio && m == 0)
            {
                foreach (ScaleServer s in sum.Servers.Where(s => s != baseServer))
                {
                    headers.Add($"{ShortName(s)} ÷ {baseShort}");
                    cells.Add(p => Find(p, s)?.Medians is ServerSummary ps
                        ? F(ps.RatioToBaseline, "0.00") + (ps.RatioToBaselineMin is double lo && ps.RatioToBaselineMax is double hi && hi > lo ? string.Create(Ci, $" ({lo:0.00}–{hi:0.00})") : "")
                        : "—");
                }
            }
        }

        sb.AppendLine("| " + string.Join(" | ", headers.Select(Md)) + " |");
        sb.AppendLine("|--:|" + string.Concat(Enumerable.Repeat("--:|", headers.Count - 1)));
        foreach (ScalePoint p in sweep.Points)
        {
            sb.AppendLine("| " + string.Join(" | ", cells.Select(cell => cell(p))) + " |");
        }
    }

    private static ScalePointServer? Find(ScalePoint p, ScaleServer s) => p.Servers.Find(x => x.Medians.Name == s.Name && x.Medians.Status != "skipped");

    /// <summary>Per server: how conn/s changed from each point to the next, and where it was highest.</summary>
    private static void Changes(StringBuilder sb, ScaleSummary sum, ScaleSweep sweep)
    {
        if (sweep.Points.Count < 2)
        {
            return;
        }

        sb.AppendLine(Ci, $"conn/s from one {sweep.Varies.TrimEnd('s')} count to the next:");
        sb.AppendLine();
        foreach (ScaleServer s in sum.Servers)
        {
            var steps = new List<string>();
            (int Key, double Cps)? best = null, previous = null;
            foreach (ScalePoint p in sweep.Points)
            {
                int key = sweep.Varies == "workers" ? p.Workers : p.Clients;
                if (Find(p, s)?.Medians.ConnectionsPerSecond is not double cps)
                {
                    previous = null;
                    continue;
                }

                if (previous is (int k0, double c0) && c0 > 0)
                {
                    steps.Add(string.Create(Ci, $"{k0} → {key}: {(cps / c0) - 1:+0%;-0%;0%}"));
                }

                if (best is null || cps > best.Value.Cps)
                {
                    best = (key, cps);
                }

                previous = (key, cps);
            }

            if (best is (int bk, double bc))
            {
                string unit = bk == 1 ? sweep.Varies.TrimEnd('s') : sweep.Varies;
                sb.AppendLine(Ci, $"- {Md(ShortName(s))}: {string.Join(", ", steps)}; highest at {bk} {unit} ({bc.ToString("N0", Ci)} conn/s)");
            }
        }

        sb.AppendLine();
    }

    private static void Idle(StringBuilder sb, IdleSummary idle)
    {
        sb.AppendLine(Ci, $"## Idle connections (`--handler echo`, {F(idle.Workers, "0")} workers)");
        sb.AppendLine();
        sb.AppendLine("LoadGen holds the connections open and sends nothing; the server's total PSS (master + workers) is read before, while it holds them, and after they closed. PSS counts the processes' memory only, not the kernel's socket memory.");
        sb.AppendLine();
        if (idle.Command is not null)
        {
            sb.AppendLine(Ci, $"Server: `{Md(idle.Command)}`");
            sb.AppendLine();
        }

        string Count(long? v) => F(v, "N0");
        sb.AppendLine("| figure | value |");
        sb.AppendLine("|---|--:|");
        sb.AppendLine(Ci, $"| status | {Md(idle.Status)}{(idle.Note is null ? "" : ": " + Md(idle.Note))} |");
        sb.AppendLine(Ci, $"| connections asked for | {Count(idle.Requested)} |");
        string failures = idle.ConnectFailures is null ? "" : string.Join(", ", idle.ConnectFailures.Where(kv => kv.Value > 0).Select(kv => $"{kv.Key} {kv.Value}"));
        sb.AppendLine(Ci, $"| connected (LoadGen) | {Count(idle.Connected)}{(failures.Length > 0 ? $" (failed: {failures})" : "")} in {F(idle.ConnectSeconds, "0.00")} s |");
        sb.AppendLine(Ci, $"| accepted and held by the workers | {Count(idle.Accepted)}, all within {F(idle.AcceptWaitMs, "N0")} ms of the start of the connects |");
        string spread = idle.PerWorker.Count == 0 ? "—" : string.Join(" / ", idle.PerWorker.Select(v => v.ToString("N0", Ci)));
        sb.AppendLine(Ci, $"| per worker | {spread} (Jain {F(idle.Fairness, "0.000")}) |");
        sb.AppendLine(Ci, $"| still open when released (LoadGen) | {Count(idle.OpenAtRelease)} |");
        sb.AppendLine(Ci, $"| total PSS before | {MiB(idle.TotalPssKiBBefore)} MiB |");
        sb.AppendLine(Ci, $"| total PSS holding them | {MiB(idle.TotalPssKiBHolding)} MiB (master {MiB(idle.MasterPssKiBHolding)}, before {MiB(idle.MasterPssKiBBefore)}) |");
        sb.AppendLine(Ci, $"| **PSS per held connection** | **{F(idle.PssKiBPerConnection, "0.00")} KiB** |");
        sb.AppendLine(Ci, $"| total PSS after they closed | {MiB(idle.TotalPssKiBAfterRelease)} MiB |");
        sb.AppendLine();
    }

    private static List<(string Label, ScottPlot.Color Color)> Legend(ScaleSummary sum) =>
        [.. sum.Servers.Select(s => (ShortName(s) == s.Label ? s.Label : $"{ShortName(s)}: {s.Label}", Color(sum, s)))];

    /// <summary>The baseline grey, the others blue (as in chart.png), then further colours in order.</summary>
    private static ScottPlot.Color Color(ScaleSummary sum, ScaleServer s)
    {
        int index = sum.Servers.Where(x => x.Name != sum.Baseline).ToList().IndexOf(s);
        return index < 0 ? Charts.BaselineColor : Charts.SeriesColors[index % Charts.SeriesColors.Length];
    }

    private static List<Charts.Series> Lines(ScaleSummary sum, ScaleSweep sweep, Func<ScalePointServer, double?> value, bool dashed = false) =>
        [.. sum.Servers.Select(s => new Charts.Series(Color(sum, s),
            [.. sweep.Points.Select(p => Find(p, s) is ScalePointServer ps ? value(ps) : null)], dashed))];

    private static string Subtitle(ScaleSummary sum, ScaleSweep sweep) => string.Create(Ci,
        $"{sweep.FixedValue} {sweep.Fixed}; {(sum.Rounds == 1 ? "1 run" : $"median of {F(sum.Rounds, "0")} alternating runs")} of {F(sum.DurationSeconds, "0.###")} s per server and point; {sum.Cores} cores shared with the load generator");

    private static void WorkersChart(string path, ScaleSummary sum)
    {
        ScaleSweep w = sum.WorkersSweep;
        if (w.Points.Count == 0)
        {
            Charts.SaveEmpty(path, "no worker points");
            return;
        }

        Charts.SaveLines(path, "Connections/s and server CPU per connection by worker count", Subtitle(sum, w), "workers",
            [.. w.Points.Select(p => p.Workers)], Legend(sum),
            new Charts.Panel("conn/s (higher is better)", false, Lines(sum, w, p => p.Medians.ConnectionsPerSecond)),
            new Charts.Panel("server CPU µs/conn (lower is better)", false, Lines(sum, w, p => p.Medians.ServerCpuUsPerConnection)));
    }

    private static void ClientsChart(string path, ScaleSummary sum)
    {
        ScaleSweep c = sum.ClientsSweep;
        if (c.Points.Count == 0)
        {
            Charts.SaveEmpty(path, "no client points");
            return;
        }

        Charts.SaveLines(path, "Connections/s and latency by client count", Subtitle(sum, c), "clients",
            [.. c.Points.Select(p => p.Clients)], Legend(sum),
            new Charts.Panel("conn/s (higher is better)", false, Lines(sum, c, p => p.Medians.ConnectionsPerSecond)),
            new Charts.Panel("latency µs (log): p99 solid, p50 dashed", true,
                [.. Lines(sum, c, p => p.Medians.P99Us), .. Lines(sum, c, p => p.Medians.P50Us, dashed: true)]));
    }
}
