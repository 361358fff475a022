using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Text;
using System.Text.RegularExpressions;
using Mono.Unix.Native;
using PreforkTemplates.Tests.Infrastructure;
using Xunit;
using Xunit.Abstractions;

namespace PreforkTemplates.Tests;

/// <summary>
/// The master never harms a healthy pool: faults around the master, caused as an operator
/// causes them (an upgrade stopped half way, Ctrl+Z or a paused container, a configuration or a
/// deployment a worker cannot start with, a pid file's directory cleaned away, a full log disk,
/// a stop in the middle of a reload), each under a load of 16 clients, every failed connection
/// counted by kind.
/// </summary>
[Collection("template")]
public sealed partial class MasterFaultTests(TemplateFixture fixture, ITestOutputHelper output)
{
    private const int SoakConnections = 30_000;

    private void Report(string line) => output.Report(line);

    /// <summary>
    /// Twelve workers of the behaviour project, with --worker-timeout 2, after SoakConnections
    /// answered connections with no failure and many garbage collections in every worker (a
    /// tiny gen0 budget). Connections from <paramref name="slowPort"/> are answered after 8 s.
    /// The load goes on: the caller disposes both.
    /// </summary>
    private async Task<(ServerProcess Server, Load Load)> StartSoaked(int workers, int slowPort)
    {
        await fixture.AllBuiltAsync(); // no compiler beside the load
        string dir = await fixture.BehaviourProjectAsync();
        var env = ServerProcess.TinyGen0();
        env["SLOW_PORT"] = slowPort.ToString(CultureInfo.InvariantCulture);
        env["SLOW_MS"] = "8000";
        var server = ServerProcess.StartWith(dir, StartMode.AppHost, env, "--host", "127.0.0.1", "--port", "0",
            "--workers", workers.ToString(CultureInfo.InvariantCulture), "--worker-timeout", "2", "--write-timeout", "30");
        Load? load = null;
        try
        {
            server.WaitUntilReady();
            load = new Load(server.Port, limit: TimeSpan.FromSeconds(240));
            load.WaitForSuccesses(SoakConnections, TimeSpan.FromSeconds(120));
            Assert.True(load.Failures.Count == 0, "failures before any fault: " + load.Summary() + "; the master's log:\n" +
                string.Join('\n', server.Log.Where(l => l.StartsWith("[master", StringComparison.Ordinal) && !l.Contains(") started", StringComparison.Ordinal))));
            IReadOnlyList<(long Accepted, int Collections)> counts = server.WorkerCollections(workers);
            Report($"soak: {load.Succeeded} connections answered; per worker, accepted/gen0 collections: {string.Join(", ", counts.Select(w => $"{w.Accepted}/{w.Collections}"))}");
            Assert.All(counts.Where(w => w.Accepted >= 1000), w => Assert.True(w.Collections >= 10,
                $"a worker that accepted {w.Accepted} connections collected garbage only {w.Collections} times"));
            return (server, load);
        }
        catch
        {
            load?.Dispose();
            server.Dispose();
            throw;
        }
    }

