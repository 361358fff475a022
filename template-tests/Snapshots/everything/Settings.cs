namespace My.Server_2;

using System;
using System.Collections;
using System.Collections.Generic;
using System.Globalization;
using System.Linq;
using System.Net;
using System.Reflection;
using System.Text;

/// <summary>A bad option or value; the message names the option and what it accepts, on one printable line.</summary>
public sealed class UsageException(string message) : Exception(Settings.Printable(message));

/// <summary>
/// The server's settings. Each one comes from, in order of precedence: the command line
/// (<c>--workers 8</c> or <c>--workers=8</c>), the environment (<c>PREFORK_WORKERS=8</c>),
/// and the default below, which <c>dotnet new prefork-server</c> wrote from its parameters.
/// The master hands its final settings to its workers through the same environment variables.
/// </summary>
public sealed class Settings
{
    public const int DefaultWorkers = 3;
    public const int DefaultPort = 8080;
    public const string DefaultSignals = "INT,QUIT,TERM,HUP,TTIN,TTOU,USR1,USR2";

    /// <summary>
    /// The greeting when neither --greeting nor PREFORK_GREETING says otherwise. {pid} becomes
    /// the worker's process id, {worker} its index (0 to workers-1): <see cref="GreetingFor"/>.
    /// </summary>
    public const string DefaultGreeting = "Hello from {pid}";

    public int Workers { get; private set; } = DefaultWorkers;
    public IPAddress Host { get; private set; } = IPAddress.Any;
    public int Port { get; private set; } = DefaultPort;
    public string Greeting { get; private set; } = DefaultGreeting;
    public int Backlog { get; private set; } = 1024;
    public int DeferAccept { get; private set; } = 1;
    public int MaxConnections { get; private set; } = 1000;
    public TimeSpan ShutdownTimeout { get; private set; } = TimeSpan.FromSeconds(30);
    public TimeSpan WriteTimeout { get; private set; } = TimeSpan.FromSeconds(10);
    public TimeSpan IdleTimeout { get; private set; } = TimeSpan.FromSeconds(60);
    public IReadOnlyList<string> Signals { get; private set; } = ParseSignals(DefaultSignals);
    public TimeSpan WorkerTimeout { get; private set; } = TimeSpan.FromSeconds(30);
    public int MaxConnectionsPerWorker { get; private set; }
    public int MaxConnectionsJitter { get; private set; }
    public TimeSpan UpgradeTimeout { get; private set; } = TimeSpan.FromSeconds(60);
    public string PidFile { get; private set; } = "";
    public string ConfigFile { get; private set; } = "";
    public IPEndPoint? Metrics { get; private set; }
    public string Certificate { get; private set; } = "";
    public string CertificateKey { get; private set; } = "";
    public string Protocols { get; private set; } = "Http1AndHttp2";

    public bool ShowHelp { get; private set; }
    public bool ShowVersion { get; private set; }

    private sealed record Option(string Name, string Help, Action<Settings, string> Set, Func<Settings, string> Get)
    {
        public string Variable => "PREFORK_" + Name.ToUpperInvariant().Replace('-', '_');
    }

