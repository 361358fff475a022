// The server runs on Linux only (signals, /proc): so do its tests.
[assembly: System.Runtime.Versioning.SupportedOSPlatform("linux")]

namespace My.Server_2.Tests;

using System;
using System.Collections.Concurrent;
using System.Collections.Generic;
using System.Diagnostics;
using System.Globalization;
using System.IO;
using System.Linq;
using System.Net;
using System.Net.Sockets;
using System.Text.RegularExpressions;
using System.Threading;
using Mono.Unix.Native;
using Xunit.Abstractions;

/// <summary>
/// The built server, started as a real process on 127.0.0.1 and a free port (--port 0).
/// <c>using var server = new TestServer(output, workers: 3);</c> waits until every worker
/// accepts; disposing it stops the server (INT, then KILL if it hangs) and writes the
/// server's log to the test's output, where a failing test shows it.
/// </summary>
public sealed partial class TestServer : IDisposable
{
    /// <summary>Generous: only there to turn a hang into a failure.</summary>
    public static readonly TimeSpan Timeout = TimeSpan.FromSeconds(30);

    private readonly Process process;
    private readonly ITestOutputHelper output;
    private readonly ConcurrentQueue<string> log = new();

    /// <summary>The master's process id.</summary>
    public int Pid => process.Id;

    /// <summary>The port the master bound, read from its log.</summary>
    public int Port { get; }

    /// <summary>What the server has logged so far (master and workers), one line each.</summary>
    public string Log => string.Join("\n", log);

    /// <summary>Starts the server with <paramref name="workers"/> workers and any other options (see --help).</summary>
    public TestServer(ITestOutputHelper output, int workers, params string[] options)
    {
        this.output = output;
        // The build copies the server's program into this project's output folder (it is a
        // ProjectReference); start it with its own launcher, or with `dotnet` if it has none.
        string dll = typeof(Handler).Assembly.Location;
        string launcher = Path.ChangeExtension(dll, null);
        var start = File.Exists(launcher) ? new ProcessStartInfo(launcher) : new ProcessStartInfo("dotnet") { ArgumentList = { dll } };
        foreach (string arg in new[] { "--host", "127.0.0.1", "--port", "0", "--workers", workers.ToString(CultureInfo.InvariantCulture) }.Concat(options))
            start.ArgumentList.Add(arg);
        start.UseShellExecute = false;
        start.RedirectStandardOutput = true;
        start.RedirectStandardError = true;
        // PREFORK_* variables of your shell would change the server's settings: not here.
        foreach (string name in start.Environment.Keys.Where(k => k.StartsWith("PREFORK_", StringComparison.Ordinal)).ToList())
            start.Environment.Remove(name);

        process = Process.Start(start) ?? throw new InvalidOperationException($"cannot start {start.FileName}");
        process.OutputDataReceived += (_, e) => { if (e.Data is not null) log.Enqueue(e.Data); };
        process.ErrorDataReceived += (_, e) => { if (e.Data is not null) log.Enqueue(e.Data); };
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();

        // "[master 4100] listening on 127.0.0.1:37843, starting 3 workers (signals: ...)"
        Port = int.Parse(ListeningLine().Match(WaitForLog(ListeningLine())).Groups[1].Value, CultureInfo.InvariantCulture);
        // "[master 4100] pool ready: 3 workers accepting (pids 4111 4117 4120)"
        WaitForLog(PoolReadyLine());
    }

    [GeneratedRegex(@"^\[master \d+\] listening on \S+:(\d+)[ ,]")]
    private static partial Regex ListeningLine();

    [GeneratedRegex(@"^\[master \d+\] pool ready: .*\(pids ([\d ]+)\)")]
    private static partial Regex PoolReadyLine();

    [GeneratedRegex(@"^\[master \d+\] worker (\d+) \(pid (\d+)\) started")]
    private static partial Regex StartedLine();

    /// <summary>The master's child processes now: its workers (from /proc; none once it has exited).</summary>
    public IReadOnlyList<int> Workers() =>
        [.. Directory.GetDirectories("/proc")
            .Select(dir => int.TryParse(Path.GetFileName(dir), out int pid) ? pid : 0)
            .Where(pid => pid > 0 && Stat(pid) is { State: not 'Z' } stat && stat.Parent == Pid)];