    /// <remarks>
    /// One soaked server takes every fault in turn; after each, new clients must be served by
    /// the same workers as before. A USR2 aborted half way once left a socket filter behind that
    /// dropped every new client (the new master's last worker set it on the shared socket);
    /// a stall of the master once got 3 of 4 workers killed as silent on SIGCONT.
    /// </remarks>
    [Fact]
    public async Task After_30000_connections_aborted_upgrades_and_stalls_of_the_master_leave_the_pool_serving_and_a_stop_during_HUP_resets_nothing()
    {
        const int workers = 12;
        using var slowClient = new SlowClient();
        var (server, load) = await StartSoaked(workers, slowClient.Port);
        using var _ = server;
        using var __ = load;
        int master = server.MasterPid;
        IReadOnlyList<int> pool = server.Children();
        Assert.Equal(workers, pool.Count);

        // An upgrade stopped half way: TERM to the new master while its pool is partly ready, at
        // fixed times after USR2, and (null) as soon as one of its workers has answered a client.
        foreach (double? delay in new double?[] { 0.3, 0.5, 1.0, null })
        {
            TimeSpan from = load.Now;
            HashSet<int> known = [.. pool, .. load.PerPid.Keys];
            int started = server.Log.Count(l => l.Contains("USR2: started new master", StringComparison.Ordinal));
            var clock = Stopwatch.StartNew();
            server.Signal(Signum.SIGUSR2);
            server.WaitForLog("USR2: started new master", count: started + 1);
            int newMaster = int.Parse(StartedMasterLine().Matches(server.LogText)[^1].Groups[1].Value, CultureInfo.InvariantCulture);
            if (delay is double seconds)
                Thread.Sleep(TimeSpan.FromSeconds(seconds) - clock.Elapsed is { Ticks: > 0 } wait ? wait : TimeSpan.Zero);
            else
                Assert.True(Proc.WaitUntil(() => load.PerPid.Keys.Any(p => !known.Contains(p)), TimeSpan.FromSeconds(20)), "no worker of the new master answered");
            TimeSpan termAt = clock.Elapsed;
            Syscall.kill(newMaster, Signum.SIGTERM);
            server.WaitForLog($"USR2: new master {newMaster} exited with code", TimeSpan.FromSeconds(60));
            Assert.True(Proc.WaitUntil(() => !Proc.InGroup(server.Pid).Any(p => Proc.ParentOf(p) == newMaster), TimeSpan.FromSeconds(30)),
                "the new master's workers outlived it:\n" + server.LogText);
            TimeSpan after = load.Now;
            load.WaitForSuccesses(1000);
            (int answered, string probe) = Probe(server.Port, 50);
            Report($"USR2 aborted by TERM to the new master {termAt.TotalSeconds:0.00} s after it ({(delay is null ? "once one of its workers had answered" : "fixed")}): " +
                   $"load {Since(load, from)}; then 50 new clients, each allowed 3 s: {probe}");
            Assert.DoesNotContain(server.Log, l => l.Contains("retired: the new master serves now", StringComparison.Ordinal));
            Assert.Equal(50, answered);
            Assert.True(Proc.IsAlive(master), "the master died:\n" + server.LogText);
            Assert.Equal(pool.Order(), server.Children().Order());
            Assert.True(load.PidsSince(after).IsSubsetOf(pool), "a pid that is not the old pool's answered after the aborted upgrade");
            Assert.Empty(FailuresSince(load, from));
        }

        // The master stopped for longer than --worker-timeout (Ctrl+Z, docker pause), then the
        // whole process group; a slow connection is held across each stall.
        foreach (bool group in new[] { false, true })
        {
            TimeSpan from = load.Now;
            Task<string> held = slowClient.FetchAsync(server.Port);
            Thread.Sleep(300); // accepted, and waiting in the handler
            if (group) server.SignalGroup(Signum.SIGSTOP); else server.Signal(Signum.SIGSTOP);
            Thread.Sleep(5000);
            if (group) server.SignalGroup(Signum.SIGCONT); else server.Signal(Signum.SIGCONT);
            string reply = await held;
            Thread.Sleep(3000); // longer than --worker-timeout: time to kill, if it were to
            load.WaitForSuccesses(1000);
            (int answered, string probe) = Probe(server.Port, 50);
            string what = group ? "the whole process group" : "the master";
            Report($"SIGSTOP of {what} for 5 s (--worker-timeout 2): load {Since(load, from)}; the held slow connection got '{reply.TrimEnd()}'; then 50 new clients: {probe}");
            Assert.Matches(@"^Hello from \d+\n$", reply);
            // (A new master's workers TERMed before they could handle it above were killed by it.)
            Assert.DoesNotContain(server.Log, l => l.Contains("silent for", StringComparison.Ordinal)
                || (l.StartsWith($"[master {master}]", StringComparison.Ordinal) && l.Contains("was killed by", StringComparison.Ordinal)));
            Assert.Equal(pool.Order(), server.Children().Order());
            Assert.Equal(50, answered);
            Assert.Empty(FailuresSince(load, from));
        }
        Assert.Contains(server.Log, l => l.Contains("this master was held up for", StringComparison.Ordinal));

        // TERM in the middle of a HUP's rolling restart, under load: the last holder must be a
        // worker that still accepts, not an old one already stopping.
        {
            TimeSpan from = load.Now;
            int replaced = server.Log.Count(l => l.Contains("which it replaces", StringComparison.Ordinal));
            server.Signal(Signum.SIGHUP);
            server.WaitForLog("which it replaces", TimeSpan.FromSeconds(30), count: replaced + 1);
            server.Signal(Signum.SIGTERM);
            Assert.Equal(0, server.WaitForExit(TimeSpan.FromSeconds(60)));
            Thread.Sleep(300);
            load.Dispose();
            string[] last = [.. server.Log.Where(l => l.Contains("asked to stop as the last holder", StringComparison.Ordinal))];
            Report($"TERM during a HUP's rolling restart: load {Since(load, from)}; told to stop last: {string.Join(" / ", last)}");
            Assert.All(FailuresSince(load, from), f => Assert.Equal(Load.Refused, f.Kind));
            string lastHolder = Assert.Single(last);
            // The last holder is not a worker that was stopping already (replaced by the HUP).
            string lastHolderPid = WorkerPidLine().Match(lastHolder).Groups[1].Value;
            Assert.DoesNotContain(server.Log, l => l.Contains($"stopping pid {lastHolderPid} which it replaces", StringComparison.Ordinal));
        }
    }