    private static readonly Option[] Options =
    [
        new("workers", "number of worker processes, 1 to 1024",
            (s, v) => s.Workers = Int("workers", v, 1, 1024), s => Str(s.Workers)),
        new("host", "IP address to listen on, e.g. 0.0.0.0, 127.0.0.1, ::",
            (s, v) => s.Host = Address(v), s => s.Host.ToString()),
        new("port", "TCP port to listen on, 0 to 65535 (0: any free port, logged)",
            (s, v) => s.Port = Int("port", v, 0, 65535), s => Str(s.Port)),
        new("greeting", "text sent to each client, then a newline; {pid} and {worker} are replaced; at most 16384 bytes of UTF-8",
            (s, v) => s.Greeting = Bounded(v, MaxGreetingBytes, "a greeting"), s => s.Greeting),
        new("backlog", "length of the kernel's queue of connections not yet accepted, 1 to 65535",
            (s, v) => s.Backlog = Int("backlog", v, 1, 65535), s => Str(s.Backlog)),
        new("defer-accept", "seconds the kernel holds a new connection until the client's first bytes arrive, before a worker accepts it (TCP_DEFER_ACCEPT; only for a handler that waits for the client to speak first), 0 (off) to 600",
            (s, v) => s.DeferAccept = Int("defer-accept", v, 0, 600), s => Str(s.DeferAccept)),
        new("max-connections", "connections one worker serves at once, 1 to 100000; a full worker stops accepting (in place of Kestrel's MaxConcurrentConnections, which would accept, then close)",
            (s, v) => s.MaxConnections = Int("max-connections", v, 1, 100_000), s => Str(s.MaxConnections)),
        new("shutdown-timeout", "seconds a graceful stop may take before workers are killed, 0 to 3600",
            (s, v) => s.ShutdownTimeout = TimeSpan.FromSeconds(Int("shutdown-timeout", v, 0, 3600)), s => Str((int)s.ShutdownTimeout.TotalSeconds)),
        // 2 at least: Kestrel checks the data rates once a second and takes only a grace period
        // longer than that; a worker given 1 would fail to start.
        new("write-timeout", "seconds a client has to send a request's headers, and the grace before a request or response body slower than 240 bytes/s is cut (Kestrel's RequestHeadersTimeout and minimum data rates), 2 to 3600",
            (s, v) => s.WriteTimeout = TimeSpan.FromSeconds(Int("write-timeout", v, 2, 3600)), s => Str((int)s.WriteTimeout.TotalSeconds)),
        new("idle-timeout", "seconds a kept-alive connection may wait for the client's next request before it is closed (Kestrel's KeepAliveTimeout), 1 to 3600",
            (s, v) => s.IdleTimeout = TimeSpan.FromSeconds(Int("idle-timeout", v, 1, 3600)), s => Str((int)s.IdleTimeout.TotalSeconds)),
        new("certificate", "TLS: the certificate file (PEM, or PKCS#12 without a password), read again on HUP; empty: plain HTTP",
            (s, v) => s.Certificate = Bounded(v, MaxPathBytes, "a path"), s => s.Certificate),
        new("certificate-key", "TLS: the private key file (PEM) of --certificate; empty: the key is in the certificate's file",
            (s, v) => s.CertificateKey = Bounded(v, MaxPathBytes, "a path"), s => s.CertificateKey),
        new("protocols", "HTTP versions, as Kestrel names them: Http1, Http2 or Http1AndHttp2 (with --certificate the client picks by ALPN; without, Http1AndHttp2 is HTTP/1.1 and Http2 is HTTP/2 for clients that know in advance, h2c)",
            (s, v) => s.Protocols = OneOf(v, "Http1", "Http2", "Http1AndHttp2"), s => s.Protocols),
        new("signals", "signals the server acts on, comma-separated, from " + string.Join(",", Posix.Signals.Keys),
            (s, v) => s.Signals = ParseSignals(v), s => string.Join(",", s.Signals)),
        new("worker-timeout", "seconds a worker may go without a heartbeat (sent through its thread pool: handlers that block every thread stop it) before it is killed and replaced, 2 to 3600",
            (s, v) => s.WorkerTimeout = TimeSpan.FromSeconds(Int("worker-timeout", v, 2, 3600)), s => Str((int)s.WorkerTimeout.TotalSeconds)),
        new("max-connections-per-worker", "a worker that has accepted this many is replaced, 0 (never) to 1000000000",
            (s, v) => s.MaxConnectionsPerWorker = Int("max-connections-per-worker", v, 0, 1_000_000_000), s => Str(s.MaxConnectionsPerWorker)),
        new("max-connections-jitter", "a random 0 to this many is added to each worker's limit, so they are not replaced all at once, 0 to 1000000000",
            (s, v) => s.MaxConnectionsJitter = Int("max-connections-jitter", v, 0, 1_000_000_000), s => Str(s.MaxConnectionsJitter)),
        new("upgrade-timeout", "seconds a new master (USR2) has to get all its workers ready, 1 to 3600",
            (s, v) => s.UpgradeTimeout = TimeSpan.FromSeconds(Int("upgrade-timeout", v, 1, 3600)), s => Str((int)s.UpgradeTimeout.TotalSeconds)),
        new("pid-file", "file the master writes its pid to; empty: none",
            (s, v) => s.PidFile = Bounded(v, MaxPathBytes, "a path"), s => s.PidFile),
        new("config", "file of name = value lines for these options, read at start and again on HUP; empty: none",
            (s, v) => s.ConfigFile = v, s => s.ConfigFile),
        new("metrics", "IPV4:PORT where the master serves /metrics, /healthz, /readyz and /status over HTTP (docs/metrics.md), e.g. 127.0.0.1:9100 or 0.0.0.0:9100; empty: none",
            (s, v) => s.Metrics = MetricsAddress(v), s => s.Metrics?.ToString() ?? ""),
    ];

