using System.Text.Json.Serialization;

namespace LoadGen;

/// <summary>Everything one LoadGen run measured; written with --json.</summary>
internal sealed class LoadResult
{
    public string Tool { get; set; } = "LoadGen";
    public string StartedAtUtc { get; set; } = "";
    public string Host { get; set; } = "";
    public int Port { get; set; }
    public string Mode { get; set; } = "";
    public int Concurrency { get; set; }
    public double? RequestedDurationSeconds { get; set; }
    public long? RequestedCount { get; set; }
    public int TimeoutMs { get; set; }
    public int? ExpectedWorkers { get; set; }

    /// <summary>Wall time from the first connect to the end of the last connection.</summary>
    public double ElapsedSeconds { get; set; }

    /// <summary>Connections attempted and finished (ok + failed).</summary>
    public long Connections { get; set; }
    public long Ok { get; set; }
    public long Failed { get; set; }

    /// <summary>Successful connections per second of <see cref="ElapsedSeconds"/>.</summary>
    public double ConnectionsPerSecond { get; set; }

    /// <summary>Failed connections by kind: refused, reset, timeout, short_read, no_local_port, other.</summary>
    public Dictionary<string, long> Failures { get; set; } = [];
    public string? OtherErrorSample { get; set; }

    /// <summary>Latency of successful connections, connect() start to EOF, in microseconds.</summary>
    public LatencySummary LatencyUs { get; set; } = new();

    /// <summary>Successful connections per worker pid (last token of the greeting line), by pid.</summary>
    public List<PidCount> PerPid { get; set; } = [];

    /// <summary>Successful connections whose greeting did not end in an integer pid.</summary>
    public long NoPid { get; set; }

    /// <summary>Number of workers the fairness index is computed over (pids seen, or --workers if larger).</summary>
    public int FairnessWorkers { get; set; }

    /// <summary>Jain's fairness index over connections per worker: 1 = perfectly even, 1/n = one worker got all.</summary>
    public double? Fairness { get; set; }

    public string? SampleGreeting { get; set; }

    /// <summary>CPU time used by LoadGen itself (user + system) during the run.</summary>
    public double ClientCpuSeconds { get; set; }
    public double ClientCpuUserSeconds { get; set; }
    public double ClientCpuSystemSeconds { get; set; }
    public double ClientCpuUsPerConnection { get; set; }
}

internal sealed class LatencySummary
{
    public double Min { get; set; }
    public double Mean { get; set; }
    public double P50 { get; set; }
    public double P90 { get; set; }
    public double P99 { get; set; }
    public double P999 { get; set; }
    public double Max { get; set; }
}

internal sealed class PidCount
{
    public int Pid { get; set; }
    public long Connections { get; set; }
}

/// <summary>
/// bench/results/results.json: one entry per server of a bench/run.sh invocation. The
/// servers ran in <see cref="Rounds"/> rounds, each round running every server once in
/// <see cref="Order"/>.
/// </summary>
internal sealed class BenchSummary
{
    public string GeneratedAtUtc { get; set; } = "";
    public string Machine { get; set; } = "";
    public int Cores { get; set; }
    public string Baseline { get; set; } = "";
    public double? DurationSeconds { get; set; }
    public int? Workers { get; set; }
    public int? Concurrency { get; set; }

    /// <summary>Number of rounds (runs per server that was not skipped).</summary>
    public int Rounds { get; set; }

    /// <summary>Server names in the order every round ran them.</summary>
    public List<string> Order { get; set; } = [];

    /// <summary>How the per-server figures are derived from the runs.</summary>
    public string Aggregation { get; set; } =
        "median over the server's successful runs (even count: mean of the two middle values); " +
        "ratioToBaseline: median over rounds of (run's conn/s / the baseline's conn/s in the same round); " +
        "failed and failures: sums over all runs";

    public List<ServerSummary> Servers { get; set; } = [];
}

/// <summary>
/// One server: the median over its successful runs of every per-run figure (see
/// <see cref="RunSummary"/>), the min/max of conn/s and of the ratio, failures summed over
/// all runs, and every run in <see cref="Runs"/>.
/// </summary>
internal sealed class ServerSummary
{
    public string Name { get; set; } = "";
    public string Label { get; set; } = "";

    /// <summary>ok (at least one run succeeded), failed (none did, see note), or skipped (runtime missing).</summary>
    public string Status { get; set; } = "";

    /// <summary>The runs' notes, prefixed with their run numbers.</summary>
    public string? Note { get; set; }
    public string? Command { get; set; }
    public int? Workers { get; set; }