    /// <remarks>
    /// HUP re-reads the --config file: a greeting too large for a worker's environment is refused
    /// at once; a greeting the handler refuses (the behaviour handler fails on FAIL_START) makes
    /// the new workers fail, and the HUP is rolled back. A HUP while the program is renamed away
    /// (a deployment under way) is refused, and a worker that cannot be started meanwhile is
    /// retried. Through all of it the old pool serves and the master never gives up.
    /// </remarks>
    [Fact]
    public async Task A_HUP_or_a_worker_start_that_cannot_succeed_leaves_the_old_pool_serving()
    {
        string dir = await fixture.BehaviourProjectAsync();
        string copy = Path.Combine(fixture.WorkDir, $"hup-faults-{Guid.NewGuid():N}");
        Tree.Copy(ServerProcess.OutputOf(dir), copy);
        string program = Path.Combine(copy, "Behave");
        string config = Path.Combine(copy, "server.conf");
        File.WriteAllText(config, "workers = 3\n");
        using var server = ServerProcess.StartCommand([program, "--host", "127.0.0.1", "--port", "0", "--config", config]).WaitUntilReady();
        IReadOnlyList<int> pool = server.Children();
        Assert.Equal(3, pool.Count);
        using var load = new Load(server.Port);
        load.WaitForSuccesses(300);

        // A 200 KB greeting: a worker could not even be started with it (E2BIG).
        TimeSpan from = load.Now;
        File.WriteAllText(config, "workers = 3\ngreeting = " + new string('x', 200_000) + "\n");
        server.SignalAndWaitForLog(Signum.SIGHUP, "HUP: configuration refused, keeping the running one:");
        load.WaitForSuccesses(300);
        string refused = server.Log.Last(l => l.Contains("HUP: configuration refused", StringComparison.Ordinal));
        Report($"HUP with a 200 KB greeting: {refused[..Math.Min(refused.Length, 200)]}; load {Since(load, from)}");
        Assert.Contains("greeting: 200000 bytes of UTF-8, more than a greeting may have (16384)", refused);
        Assert.Equal(pool.Order(), server.Children().Order());

        // A greeting the handler refuses: the new workers fail to start, the HUP is rolled back.
        from = load.Now;
        File.WriteAllText(config, "workers = 3\ngreeting = FAIL_START {pid}\n");
        server.SignalAndWaitForLog(Signum.SIGHUP, "HUP: configuration reloaded");
        server.WaitForLog("back to the previous configuration, the running workers keep serving", TimeSpan.FromSeconds(60));
        File.WriteAllText(config, "workers = 3\n");
        Thread.Sleep(2000); // nothing more starts
        load.WaitForSuccesses(300);
        int failedStarts = server.Log.Count(l => l.Contains("before it was ready", StringComparison.Ordinal) || l.Contains("failed to start", StringComparison.Ordinal));
        Report($"HUP with a greeting the workers refuse: rolled back after {server.Log.Count(l => l.Contains("unexpected error", StringComparison.Ordinal))} failed worker starts; load {Since(load, from)}");
        Assert.Equal(pool.Order(), server.Children().Order());
        Assert.True(failedStarts > 0);

        // The program renamed away: HUP refused; a worker killed meanwhile cannot be started,
        // and is retried until the program is back.
        from = load.Now;
        File.Move(program, program + ".moved");
        try
        {
            server.SignalAndWaitForLog(Signum.SIGHUP, "HUP: refused, keeping the running configuration and workers:");
            Syscall.kill(pool[0], Signum.SIGKILL);
            server.WaitForLog("cannot start a worker from", TimeSpan.FromSeconds(10), count: 2);
            Assert.Equal(2, server.Children().Count);
        }
        finally
        {
            File.Move(program + ".moved", program);
        }
        Assert.True(Proc.WaitUntil(() => server.Children().Count == 3, TimeSpan.FromSeconds(30)), "the pool did not come back to 3:\n" + server.LogText);
        load.WaitForSuccesses(300);
        load.Dispose();
        string hupRefused = server.Log.Last(l => l.Contains("HUP: refused", StringComparison.Ordinal));
        Report($"HUP with the program renamed away, and a worker killed meanwhile: '{hupRefused}'; " +
               $"{server.Log.Count(l => l.Contains("cannot start a worker from", StringComparison.Ordinal))} failed starts retried; load {Since(load, from)}");

        Assert.True(Proc.IsAlive(server.MasterPid), "the master died:\n" + server.LogText);
        Assert.DoesNotContain(server.Log, l => l.Contains("no worker could start", StringComparison.Ordinal));
        // The worker killed loses at most the connection it had accepted and not yet answered.
        Assert.All(load.Failures, f => Assert.Equal(Load.Empty, f.Kind));
        Assert.True(load.Failures.Count <= 1, load.Summary());
        Assert.DoesNotContain(server.Log, l => l.StartsWith("[master", StringComparison.Ordinal) && l.Contains("unexpected error", StringComparison.Ordinal));
    }

