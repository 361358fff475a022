using System.Collections.Concurrent;
using System.Diagnostics;
using System.Globalization;
using System.Text.RegularExpressions;
using Mono.Unix.Native;

namespace PreforkTemplates.Tests.Infrastructure;

/// <summary>
/// A generated server, started the way a shell script starts one: bash runs it in the
/// background with <c>&amp;</c>, which hands it INT and QUIT already ignored. <c>setsid</c>
/// gives it a process group of its own, so a signal to the group reaches the master and
/// every worker at once, as Ctrl+C does in a terminal. Disposing it kills, by pid, whatever
/// of it is still running.
/// </summary>
public sealed partial class ServerProcess : IDisposable
{
    private readonly Process shell;
    private readonly ConcurrentQueue<string> log = new();
    private readonly HashSet<int> workerPids = [];
    private readonly HashSet<int> masterPids = [];
    private readonly object gate = new();
    private readonly Thread? tail;
    private volatile bool stopTail;

    /// <summary>The process the shell started (the master, or `dotnet run` above it), leader of its group.</summary>
    public int Pid { get; }
    public int MasterPid { get; private set; }
    public int Port { get; private set; }

    private ServerProcess(IReadOnlyList<string> command, IDictionary<string, string>? environment, string? stderrFile = null)
    {
        var start = new ProcessStartInfo("/bin/bash")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            RedirectStandardInput = true,
            UseShellExecute = false,
        };
        start.ArgumentList.Add("-c");
        if (stderrFile is null)
        {
            start.ArgumentList.Add("setsid \"$@\" & echo $!; wait $!");
            start.ArgumentList.Add("server");
        }
        else
        {
            // The server's standard error goes to the file (appended), which is read as the log.
            start.ArgumentList.Add("log=$1; shift; setsid \"$@\" 2>>\"$log\" & echo $!; wait $!");
            start.ArgumentList.Add("server");
            start.ArgumentList.Add(stderrFile);
        }
        foreach (string arg in command) start.ArgumentList.Add(arg);
        start.Environment["DOTNET_CLI_TELEMETRY_OPTOUT"] = "1";
        start.Environment["DOTNET_NOLOGO"] = "1";
        foreach (string key in start.Environment.Keys.Where(k => k.StartsWith("PREFORK_", StringComparison.Ordinal)).ToList())
            start.Environment.Remove(key);
        if (environment is not null)
            foreach (var (key, value) in environment) start.Environment[key] = value;