    /// <summary>The greeting as worker <paramref name="workerIndex"/> sends it: {pid} and {worker} filled in.</summary>
    public string GreetingFor(int workerIndex) => Greeting
        .Replace("{pid}", Environment.ProcessId.ToString(CultureInfo.InvariantCulture), StringComparison.Ordinal)
        .Replace("{worker}", workerIndex.ToString(CultureInfo.InvariantCulture), StringComparison.Ordinal);

    /// <summary>The options a running master cannot change on HUP: the socket is already bound.</summary>
    public static readonly string[] FixedOnReload = ["host", "port", "backlog", "defer-accept", "signals", "config", "pid-file", "metrics"];

    /// <summary>Names of the options whose values differ between two settings.</summary>
    public IEnumerable<string> Differences(Settings other) =>
        Options.Where(o => o.Get(this) != o.Get(other)).Select(o => o.Name);

    /// <summary>A copy of <paramref name="reloaded"/> that keeps this one's values for <see cref="FixedOnReload"/>.</summary>
    public Settings KeepFixed(Settings reloaded)
    {
        var merged = new Settings();
        foreach (Option option in Options)
            option.Set(merged, option.Get(FixedOnReload.Contains(option.Name) ? this : reloaded));
        return merged;
    }

    /// <summary>
    /// Reads the defaults, the --config file, the environment, then the command line (each
    /// overrides the one before). Throws <see cref="UsageException"/>.
    /// </summary>
    public static Settings Parse(IReadOnlyList<string> args, IDictionary environment)
    {
        var settings = new Settings();
        foreach (Option option in Options)
        {
            // The defaults come from the template's parameters: check them like any other value.
            try { option.Set(settings, option.Get(settings)); }
            catch (UsageException e) { throw new UsageException($"the default of --{option.Name} in Settings.cs: {e.Message}"); }
        }

        string? config = ConfigPath(args) ?? environment["PREFORK_CONFIG"] as string;
        if (!string.IsNullOrEmpty(config)) ReadConfig(settings, config);

        foreach (Option option in Options)
        {
            if (environment[option.Variable] is string value)
            {
                try { option.Set(settings, value); }
                catch (UsageException e) { throw new UsageException($"{option.Variable}: {e.Message}"); }
            }
        }

        for (int i = 0; i < args.Count; i++)
        {
            string arg = args[i];
            if (arg is "-h" or "--help") { settings.ShowHelp = true; continue; }
            if (arg is "--version") { settings.ShowVersion = true; continue; }

            string name = arg, value;
            int equals = arg.IndexOf('=');
            if (equals > 0) name = arg[..equals];
            Option? option = name.StartsWith("--", StringComparison.Ordinal)
                ? Options.FirstOrDefault(o => o.Name == name[2..])
                : null;
            if (option is null)
                throw new UsageException($"unknown option '{name}' (see --help)");
            if (equals > 0) value = arg[(equals + 1)..];
            else if (i + 1 < args.Count) value = args[++i];
            else throw new UsageException($"--{option.Name} needs a value: {option.Help}");
            try { option.Set(settings, value); }
            catch (UsageException e) { throw new UsageException($"--{option.Name}: {e.Message}"); }
        }
        // A certificate the workers could not load is refused here: at start (exit code 2) and
        // on HUP (the running workers keep serving).
        Https.Load(settings)?.Dispose();
        return settings;
    }