    /// <remarks>
    /// A /tmp cleaner removes the pid file's directory, then USR2: the new master cannot write
    /// the file, logs it, and takes over. Then a symbolic link planted at the temporary names
    /// (the pid-named one, and FILE.tmp) is not written through when the master rewrites the file
    /// after a failed upgrade.
    /// </remarks>
    [Fact]
    public async Task A_pid_file_that_cannot_be_written_is_logged_and_a_planted_link_is_not_followed()
    {
        string dir = await fixture.BehaviourProjectAsync();
        string pidDir = Path.Combine(fixture.WorkDir, $"run-{Guid.NewGuid():N}");
        Directory.CreateDirectory(pidDir);
        string pidFile = Path.Combine(pidDir, "s.pid");
        string config = Path.Combine(fixture.WorkDir, $"run-{Guid.NewGuid():N}.conf");
        File.WriteAllText(config, "workers = 3\n");
        using var server = ServerProcess.StartWith(dir, StartMode.AppHost, null,
            "--host", "127.0.0.1", "--port", "0", "--config", config, "--pid-file", pidFile).WaitUntilReady();
        int oldMaster = server.MasterPid;
        using var load = new Load(server.Port);
        load.WaitForSuccesses(300);

        Directory.Delete(pidDir, recursive: true);
        server.Signal(Signum.SIGUSR2);
        server.WaitForLog("retired: the new master serves now", TimeSpan.FromSeconds(60));
        int newMaster = int.Parse(StartedMasterLine().Match(server.LogText).Groups[1].Value, CultureInfo.InvariantCulture);
        Assert.True(Proc.WaitUntil(() => !Proc.IsAlive(oldMaster), TimeSpan.FromSeconds(30)));
        load.WaitForSuccesses(300);
        Report($"USR2 with the pid file's directory removed: {load.Summary()}");
        Assert.Contains(server.Log, l => l.StartsWith($"[master {newMaster}] --pid-file: cannot write '{pidFile}'", StringComparison.Ordinal));
        Assert.True(Proc.IsAlive(newMaster));
        Assert.Equal(3, Proc.ChildrenOf(newMaster).Count);

        // Links planted where the master writes (FILE.PID.tmp) and where it used to (FILE.tmp).
        Directory.CreateDirectory(pidDir);
        string target = Path.Combine(fixture.WorkDir, $"precious-{Guid.NewGuid():N}");
        File.WriteAllText(target, "precious\n");
        string ownName = $"{pidFile}.{newMaster}.tmp";
        File.CreateSymbolicLink(ownName, target);
        File.CreateSymbolicLink(pidFile + ".tmp", target);
        // An upgrade that fails (the next master reads a greeting its workers refuse): the master
        // writes its pid again.
        File.WriteAllText(config, "workers = 3\ngreeting = FAIL_START {pid}\n");
        server.Signal(Signum.SIGUSR2, newMaster);
        server.WaitForLog($"[master {newMaster}] USR2: started new master");
        int third = int.Parse(StartedMasterLine().Matches(server.LogText)[^1].Groups[1].Value, CultureInfo.InvariantCulture);
        server.WaitForLog($"USR2: new master {third} exited with code 4", TimeSpan.FromSeconds(60));
        load.WaitForSuccesses(300);
        load.Dispose();
        Report($"pid file rewritten with links planted at its temporary names: {load.Summary()}; the file holds '{File.ReadAllText(pidFile).Trim()}', the link target '{File.ReadAllText(target).Trim()}'");

        Assert.Equal("precious\n", File.ReadAllText(target));
        Assert.Equal(newMaster.ToString(CultureInfo.InvariantCulture), File.ReadAllText(pidFile).Trim());
        Assert.Null(new FileInfo(pidFile).LinkTarget);
        Assert.False(Syscall.lstat(ownName, out _) == 0, "the temporary file was left behind");
        Assert.Equal(target, new FileInfo(pidFile + ".tmp").LinkTarget);
        Assert.Empty(load.Failures);
    }