        shell = Process.Start(start)!;
        shell.StandardInput.Close();
        shell.ErrorDataReceived += (_, e) => { if (e.Data is not null) OnLog(e.Data); };
        shell.BeginErrorReadLine();
        string? first = shell.StandardOutput.ReadLine();
        if (!int.TryParse(first, out int pid)) throw new InvalidOperationException($"the shell did not print the server's pid: '{first}'");
        Pid = pid;
        if (stderrFile is not null)
        {
            tail = new Thread(() => Tail(stderrFile)) { IsBackground = true, Name = "server log" };
            tail.Start();
        }
    }

    /// <summary>
    /// Starts a command whose standard error goes to <paramref name="stderrFile"/> instead of a
    /// pipe (a file on a disk that may fill up); the file's lines are the log, read as they come
    /// (the file may be truncated meanwhile: it is then read again from its start).
    /// </summary>
    public static ServerProcess StartLoggingTo(string stderrFile, IReadOnlyList<string> command, IDictionary<string, string>? environment = null) =>
        new(command, environment, stderrFile);

    private void Tail(string file)
    {
        long position = 0;
        var partial = new List<byte>();
        var chunk = new byte[8192];
        while (!stopTail)
        {
            try
            {
                using var stream = new FileStream(file, FileMode.Open, FileAccess.Read, FileShare.ReadWrite | FileShare.Delete);
                if (stream.Length < position)
                {
                    position = 0;
                    partial.Clear();
                }
                stream.Position = position;
                int n;
                while ((n = stream.Read(chunk, 0, chunk.Length)) > 0)
                {
                    position += n;
                    for (int i = 0; i < n; i++)
                    {
                        if (chunk[i] != (byte)'\n') { partial.Add(chunk[i]); continue; }
                        OnLog(System.Text.Encoding.UTF8.GetString([.. partial]));
                        partial.Clear();
                    }
                }
            }
            catch (IOException) { }
            Thread.Sleep(20);
        }
    }

    public static ServerProcess Start(string projectDir, params string[] args) =>
        StartWith(projectDir, StartMode.AppHost, null, args);

    /// <summary>Starts any command line, e.g. a published binary.</summary>
    public static ServerProcess StartCommand(IReadOnlyList<string> command, IDictionary<string, string>? environment = null) =>
        new(command, environment);

    public static ServerProcess StartWith(string projectDir, StartMode mode, IDictionary<string, string>? environment, params string[] args)
    {
        string name = Path.GetFileNameWithoutExtension(Directory.GetFiles(projectDir, "*.csproj").Single());
        string output = OutputOf(projectDir);
        string[] command = mode switch
        {
            StartMode.AppHost => [Path.Combine(output, name)],
            StartMode.DotnetDll => ["dotnet", Path.Combine(output, name + ".dll")],
            StartMode.DotnetRun => ["dotnet", "run", "--no-build", "-c", Path.GetFileName(Path.GetDirectoryName(output))!, "--project", projectDir, "--"],
            _ => throw new ArgumentOutOfRangeException(nameof(mode)),
        };
        return new ServerProcess([.. command, .. args], environment);
    }

    /// <summary>Where the fixture built a project: Release for the behaviour project, Debug for the scenarios.</summary>
    public static string OutputOf(string projectDir)
    {
        string release = Path.Combine(projectDir, "bin", "Release", "net10.0");
        return Directory.Exists(release) ? release : Path.Combine(projectDir, "bin", "Debug", "net10.0");
    }

    /// <summary>The built program of a project (its apphost).</summary>
    public static string ProgramOf(string projectDir) =>
        Path.Combine(OutputOf(projectDir), Path.GetFileNameWithoutExtension(Directory.GetFiles(projectDir, "*.csproj").Single()));

    public IReadOnlyList<string> Log => log.ToArray();
    public string LogText => string.Join('\n', log);

    private void OnLog(string line)
    {
        log.Enqueue(line);
        Match listening = ListeningLine().Match(line);
        if (listening.Success && MasterPid == 0)
        {
            MasterPid = int.Parse(listening.Groups[1].Value, CultureInfo.InvariantCulture);
            Port = int.Parse(listening.Groups[2].Value, CultureInfo.InvariantCulture);
        }
        Match master = MasterLine().Match(line);
        if (master.Success)
            lock (gate) masterPids.Add(int.Parse(master.Groups[1].Value, CultureInfo.InvariantCulture));
        Match started = StartedLine().Match(line);
        if (started.Success)
            lock (gate) workerPids.Add(int.Parse(started.Groups[1].Value, CultureInfo.InvariantCulture));
    }

    [GeneratedRegex(@"^\[master (\d+)\] listening on .*?:(\d+)[ ,]")]
    private static partial Regex ListeningLine();

    [GeneratedRegex(@"^\[master (\d+)\]")]
    private static partial Regex MasterLine();

    [GeneratedRegex(@"\(pid (\d+)\) started")]
    private static partial Regex StartedLine();

    /// <summary>Waits until a log line contains <paramref name="text"/>; fails with the whole log if it never does.</summary>
    public void WaitForLog(string text, TimeSpan? timeout = null, int count = 1)
    {
        var limit = Stopwatch.StartNew();
        while (log.Count(l => l.Contains(text, StringComparison.Ordinal)) < count)
        {
            if (limit.Elapsed > (timeout ?? TimeSpan.FromSeconds(30)))
                throw new TimeoutException($"no log line with '{text}' (x{count}) within {timeout ?? TimeSpan.FromSeconds(30)}; the log:\n{LogText}");
            if (shell.HasExited && DrainLog() && log.Count(l => l.Contains(text, StringComparison.Ordinal)) < count)
                throw new InvalidOperationException($"the server exited ({shell.ExitCode}) before logging '{text}'; the log:\n{LogText}");
            Thread.Sleep(20);
        }
    }

    /// <summary>
    /// Waits (up to 5 s) for the end of the log: once every process that writes it has exited.
    /// A new master from USR2 outlives the shell and keeps it open, hence the bound.
    /// </summary>
    private bool DrainLog() => Task.Run(() => shell.WaitForExit()).Wait(TimeSpan.FromSeconds(5)) || true;

    public ServerProcess WaitUntilReady()
    {
        WaitForLog("pool ready");
        return this;
    }

    /// <summary>Waits for the server to exit; returns its exit code, or null if it is still running.</summary>
    public int? WaitForExit(TimeSpan timeout)
    {
        if (!shell.WaitForExit(timeout)) return null;
        DrainLog();
        return shell.ExitCode;
    }

    public void Signal(Signum signal, int? pid = null) => Syscall.kill(pid ?? MasterPid, signal);

    /// <summary>
    /// DOTNET_GCgen0size=10000: 64 KiB (hex, as the runtime reads it), the smallest gen0 budget
    /// the runtime accepts (below it, it takes its default). Workers then collect garbage all the
    /// time, which is where a registration or a handle that nothing keeps alive gets lost.
    /// The greeting itself allocates almost nothing (a Connection, under 100 bytes), so the
    /// behaviour project's handler also allocates GARBAGE_BYTES a connection, as a handler that
    /// reads a request or builds an answer does.
    /// </summary>
    public static Dictionary<string, string> TinyGen0() => new() { ["DOTNET_GCgen0size"] = "10000", ["GARBAGE_BYTES"] = "1024" };

    /// <summary>Each worker's accepted connections and gen0 collections so far, from the master's USR1 statistics.</summary>
    public IReadOnlyList<(long Accepted, int Collections)> WorkerCollections(int workers)
    {
        Thread.Sleep(700); // a heartbeat (every 500 ms) carries the counts
        int before = log.Count;
        SignalAndWaitForLog(Signum.SIGUSR1, "USR1: ");
        Proc.WaitUntil(() => Log.Skip(before).Count(l => l.Contains(": age ", StringComparison.Ordinal)) >= workers, TimeSpan.FromSeconds(5));
        return [.. Log.Skip(before).Select(l => CollectionsLine().Match(l)).Where(m => m.Success)
            .Select(m => (long.Parse(m.Groups[1].Value, CultureInfo.InvariantCulture), int.Parse(m.Groups[2].Value, CultureInfo.InvariantCulture)))];
    }

    [GeneratedRegex(@": age .*accepted (\d+), .*garbage collections (\d+)")]
    private static partial Regex CollectionsLine();

    /// <summary>Sends a signal to the master and waits for one more log line with <paramref name="text"/> than there was.</summary>
    public void SignalAndWaitForLog(Signum signal, string text)
    {
        int seen = log.Count(l => l.Contains(text, StringComparison.Ordinal));
        Signal(signal);
        WaitForLog(text, count: seen + 1);
    }

    /// <summary>Sends a signal to the whole process group, as a terminal's Ctrl+C does.</summary>
    public void SignalGroup(Signum signal) => Syscall.kill(-Pid, signal);

    /// <summary>The master's live child processes (its workers), from /proc.</summary>
    /// <summary>The master's live workers. Only after its "listening on" line was read: before it,
    /// MasterPid is 0, and the children of 0 are init and kthreadd.</summary>
    public IReadOnlyList<int> Children() => MasterPid != 0
        ? Proc.ChildrenOf(MasterPid)
        : throw new InvalidOperationException("the master's pid is not known yet: its \"listening on\" line has not been read");

    /// <summary>Every worker pid the master has reported starting, alive or not.</summary>
    public IReadOnlyList<int> StartedWorkers()
    {
        lock (gate) return [.. workerPids];
    }

    public void Dispose()
    {
        int[] masters;
        lock (gate) masters = [.. masterPids];
        // Pid 1 is never ours: a server that is PID 1 of a namespace of its own logs itself as 1.
        bool Ours(int pid) => pid != 1 && Proc.IsAlive(pid) && Proc.GroupOf(pid) == Pid;

        // Politely first, so each master reaps its workers; then SIGKILL whatever is left.
        foreach (int master in masters.Where(Ours)) Syscall.kill(master, Signum.SIGINT);
        Proc.WaitUntil(() => !masters.Any(Ours), TimeSpan.FromSeconds(5));

        var pids = new List<int> { Pid };
        pids.AddRange(masters);
        pids.AddRange(StartedWorkers());
        foreach (int pid in pids.Distinct().Where(Ours)) Syscall.kill(pid, Signum.SIGKILL);
        // Anything else of our group: a server that is PID 1 of a PID namespace of its own
        // (it logs itself as 1, its workers by their namespace's pids) outlives the unshare
        // killed above.
        foreach (int pid in Proc.InGroup(Pid).Where(Ours)) Syscall.kill(pid, Signum.SIGKILL);
        if (!shell.WaitForExit(TimeSpan.FromSeconds(10))) shell.Kill();
        shell.Dispose();
        stopTail = true;
        tail?.Join(TimeSpan.FromSeconds(5));
    }
}