    /// <summary>Writes these settings as the environment variables that <see cref="Parse"/> reads.</summary>
    public void WriteTo(IDictionary<string, string?> environment)
    {
        // Workers take the master's final values; they need not read the --config file again.
        foreach (Option option in Options) environment[option.Variable] = option.Name == "config" ? "" : option.Get(this);
    }

    private static string? ConfigPath(IReadOnlyList<string> args)
    {
        string? path = null;
        for (int i = 0; i < args.Count; i++)
        {
            if (args[i] == "--config" && i + 1 < args.Count) path = args[i + 1];
            else if (args[i].StartsWith("--config=", StringComparison.Ordinal)) path = args[i]["--config=".Length..];
        }
        return path;
    }

    /// <summary>Reads <c>name = value</c> lines; blank lines and lines starting with # are skipped.</summary>
    private static void ReadConfig(Settings settings, string path)
    {
        string[] lines;
        try
        {
            // Only a regular file of a sane size: a FIFO would block the start (or a HUP) until
            // something writes to it, and /dev/zero would never end.
            var file = new System.IO.FileInfo(path);
            if (System.IO.Directory.Exists(path))
                throw new UsageException($"--config: '{path}' is a directory");
            if (!file.Exists)
                throw new UsageException($"--config: '{path}' does not exist");
            if (!Posix.IsRegularFile(path))
                throw new UsageException($"--config: '{path}' is not a regular file");
            if (file.Length > MaxConfigBytes)
                throw new UsageException($"--config: '{path}' is {file.Length} bytes, more than a configuration file of {MaxConfigBytes}");
            lines = System.IO.File.ReadAllLines(path);
        }
        catch (Exception e) when (e is System.IO.IOException or UnauthorizedAccessException)
        {
            throw new UsageException($"--config: cannot read '{path}': {e.Message}");
        }
        for (int n = 0; n < lines.Length; n++)
        {
            string line = lines[n].Trim();
            if (line.Length == 0 || line.StartsWith('#')) continue;
            int equals = line.IndexOf('=');
            string name = equals > 0 ? line[..equals].Trim() : line;
            Option? option = Options.FirstOrDefault(o => o.Name == name && o.Name != "config");
            if (equals <= 0 || option is null)
                throw new UsageException($"{path}:{n + 1}: expected 'name = value' with a name from --help, not '{(line.Length > 200 ? line[..200] + "..." : line)}'");
            try { option.Set(settings, line[(equals + 1)..].Trim()); }
            catch (UsageException e) { throw new UsageException($"{path}:{n + 1}: {option.Name}: {e.Message}"); }
        }
    }

    private const int MaxConfigBytes = 1 << 20;

    // The master hands its settings to each worker in environment variables (PREFORK_*), and
    // the kernel refuses to start a program with one longer than 128 KiB (E2BIG): no value may
    // come near that, so that a worker can always be started with what the master accepted.
    private const int MaxGreetingBytes = 16 * 1024;
    private const int MaxPathBytes = 4096; // PATH_MAX

    private static string Bounded(string value, int maxBytes, string what)
    {
        int bytes = Encoding.UTF8.GetByteCount(value);
        if (bytes > maxBytes)
            throw new UsageException($"{bytes} bytes of UTF-8, more than {what} may have ({maxBytes})");
        return value;
    }

    /// <summary>Text as it can go into one log line: control characters (NUL, newline, escape) written as \xNN.</summary>
    internal static string Printable(string text)
    {
        var printable = new StringBuilder();
        foreach (char c in text) printable.Append(char.IsControl(c) ? $"\\x{(int)c:x2}" : c);
        return printable.ToString();
    }