    /// <remarks>
    /// Standard error is a file on a full disk (a small tmpfs): every log line fails to be
    /// written. USR1 many times, HUP and TTIN must still work, master and workers alive and
    /// serving; once there is room again, each process says how many lines it dropped. A slow
    /// connection keeps one old worker (told to stop by the HUP while the disk was full) alive
    /// until then.
    /// </remarks>
    [Fact]
    public async Task With_its_log_on_a_full_disk_the_server_goes_on_and_counts_the_lines_it_dropped()
    {
        Assert.True(Syscall.geteuid() == 0, "mounting a small tmpfs needs root");
        string program = ServerProcess.ProgramOf(await fixture.BehaviourProjectAsync());
        string disk = Path.Combine(fixture.WorkDir, $"full-{Guid.NewGuid():N}");
        Directory.CreateDirectory(disk);
        CliResult mount = await Cli.RunAsync("mount", ["-t", "tmpfs", "-o", "size=64k", "tmpfs", disk], timeout: TimeSpan.FromSeconds(30));
        Assert.True(mount.ExitCode == 0, Cli.Describe(mount));
        try
        {
            using var slowClient = new SlowClient();
            string logFile = Path.Combine(disk, "server.log");
            using var server = ServerProcess.StartLoggingTo(logFile, [program, "--host", "127.0.0.1", "--port", "0", "--workers", "3", "--write-timeout", "30"],
                new Dictionary<string, string> { ["SLOW_PORT"] = slowClient.Port.ToString(CultureInfo.InvariantCulture), ["SLOW_MS"] = "12000" })
                .WaitUntilReady();
            int master = server.MasterPid;
            IReadOnlyList<int> pool = server.Children();
            using var load = new Load(server.Port);
            load.WaitForSuccesses(300);
            Task<string> held = slowClient.FetchAsync(server.Port);
            Thread.Sleep(300);

            // Fill the disk, to the last byte of the log file's last page.
            string filler = Path.Combine(disk, "filler");
            FillUp(filler, 4096);
            FillUp(logFile, 1, append: true); // newlines: empty log lines
            int linesBefore = server.Log.Count;

            for (int i = 0; i < 20; i++)
            {
                server.Signal(Signum.SIGUSR1);
                Thread.Sleep(150);
            }
            // Told to stop, a worker releases the listening socket: the sign, without a log, that
            // the HUP has reached every old worker (the slow connection keeps one of them running).
            string listener = Sockets(master).Intersect(Sockets(pool[0])).Single();
            server.Signal(Signum.SIGHUP);
            Assert.True(Proc.WaitUntil(() => server.Children().Except(pool).Count() == 3 && pool.All(w => !Sockets(w).Contains(listener)), TimeSpan.FromSeconds(30)),
                $"the HUP did not replace the workers: {string.Join(" ", server.Children())}");
            server.Signal(Signum.SIGTTIN);
            Assert.True(Proc.WaitUntil(() => server.Children().Except(pool).Count() == 4, TimeSpan.FromSeconds(30)), "TTIN did not add a worker");
            load.WaitForSuccesses(300);
            Assert.True(Proc.IsAlive(master), "the master died");
            int written = server.Log.Skip(linesBefore).Count(l => l.Length > 0);

            // Room again: the next line of each process says how many it lost.
            File.Delete(filler);
            string reply = await held;
            server.SignalAndWaitForLog(Signum.SIGUSR1, "USR1: ");
            Assert.True(Proc.WaitUntil(() => server.Log.Any(l => l.StartsWith($"[master {master}]", StringComparison.Ordinal) && l.Contains("log line(s) dropped", StringComparison.Ordinal))
                && server.Log.Any(l => l.StartsWith("[worker ", StringComparison.Ordinal) && l.Contains("log line(s) dropped", StringComparison.Ordinal)), TimeSpan.FromSeconds(20)),
                "no process said how many lines it dropped:\n" + server.LogText);
            load.WaitForSuccesses(300);
            load.Dispose();
            string[] dropped = [.. server.Log.Where(l => l.Contains("log line(s) dropped", StringComparison.Ordinal))];
            Report($"log on a full disk, then USR1 x20, HUP, TTIN: {load.Summary()}; {written} lines written while full; {string.Join(" / ", dropped)}; the slow connection got '{reply.TrimEnd()}'");

            Assert.Equal(0, written);
            Assert.Matches(@"^Hello from \d+\n$", reply);
            Assert.True(Proc.IsAlive(master));
            Assert.True(Proc.WaitUntil(() => server.Children().Count == 4, TimeSpan.FromSeconds(10)), "the pool is not 4 workers:\n" + server.LogText);
            Assert.Empty(load.Failures);
            int masterDropped = int.Parse(DroppedLine().Match(dropped.First(l => l.StartsWith("[master", StringComparison.Ordinal))).Groups[1].Value, CultureInfo.InvariantCulture);
            // Each USR1 it handles is 4 lines (a signal sent again before the first is handled comes
            // once, which happens on a busy machine).
            Assert.True(masterDropped >= 5 * 4, $"the master dropped {masterDropped} lines, fewer than 5 USR1 answers");
            Assert.DoesNotContain(server.Log, l => l.Contains("unexpected error", StringComparison.Ordinal) || l.Contains("was killed by", StringComparison.Ordinal));
        }
        finally
        {
            await Cli.RunAsync("umount", ["-l", disk], timeout: TimeSpan.FromSeconds(30));
        }
    }