    /// <summary>Runs that succeeded: the medians are taken over these.</summary>
    public int RunCount { get; set; }

    /// <summary>Runs launched (successful or not).</summary>
    public int RunsAttempted { get; set; }
    public double? ConnectionsPerSecond { get; set; }
    public double? ConnectionsPerSecondMin { get; set; }
    public double? ConnectionsPerSecondMax { get; set; }

    /// <summary>Median over rounds of this server's conn/s ÷ the baseline's conn/s in the same round.</summary>
    public double? RatioToBaseline { get; set; }
    public double? RatioToBaselineMin { get; set; }
    public double? RatioToBaselineMax { get; set; }

    /// <summary>Rounds in which both this server and the baseline succeeded (the ratios' count).</summary>
    public int RatioRounds { get; set; }

    /// <summary>Server CPU (user+system, master and all descendants) per successful connection, µs.</summary>
    public double? ServerCpuUsPerConnection { get; set; }

    /// <summary>Server CPU time during the load as a share of all cores (1.0 = every core busy).</summary>
    public double? ServerCpuShareOfMachine { get; set; }
    public double? ServerCpuSeconds { get; set; }
    public double? Fairness { get; set; }
    public double? P50Us { get; set; }
    public double? P99Us { get; set; }
    public double? MaxUs { get; set; }

    /// <summary>Launch to the server's ready line, milliseconds.</summary>
    public double? StartupMs { get; set; }
    public MemorySnapshot? Idle { get; set; }
    public MemorySnapshot? Loaded { get; set; }

    /// <summary>Connections made in one run (median).</summary>
    public long? Connections { get; set; }
    public double? PidsSeen { get; set; }
    public double? ClientCpuUsPerConnection { get; set; }
    public double? ClientCpuUserUsPerConnection { get; set; }
    public double? ClientCpuSystemUsPerConnection { get; set; }

    /// <summary>Failed connections, summed over all runs.</summary>
    public long? Failed { get; set; }

    /// <summary>Failed connections by kind, summed over all runs.</summary>
    public Dictionary<string, long>? Failures { get; set; }
    public List<RunSummary> Runs { get; set; } = [];
}

/// <summary>One launch of one server: bench/results/raw/SERVER/run-K.</summary>
internal sealed class RunSummary
{
    /// <summary>Round number, 1-based.</summary>
    public int Run { get; set; }

    /// <summary>ok, failed (something went wrong, see note), or skipped (runtime missing).</summary>
    public string Status { get; set; } = "";
    public string? Note { get; set; }
    public string? Command { get; set; }
    public int? Workers { get; set; }
    public double? ConnectionsPerSecond { get; set; }

    /// <summary>conn/s ÷ the baseline's conn/s in the same round.</summary>
    public double? RatioToBaseline { get; set; }
    public double? ServerCpuUsPerConnection { get; set; }
    public double? ServerCpuShareOfMachine { get; set; }
    public double? ServerCpuSeconds { get; set; }
    public double? Fairness { get; set; }
    public double? P50Us { get; set; }
    public double? P99Us { get; set; }
    public double? MaxUs { get; set; }
    public double? StartupMs { get; set; }
    public MemorySnapshot? Idle { get; set; }
    public MemorySnapshot? Loaded { get; set; }
    public long? Connections { get; set; }
    public long? Failed { get; set; }
    public Dictionary<string, long>? Failures { get; set; }
    public int? LoadGenExitCode { get; set; }
    public int? ServerExitCode { get; set; }
    public LoadResult? LoadGen { get; set; }
}

/// <summary>PSS/RSS from /proc/PID/smaps_rollup, in KiB.</summary>
internal sealed class MemorySnapshot
{
    public int WorkerProcesses { get; set; }
    public double? PssKiBPerWorker { get; set; }
    public double? RssKiBPerWorker { get; set; }
    public long? MasterPssKiB { get; set; }
    public long? MasterRssKiB { get; set; }
    public long? TotalPssKiB { get; set; }
    public long? TotalRssKiB { get; set; }
}

[JsonSourceGenerationOptions(
    WriteIndented = true,
    PropertyNamingPolicy = JsonKnownNamingPolicy.CamelCase,
    DefaultIgnoreCondition = JsonIgnoreCondition.Never)]
[JsonSerializable(typeof(LoadResult))]
[JsonSerializable(typeof(BenchSummary))]
internal sealed partial class BenchJsonContext : JsonSerializerContext;