    public static string Help(string program)
    {
        var text = new StringBuilder();
        text.AppendLine($"Usage: {program} [options]");
        text.AppendLine($"       {program} status [options]   the running pool, asked at its --metrics address");
        text.AppendLine();
        text.AppendLine("A prefork TCP server: one master process, one listening socket, N worker processes.");
        text.AppendLine();
        text.AppendLine("Options (each can also be set by the environment variable shown):");
        var defaults = new Settings();
        foreach (Option option in Options)
        {
            text.AppendLine($"  --{option.Name} <value>".PadRight(39) + $" {option.Variable}");
            string value = option.Get(defaults);
            text.AppendLine($"      {option.Help} (default: {(value.Length == 0 ? "empty" : value)})");
        }
        text.AppendLine("  -h, --help".PadRight(40) + "show this help");
        text.AppendLine("  --version".PadRight(40) + "show the version");
        text.AppendLine();
        text.AppendLine("Signals to the master (the ones --signals lists): INT quick stop; QUIT, TERM graceful");
        text.AppendLine("stop; HUP reload the configuration and replace the workers; TTIN, TTOU one worker");
        text.AppendLine("more, one fewer; USR1 log statistics; USR2 upgrade to the program on disk.");
        text.AppendLine();
        text.AppendLine("Exit codes: 0 stopped as asked, 1 unexpected error, 2 bad option,");
        text.AppendLine("3 cannot listen on the address, 4 no worker could start, 5 (worker) bad inherited socket,");
        text.AppendLine("6 (status) no server answers at the --metrics address.");
        return text.ToString();
    }

    public static string Version() =>
        typeof(Settings).Assembly.GetCustomAttribute<AssemblyInformationalVersionAttribute>()?.InformationalVersion ?? "unknown";

    private static string Str(int value) => value.ToString(CultureInfo.InvariantCulture);

    private static int Int(string name, string value, int min, int max)
    {
        if (int.TryParse(value, NumberStyles.None, CultureInfo.InvariantCulture, out int result) && result >= min && result <= max)
            return result;
        throw new UsageException($"'{value}' is not a whole number from {min} to {max}");
    }

    private static string OneOf(string value, params string[] choices) =>
        Array.Find(choices, c => c.Equals(value, StringComparison.OrdinalIgnoreCase))
        ?? throw new UsageException($"'{value}' is not one of {string.Join(", ", choices)}");

    private static IPAddress Address(string value)
    {
        if (value == "localhost") return IPAddress.Loopback;
        if (IPAddress.TryParse(value, out IPAddress? address)) return address;
        throw new UsageException($"'{value}' is not an IP address (such as 0.0.0.0, 127.0.0.1 or ::)");
    }

    private static IPEndPoint? MetricsAddress(string value)
    {
        if (value.Length == 0) return null;
        // IPv4 only: the base library's HttpListener that serves it takes no IPv6 address.
        if (IPEndPoint.TryParse(value, out IPEndPoint? address) && address.Port is > 0 and <= 65535 && value.Contains(':')
            && address.AddressFamily == System.Net.Sockets.AddressFamily.InterNetwork)
            return address;
        throw new UsageException($"'{value}' is not IPV4:PORT with a port from 1 to 65535 (such as 127.0.0.1:9100 or 0.0.0.0:9100)");
    }

    private static IReadOnlyList<string> ParseSignals(string value)
    {
        var signals = new List<string>();
        foreach (string part in value.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            string signal = part.ToUpperInvariant();
            if (signal.StartsWith("SIG", StringComparison.Ordinal)) signal = signal[3..];
            if (!Posix.Signals.ContainsKey(signal))
                throw new UsageException($"'{part}' is not one of {string.Join(", ", Posix.Signals.Keys)}");
            if (!signals.Contains(signal)) signals.Add(signal);
        }
        return signals;
    }
}