    /// <summary>The sockets a process has open ("socket:[INODE]"); none once it has exited.</summary>
    private static IReadOnlyList<string> Sockets(int pid)
    {
        try
        {
            return [.. Proc.OpenFiles(pid).Select(f => f[(f.IndexOf("-> ", StringComparison.Ordinal) + 3)..]).Where(t => t.StartsWith("socket:", StringComparison.Ordinal)).Distinct()];
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return [];
        }
    }

    /// <summary>Writes to <paramref name="path"/>, <paramref name="chunk"/> bytes at a time, until the disk is full.</summary>
    private static void FillUp(string path, int chunk, bool append = false)
    {
        using var file = new FileStream(path, append ? FileMode.Append : FileMode.Create, FileAccess.Write, FileShare.ReadWrite, bufferSize: 0);
        byte[] bytes = [.. Enumerable.Repeat((byte)'\n', chunk)];
        try
        {
            while (true) file.Write(bytes);
        }
        catch (IOException) { }
    }

    /// <summary>
    /// <paramref name="count"/> new clients, one after the other, each allowed 3 s to connect and
    /// be answered: how many were answered, and the others by kind (every kind named).
    /// </summary>
    private static (int Answered, string Summary) Probe(int port, int count)
    {
        int answered = 0;
        var failed = new FailureLog(Stopwatch.StartNew());
        for (int i = 0; i < count; i++)
        {
            using var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp) { ReceiveTimeout = 3000 };
            try
            {
                using var patience = new CancellationTokenSource(TimeSpan.FromSeconds(3));
                socket.ConnectAsync(new IPEndPoint(IPAddress.Loopback, port), patience.Token).AsTask().GetAwaiter().GetResult();
                string text = Encoding.UTF8.GetString(Client.ReadToEnd(socket));
                if (Regex.IsMatch(text, @"^Hello from \d+\n$")) { answered++; continue; }
                failed.Add(text.Length == 0 ? FailureLog.Empty : FailureLog.Short, $"'{text}'");
            }
            catch (OperationCanceledException) { failed.Add(FailureLog.Timeout, "no connection within 3 s"); }
            catch (SocketException e)
            {
                string kind = e.SocketErrorCode switch
                {
                    SocketError.ConnectionRefused => FailureLog.Refused,
                    SocketError.ConnectionReset => FailureLog.Reset,
                    SocketError.TimedOut => FailureLog.Timeout,
                    _ => e.SocketErrorCode.ToString(),
                };
                failed.Add(kind, e.Message);
            }
        }
        return (answered, failed.Summary($"{answered} answered, failed"));
    }

    private static IReadOnlyList<Failure> FailuresSince(Load load, TimeSpan from) => [.. load.Failures.Where(f => f.At >= from)];

    /// <summary>The load's failures from <paramref name="from"/> on, by kind (every kind named).</summary>
    private static string Since(Load load, TimeSpan from) =>
        FailureLog.Summary(FailuresSince(load, from), $"{load.Succeeded} answered so far, failed since the fault");

    [GeneratedRegex(@"USR2: started new master (\d+)")]
    private static partial Regex StartedMasterLine();

    [GeneratedRegex(@"^\[worker \d+ (\d+)\]")]
    private static partial Regex WorkerPidLine();

    [GeneratedRegex(@"\] (\d+) log line\(s\) dropped")]
    private static partial Regex DroppedLine();

    /// <summary>
    /// A client that always connects from the same local port (the server's SLOW_PORT), so that
    /// only its connections are answered slowly.
    /// </summary>
    private sealed class SlowClient : IDisposable
    {
        private readonly Socket reservation = new(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);

        public SlowClient()
        {
            reservation.SetSocketOption(SocketOptionLevel.Socket, SocketOptionName.ReuseAddress, true);
            reservation.Bind(new IPEndPoint(IPAddress.Loopback, 0));
            Port = ((IPEndPoint)reservation.LocalEndPoint!).Port;
        }

        public int Port { get; }

        /// <summary>Connects from <see cref="Port"/> and reads until the server closes.</summary>
        public Task<string> FetchAsync(int serverPort)
        {
            var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp) { ReceiveTimeout = 30_000 };
            socket.SetSocketOption(SocketOptionLevel.Socket, SocketOptionName.ReuseAddress, true);
            socket.Bind(new IPEndPoint(IPAddress.Loopback, Port));
            socket.Connect(IPAddress.Loopback, serverPort);
            return Task.Run(() =>
            {
                using (socket) return Encoding.UTF8.GetString(Client.ReadToEnd(socket));
            });
        }

        public void Dispose() => reservation.Dispose();
    }
}
