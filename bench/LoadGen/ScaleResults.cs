using System.Text.Json.Serialization;

namespace LoadGen;

/// <summary>
/// bench/results/scale/scale.json: what <c>LoadGen scale-report</c> read from the points of a
/// bench/scale.sh run (each point one bench/run.sh invocation) and from its idle-connection test.
/// </summary>
internal sealed class ScaleSummary
{
    public string GeneratedAtUtc { get; set; } = "";
    public string Machine { get; set; } = "";
    public int Cores { get; set; }

    /// <summary>The server every ratio is taken against, per round within each point.</summary>
    public string Baseline { get; set; } = "";
    public double? DurationSeconds { get; set; }

    /// <summary>Rounds per point (every server runs once per round, alternating).</summary>
    public int? Rounds { get; set; }

    /// <summary>Every server measured, in the order of each round.</summary>
    public List<ScaleServer> Servers { get; set; } = [];

    /// <summary>Settings of the machine the script recorded (ephemeral port range, TIME_WAIT reuse, limits).</summary>
    public Dictionary<string, string> MachineSettings { get; set; } = [];

    /// <summary>Points with <see cref="ScaleSweep.FixedValue"/> clients, by worker count.</summary>
    public ScaleSweep WorkersSweep { get; set; } = new();

    /// <summary>Points with <see cref="ScaleSweep.FixedValue"/> workers, by client count.</summary>
    public ScaleSweep ClientsSweep { get; set; } = new();
    public IdleSummary? Idle { get; set; }
}

internal sealed class ScaleServer
{
    public string Name { get; set; } = "";
    public string Label { get; set; } = "";
    public string? Command { get; set; }
}

internal sealed class ScaleSweep
{
    /// <summary>What varies: "workers" or "clients".</summary>
    public string Varies { get; set; } = "";

    /// <summary>What stays fixed ("clients" or "workers") and its value.</summary>
    public string Fixed { get; set; } = "";
    public int FixedValue { get; set; }
    public List<ScalePoint> Points { get; set; } = [];
}

/// <summary>One bench/run.sh invocation: its workers, clients and every server's medians.</summary>
internal sealed class ScalePoint
{
    public int Workers { get; set; }
    public int Clients { get; set; }

    /// <summary>The point's folder (results.md, results.json, raw/), relative to scale.json.</summary>
    public string Dir { get; set; } = "";
    public int Rounds { get; set; }
    public List<ScalePointServer> Servers { get; set; } = [];
}

/// <summary>
/// One server at one point: bench/run.sh's medians for it there (its entry of the point's
/// results.json, without the runs, which stay in that file), and two figures derived from
/// its runs' LoadGen results.
/// </summary>
internal sealed class ScalePointServer
{
    public ServerSummary Medians { get; set; } = new();

    /// <summary>LoadGen's wall time per run (first connect to the end of the last connection), s.</summary>
    public double? LoadGenElapsedSeconds { get; set; }

    /// <summary>
    /// Clients in flight on average, by Little's law: conn/s × mean latency. Below the client
    /// count when clients spent time outside a connection (or had not started yet).
    /// </summary>
    public double? ClientsInFlight { get; set; }
}

/// <summary>
/// The idle-connection test: N connections held open, sending nothing, on the echo server;
/// the server's total PSS before, while holding them, and after they closed.
/// </summary>
internal sealed class IdleSummary
{
    public string Status { get; set; } = "";
    public string? Note { get; set; }
    public string? Command { get; set; }
    public int? Workers { get; set; }
    public long? Requested { get; set; }
    public long? Connected { get; set; }
    public long? OpenAfterConnect { get; set; }
    public long? OpenAtRelease { get; set; }
    public Dictionary<string, long>? ConnectFailures { get; set; }
    public double? ConnectSeconds { get; set; }

    /// <summary>Connections the server's workers hold (their socket descriptors, less those before).</summary>
    public long? Accepted { get; set; }

    /// <summary>Connections held by each worker, in the order of its pid.</summary>
    public List<long> PerWorker { get; set; } = [];

    /// <summary>Jain's index over <see cref="PerWorker"/>: 1 = every worker holds as many.</summary>
    public double? Fairness { get; set; }

    /// <summary>Launch of the hold client to the moment the workers held every connection, ms.</summary>
    public double? AcceptWaitMs { get; set; }

    /// <summary>Master + workers, KiB.</summary>
    public long? TotalPssKiBBefore { get; set; }
    public long? TotalPssKiBHolding { get; set; }
    public long? TotalPssKiBAfterRelease { get; set; }
    public long? MasterPssKiBBefore { get; set; }
    public long? MasterPssKiBHolding { get; set; }

    /// <summary>(holding − before) ÷ connections the workers held, KiB.</summary>
    public double? PssKiBPerConnection { get; set; }
    public HoldResult? Hold { get; set; }
}

/// <summary>Written by <c>LoadGen hold --json</c>.</summary>
internal sealed class HoldResult
{
    public string Host { get; set; } = "";
    public int Port { get; set; }
    public long Requested { get; set; }
    public long Connected { get; set; }
    public long Failed { get; set; }

    /// <summary>Failed connects by kind: refused, reset, timeout, no_local_port, other (as <c>run</c>'s).</summary>
    public Dictionary<string, long> Failures { get; set; } = [];
    public string? OtherErrorSample { get; set; }
    public double ConnectSeconds { get; set; }

    /// <summary>Connections still open (no EOF, no error) right after the last connect, and when released.</summary>
    public long OpenAfterConnect { get; set; }
    public long OpenAtRelease { get; set; }
    public double HeldSeconds { get; set; }

    /// <summary>RLIMIT_NOFILE's soft limit LoadGen ran with (after raising it to the hard limit).</summary>
    public long FileLimit { get; set; }
}

[JsonSourceGenerationOptions(
    WriteIndented = true,
    PropertyNamingPolicy = JsonKnownNamingPolicy.CamelCase,
    DefaultIgnoreCondition = JsonIgnoreCondition.Never)]
[JsonSerializable(typeof(ScaleSummary))]
[JsonSerializable(typeof(HoldResult))]
internal sealed partial class ScaleJsonContext : JsonSerializerContext;
