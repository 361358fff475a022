using System.Collections.Concurrent;
using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Net.Sockets;
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

public enum StartMode { AppHost, DotnetDll, DotnetRun }

/// <summary>What /proc says about processes.</summary>
public static class Proc
{
    public static bool IsAlive(int pid) => Stat(pid) is { } stat && stat.State != 'Z';

    public static int? GroupOf(int pid) => Stat(pid)?.Group;

    public static int? ParentOf(int pid) => Stat(pid)?.Parent;

    public static IReadOnlyList<int> ChildrenOf(int parent) =>
        [.. Directory.EnumerateDirectories("/proc")
            .Select(d => int.TryParse(Path.GetFileName(d), out int pid) ? pid : 0)
            .Where(pid => pid > 0 && Stat(pid) is { } s && s.Parent == parent && s.State != 'Z')];

    /// <summary>The live processes of a process group.</summary>
    public static IReadOnlyList<int> InGroup(int group) =>
        [.. Directory.EnumerateDirectories("/proc")
            .Select(d => int.TryParse(Path.GetFileName(d), out int pid) ? pid : 0)
            .Where(pid => pid > 0 && Stat(pid) is { } s && s.Group == group && s.State != 'Z')];

    /// <summary>Exited children of <paramref name="parent"/> that it has not reaped yet.</summary>
    public static IReadOnlyList<int> ZombiesOf(int parent) =>
        [.. Directory.EnumerateDirectories("/proc")
            .Select(d => int.TryParse(Path.GetFileName(d), out int pid) ? pid : 0)
            .Where(pid => pid > 0 && Stat(pid) is { } s && s.Parent == parent && s.State == 'Z')];

    /// <summary>What the process's open descriptors point to ("3 -> pipe:[1234]"), one each.</summary>
    public static IReadOnlyList<string> OpenFiles(int pid) =>
        [.. Directory.GetFiles($"/proc/{pid}/fd").Select(fd =>
        {
            try { return $"{Path.GetFileName(fd)} -> {new FileInfo(fd).LinkTarget}"; }
            catch (IOException) { return $"{Path.GetFileName(fd)} -> (closed)"; }
        })];

    /// <summary>Polls until <paramref name="condition"/> holds or the timeout passes.</summary>
    public static bool WaitUntil(Func<bool> condition, TimeSpan timeout)
    {
        var limit = Stopwatch.StartNew();
        while (!condition())
        {
            if (limit.Elapsed > timeout) return false;
            Thread.Sleep(20);
        }
        return true;
    }

    private static (char State, int Parent, int Group)? Stat(int pid)
    {
        try
        {
            string text = File.ReadAllText($"/proc/{pid}/stat");
            string[] fields = text[(text.LastIndexOf(')') + 2)..].Split(' ');
            return (fields[0][0], int.Parse(fields[1], CultureInfo.InvariantCulture), int.Parse(fields[2], CultureInfo.InvariantCulture));
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return null;
        }
    }
}

/// <summary>A client of the greeting protocol, on loopback only.</summary>
public static class Client
{
    /// <summary>Connects, reads until the server closes, returns the bytes.</summary>
    public static byte[] Fetch(int port, TimeSpan? timeout = null)
    {
        using var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        socket.ReceiveTimeout = (int)(timeout ?? TimeSpan.FromSeconds(10)).TotalMilliseconds;
        socket.Connect(IPAddress.Loopback, port);
        return ReadToEnd(socket);
    }

    /// <summary>Reads until the server closes the connection.</summary>
    public static byte[] ReadToEnd(Socket socket)
    {
        using var buffer = new MemoryStream();
        var chunk = new byte[4096];
        int n;
        while ((n = socket.Receive(chunk)) > 0) buffer.Write(chunk, 0, n);
        return buffer.ToArray();
    }

    /// <summary>
    /// Connects again and again (for 10 s at most) until <paramref name="count"/> different pids
    /// have answered; a worker that has just started may take a moment before it accepts.
    /// </summary>
    public static IReadOnlySet<int> PidsUntil(int port, int count)
    {
        var pids = new HashSet<int>();
        var limit = Stopwatch.StartNew();
        while (pids.Count < count && limit.Elapsed < TimeSpan.FromSeconds(10))
            pids.Add(PidOf(Greet(port)));
        return pids;
    }

    public static string Greet(int port) => System.Text.Encoding.UTF8.GetString(Fetch(port));

    /// <summary>The pid at the end of a default greeting ("Hello from 1234\n").</summary>
    public static int PidOf(string greeting) =>
        int.Parse(greeting.TrimEnd('\n').Split(' ')[^1], CultureInfo.InvariantCulture);

    /// <summary>Jain's fairness index: 1 when every worker served the same number, 1/n when one served all.</summary>
    public static double Jain(IEnumerable<int> counts)
    {
        double[] x = [.. counts.Select(c => (double)c)];
        return x.Sum() * x.Sum() / (x.Length * x.Sum(v => v * v));
    }

    /// <summary>
    /// A new client every 10 ms, each giving up after 200 ms (a connect whose SYN the server
    /// holds back would wait for the kernel's retry a second later): returns when the first
    /// one is refused, on <paramref name="clock"/>, or null if none is within <paramref name="timeout"/>.
    /// A connect that succeeds is closed at once.
    /// </summary>
    public static async Task<TimeSpan?> FirstRefusalAsync(int port, Stopwatch clock, TimeSpan timeout)
    {
        while (clock.Elapsed < timeout)
        {
            using var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
            using var patience = new CancellationTokenSource(TimeSpan.FromMilliseconds(200));
            try
            {
                await socket.ConnectAsync(new IPEndPoint(IPAddress.Loopback, port), patience.Token);
            }
            catch (SocketException e) when (e.SocketErrorCode == SocketError.ConnectionRefused)
            {
                return clock.Elapsed;
            }
            catch (OperationCanceledException) { }
            await Task.Delay(10);
        }
        return null;
    }

    /// <summary>A port that was free a moment ago, on 127.0.0.1 (for a program that must be told its port).</summary>
    public static int FreePort()
    {
        using var probe = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        probe.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        return ((IPEndPoint)probe.LocalEndPoint!).Port;
    }

    public static bool PortIsFree(int port)
    {
        try
        {
            using var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
            socket.Bind(new IPEndPoint(IPAddress.Loopback, port));
            socket.Listen();
            return true;
        }
        catch (SocketException)
        {
            return false;
        }
    }
}