    /// <summary>The workers that the master's log called ready, in its "pool ready" line.</summary>
    public IReadOnlyList<int> ReadyWorkers() =>
        [.. PoolReadyLine().Match(log.First(l => PoolReadyLine().IsMatch(l))).Groups[1].Value
            .Split(' ').Select(pid => int.Parse(pid, CultureInfo.InvariantCulture))];

    /// <summary>The worker index (0 to workers-1, {worker} in the greeting) of a worker pid, from the log.</summary>
    public int IndexOf(int workerPid)
    {
        Match? started = log.Select(line => StartedLine().Match(line))
            .LastOrDefault(m => m.Success && m.Groups[2].Value == workerPid.ToString(CultureInfo.InvariantCulture));
        return started is null
            ? throw new InvalidOperationException($"the log does not say which worker pid {workerPid} is:\n{Log}")
            : int.Parse(started.Groups[1].Value, CultureInfo.InvariantCulture);
    }

    /// <summary>A client connection to the server, with <see cref="Timeout"/> on every read and write.</summary>
    public Socket Connect()
    {
        var client = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp)
        {
            ReceiveTimeout = (int)Timeout.TotalMilliseconds,
            SendTimeout = (int)Timeout.TotalMilliseconds,
        };
        try
        {
            client.Connect(IPAddress.Loopback, Port);
            return client;
        }
        catch
        {
            client.Dispose();
            throw;
        }
    }

    /// <summary>Sends a signal to the master, as `kill -INT pid` does.</summary>
    public void Signal(Signum signal)
    {
        if (Syscall.kill(Pid, signal) != 0) throw new InvalidOperationException($"kill({Pid}, {signal}) failed: {Stdlib.GetLastError()}");
    }

    /// <summary>Waits for the master to exit and returns its exit code; fails the test if it does not within <see cref="Timeout"/>.</summary>
    public int WaitForExit()
    {
        if (!WaitForEnd() && !process.HasExited)
            throw new TimeoutException($"the server (pid {Pid}) is still running after {Timeout}; its log:\n{Log}");
        return process.ExitCode;
    }

    /// <summary>Whether a process is still running (a zombie has ended).</summary>
    public static bool IsAlive(int pid) => Stat(pid) is { State: not 'Z' };

    /// <summary>The state letter and the parent of a process, from /proc/PID/stat; null once it is gone.</summary>
    private static (char State, int Parent)? Stat(int pid)
    {
        try
        {
            string stat = File.ReadAllText($"/proc/{pid}/stat"); // "1240 (MyServer) S 1234 ..."
            string[] fields = stat[(stat.LastIndexOf(')') + 2)..].Split(' ');
            return (fields[0][0], int.Parse(fields[1], CultureInfo.InvariantCulture));
        }
        catch (IOException)
        {
            return null;
        }
    }

    private string WaitForLog(Regex line)
    {
        var waited = Stopwatch.StartNew();
        while (true)
        {
            string? found = log.FirstOrDefault(l => line.IsMatch(l));
            if (found is not null) return found;
            if (process.HasExited || waited.Elapsed > Timeout)
            {
                string why = process.HasExited ? $"before it exited with code {process.ExitCode}" : $"within {Timeout}";
                Stop();
                process.Dispose();
                throw new InvalidOperationException($"the server's log did not say '{line}' {why}; its log:\n{Log}");
            }
            Thread.Sleep(20);
        }
    }

    /// <summary>
    /// Stops the server if a test left it running: INT (the master stops its workers), then,
    /// if it hangs, KILL for its workers and itself. Only processes this server started.
    /// </summary>
    public void Dispose()
    {
        Stop();
        output.WriteLine($"--- the server's log ---\n{Log}");
        process.Dispose();
    }

    private void Stop()
    {
        if (process.HasExited) return;
        Syscall.kill(Pid, Signum.SIGINT);
        if (WaitForEnd() || process.HasExited) return;
        foreach (int worker in Workers()) Syscall.kill(worker, Signum.SIGKILL);
        process.Kill();
        WaitForEnd();
    }

    /// <summary>
    /// Waits, up to <see cref="Timeout"/>, for the master to exit and for the end of its log,
    /// which comes once its workers, which share it, have exited too.
    /// </summary>
    private bool WaitForEnd()
    {
        using var limit = new CancellationTokenSource(Timeout);
        try
        {
            process.WaitForExitAsync(limit.Token).GetAwaiter().GetResult();
            return true;
        }
        catch (OperationCanceledException)
        {
            return false;
        }
    }
}
