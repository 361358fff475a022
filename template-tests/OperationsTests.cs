using System.Net;
using System.Net.Sockets;
using System.Text;
using Mono.Unix.Native;
using PreforkTemplates.Tests.Infrastructure;
using Xunit;
using Xunit.Abstractions;

namespace PreforkTemplates.Tests;

/// <summary>
/// Operating the generated server the way Unicorn and Gunicorn are operated, each under a
/// load of 16 clients that always have a connection open, counting every failed one.
/// </summary>
[Collection("template")]
public sealed class OperationsTests(TemplateFixture fixture, ITestOutputHelper output)
{
    private const int N = 5;

    private async Task<ServerProcess> Start(IDictionary<string, string>? environment = null, params string[] args)
    {
        string dir = await fixture.BehaviourProjectAsync();
        return ServerProcess.StartWith(dir, StartMode.AppHost, environment,
            ["--host", "127.0.0.1", "--port", "0", "--workers", N.ToString(), .. args]).WaitUntilReady();
    }

    private void Report(string scenario, Load load) => output.Report($"{scenario}: {load.Summary()}");

    /// <remarks>
    /// A worker killed with SIGKILL loses the connection it had accepted and not yet answered
    /// (the kernel closes it): no server can avoid that. What must never happen is a refused
    /// or reset connection, a gap in service, or a connection lost by a worker still alive:
    /// so every failure must be an empty answer, and there are at most as many as kills.
    /// </remarks>
    [Fact]
    public async Task Killing_a_worker_every_200ms_loses_only_what_the_killed_worker_held()
    {
        using var server = await Start();
        using var load = new Load(server.Port);
        load.WaitForSuccesses(100);
        var random = new Random(1);
        int kills = 0;
        for (int i = 0; i < 25; i++)
        {
            IReadOnlyList<int> children = server.Children();
            if (children.Count > 0 && Syscall.kill(children[random.Next(children.Count)], Signum.SIGKILL) == 0) kills++;
            Thread.Sleep(200);
        }
        Assert.True(Proc.WaitUntil(() => server.Children().Count == N, TimeSpan.FromSeconds(10)), "the pool did not come back to 5:\n" + server.LogText);
        load.WaitForSuccesses(200);
        load.Dispose();
        Report($"worker SIGKILL every 200 ms for 5 s ({kills} kills)", load);
        Assert.All(load.Failures, f => Assert.Equal(Load.Empty, f.Kind));
        Assert.True(load.Failures.Count <= kills, $"{load.Failures.Count} connections lost for {kills} kills");
        Assert.True(load.LongestGap() < TimeSpan.FromSeconds(1), $"service stopped for {load.LongestGap()}");
        Assert.Equal(server.Children().Order(), Client.PidsUntil(server.Port, N).Order());
    }

    [Fact]
    public async Task HUP_replaces_every_worker_one_at_a_time_under_load()
    {
        using var server = await Start();
        IReadOnlyList<int> before = server.Children();
        using var load = new Load(server.Port);
        load.WaitForSuccesses(100);

        int fewest = int.MaxValue;
        server.Signal(Signum.SIGHUP);
        Assert.True(Proc.WaitUntil(() =>
        {
            fewest = Math.Min(fewest, server.Children().Count);
            return server.Log.Any(l => l.Contains("HUP: all 5 workers replaced", StringComparison.Ordinal));
        }, TimeSpan.FromSeconds(30)), "the rolling restart did not finish:\n" + server.LogText);
        Assert.True(Proc.WaitUntil(() => !before.Any(Proc.IsAlive), TimeSpan.FromSeconds(10)), "old workers are still running");
        TimeSpan after = load.Now;
        load.WaitForSuccesses(200);
        load.Dispose();
        Report("HUP rolling restart", load);

        Assert.Empty(load.Failures);
        Assert.True(fewest >= N - 1, $"only {fewest} workers were running at one point");
        IReadOnlyList<int> now = server.Children();
        Assert.Equal(N, now.Count);
        Assert.Empty(now.Intersect(before));
        Assert.True(load.PidsSince(after).IsSubsetOf(now));
        // Each old worker was told to stop only once its replacement accepted.
        Assert.Equal(N, server.Log.Count(l => l.Contains("accepting; stopping pid", StringComparison.Ordinal)));
    }

    [Fact]
    public async Task HUP_with_a_bad_configuration_keeps_the_old_pool()
    {
        string config = Path.Combine(fixture.WorkDir, $"server-{Guid.NewGuid():N}.conf");
        File.WriteAllText(config, "greeting = first {pid}\n");
        using var server = await Start(null, "--config", config);
        Assert.StartsWith("first ", Client.Greet(server.Port));
        IReadOnlyList<int> before = server.Children();

        File.WriteAllText(config, "workers = none\n");
        server.Signal(Signum.SIGHUP);
        server.WaitForLog("HUP: configuration refused");
        Assert.Contains(server.Log, l => l.Contains($"{config}:1: workers: 'none' is not a whole number", StringComparison.Ordinal));
        Assert.Equal(before.Order(), server.Children().Order());

        File.WriteAllText(config, "greeting = second {pid}\n");
        server.Signal(Signum.SIGHUP);
        server.WaitForLog("HUP: all 5 workers replaced");
        Assert.True(Proc.WaitUntil(() => !before.Any(Proc.IsAlive), TimeSpan.FromSeconds(10)));
        Assert.StartsWith("second ", Client.Greet(server.Port));
    }

    [Fact]
    public async Task TTIN_and_TTOU_add_and_remove_one_worker_under_load()
    {
        using var server = await Start();
        using var load = new Load(server.Port);
        load.WaitForSuccesses(100);

        server.Signal(Signum.SIGTTIN);
        server.WaitForLog("TTIN: 6 workers");
        Assert.True(Proc.WaitUntil(() => server.Children().Count == N + 1, TimeSpan.FromSeconds(10)));
        load.WaitForSuccesses(200);

        server.Signal(Signum.SIGTTOU);
        server.WaitForLog("TTOU: 5 workers");
        Assert.True(Proc.WaitUntil(() => server.Children().Count == N, TimeSpan.FromSeconds(10)));
        load.WaitForSuccesses(200);
        load.Dispose();
        Report("TTIN then TTOU", load);
        Assert.Empty(load.Failures);
    }

    [Fact]
    public async Task USR1_logs_one_line_per_worker()
    {
        using var server = await Start();
        for (int i = 0; i < 20; i++) Client.Greet(server.Port);
        Thread.Sleep(700); // a heartbeat carries the counts
        server.Signal(Signum.SIGUSR1);
        server.WaitForLog("USR1: 5 workers");
        foreach (int pid in server.Children())
            server.WaitForLog($"pid {pid}: age ");
        string[] lines = [.. server.Log.Where(l => l.Contains(": age ", StringComparison.Ordinal))];
        Assert.Equal(N, lines.Length);
        Assert.All(lines, l => Assert.Matches(@"worker \d pid \d+: age [\d.]+s, accepted \d+, in flight \d+, garbage collections \d+, last heartbeat [\d.]+s ago", l));
        Assert.Equal(20, lines.Sum(l => int.Parse(System.Text.RegularExpressions.Regex.Match(l, @"accepted (\d+)").Groups[1].Value)));
    }

    [Fact]
    public async Task USR2_hands_the_socket_to_a_new_master_under_load()
    {
        string pidFile = Path.Combine(fixture.WorkDir, $"server-{Guid.NewGuid():N}.pid");
        using var server = await Start(null, "--pid-file", pidFile);
        int oldMaster = server.MasterPid;
        Assert.Equal(oldMaster.ToString(), File.ReadAllText(pidFile).Trim());
        IReadOnlyList<int> oldWorkers = server.Children();
        using var load = new Load(server.Port);
        load.WaitForSuccesses(100);

        server.Signal(Signum.SIGUSR2);
        server.WaitForLog("retired: the new master serves now", TimeSpan.FromSeconds(60));
        Assert.True(Proc.WaitUntil(() => !Proc.IsAlive(oldMaster) && !oldWorkers.Any(Proc.IsAlive), TimeSpan.FromSeconds(10)));
        int newMaster = int.Parse(File.ReadAllText(pidFile).Trim());
        Assert.NotEqual(oldMaster, newMaster);
        Assert.True(Proc.IsAlive(newMaster));
        IReadOnlyList<int> newWorkers = Proc.ChildrenOf(newMaster);
        Assert.Equal(N, newWorkers.Count);

        TimeSpan after = load.Now;
        load.WaitForSuccesses(200);
        load.Dispose();
        Report("USR2 upgrade", load);
        Assert.Empty(load.Failures);
        Assert.True(load.PidsSince(after).IsSubsetOf(newWorkers), "a pid that is not the new master's worker answered after the upgrade");
    }

    [Fact]
    public async Task USR2_with_a_build_that_cannot_start_keeps_the_old_master()
    {
        // A copy of the build, so that it can be broken on disk as a bad deployment would.
        string dir = await fixture.BehaviourProjectAsync();
        string copy = Path.Combine(fixture.WorkDir, $"broken-{Guid.NewGuid():N}");
        Tree.Copy(ServerProcess.OutputOf(dir), copy);
        using var server = ServerProcess.StartCommand([Path.Combine(copy, "Behave"), "--host", "127.0.0.1", "--port", "0", "--workers", "5"]).WaitUntilReady();
        IReadOnlyList<int> workers = server.Children();
        using var load = new Load(server.Port);
        load.WaitForSuccesses(100);

        // Deployed as tools do it: a new file renamed over the old, which running processes keep.
        File.WriteAllText(Path.Combine(copy, "Behave.dll.new"), "not an assembly");
        File.Move(Path.Combine(copy, "Behave.dll.new"), Path.Combine(copy, "Behave.dll"), overwrite: true);
        server.Signal(Signum.SIGUSR2);
        server.WaitForLog("before it was ready; this master keeps serving", TimeSpan.FromSeconds(60));
        load.WaitForSuccesses(200);
        load.Dispose();
        Report("USR2 with a broken build", load);
        Assert.Empty(load.Failures);
        Assert.True(Proc.IsAlive(server.MasterPid));
        Assert.Equal(workers.Order(), server.Children().Order());
    }

    [Fact]
    public async Task A_worker_stuck_in_its_handler_is_killed_and_replaced()
    {
        string hang = Path.Combine(fixture.WorkDir, $"hang-{Guid.NewGuid():N}");
        using var server = await Start(new Dictionary<string, string> { ["HANG_FILE"] = hang }, "--worker-timeout", "2");
        IReadOnlyList<int> before = server.Children();
        File.WriteAllText(hang, "");
        using var stuck = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        stuck.Connect(IPAddress.Loopback, server.Port); // one worker takes it and blocks forever
        Assert.True(Proc.WaitUntil(() => File.Exists(hang + ".taken"), TimeSpan.FromSeconds(10)));

        server.WaitForLog("(--worker-timeout 2s); killing it", TimeSpan.FromSeconds(20));
        Assert.True(Proc.WaitUntil(() => server.Children().Count == N && server.Children().Except(before).Count() == 1, TimeSpan.FromSeconds(10)),
            "the hung worker was not replaced:\n" + server.LogText);
        Assert.Contains(server.Log, l => l.Contains("was killed by SIGKILL", StringComparison.Ordinal));
        Assert.Equal(N, Client.PidsUntil(server.Port, N).Count);
    }

    /// <remarks>
    /// The handler goes on on the thread pool after its first await, and there blocks every
    /// thread: the accepting thread is free, but the heartbeat, which goes through the pool,
    /// stops, and the master replaces the worker.
    /// </remarks>
    [Fact]
    public async Task A_worker_whose_handler_blocks_the_thread_pool_is_killed_and_replaced()
    {
        string block = Path.Combine(fixture.WorkDir, $"block-{Guid.NewGuid():N}");
        using var server = await Start(new Dictionary<string, string> { ["BLOCK_POOL_FILE"] = block }, "--worker-timeout", "2");
        IReadOnlyList<int> before = server.Children();
        File.WriteAllText(block, "");
        using var stuck = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        stuck.Connect(IPAddress.Loopback, server.Port); // one worker takes it and blocks its pool
        Assert.True(Proc.WaitUntil(() => File.Exists(block + ".taken"), TimeSpan.FromSeconds(10)));

        server.WaitForLog("the thread pool has run nothing", TimeSpan.FromSeconds(20));
        server.WaitForLog("(--worker-timeout 2s); killing it", TimeSpan.FromSeconds(20));
        Assert.True(Proc.WaitUntil(() => server.Children().Count == N && server.Children().Except(before).Count() == 1, TimeSpan.FromSeconds(10)),
            "the worker whose pool was blocked was not replaced:\n" + server.LogText);
        Assert.Equal(N, Client.PidsUntil(server.Port, N).Count);
    }

    [Fact]
    public async Task Workers_are_recycled_after_their_connection_limit_under_load()
    {
        using var server = await Start(null, "--max-connections-per-worker", "300", "--max-connections-jitter", "100");
        IReadOnlyList<int> first = server.Children();
        using var load = new Load(server.Port);
        Assert.True(Proc.WaitUntil(() => server.StartedWorkers().Count >= 2 * N, TimeSpan.FromSeconds(30)),
            "workers were not recycled:\n" + server.LogText);
        load.WaitForSuccesses(200);
        load.Dispose();
        Report("recycling (300 + up to 100 connections per worker)", load);
        Assert.Empty(load.Failures);
        Assert.Contains(server.Log, l => l.Contains("reached --max-connections-per-worker; replacing it", StringComparison.Ordinal));
        Assert.True(load.PerPid.Count > N, $"only {load.PerPid.Count} pids served");
        Assert.True(Proc.WaitUntil(() => server.Children().Count == N, TimeSpan.FromSeconds(10)));
        Assert.NotEqual(first.Order(), server.Children().Order());
    }

    [Fact]
    public async Task QUIT_under_load_finishes_every_accepted_connection()
    {
        using var server = await Start();
        IReadOnlyList<int> workers = server.Children();
        using var load = new Load(server.Port, limit: TimeSpan.FromSeconds(30));
        load.WaitForSuccesses(200);

        server.Signal(Signum.SIGQUIT);
        Assert.True(Proc.WaitUntil(() => !workers.Any(Proc.IsAlive), TimeSpan.FromSeconds(20)));
        Assert.Equal(0, server.WaitForExit(TimeSpan.FromSeconds(20)));
        Thread.Sleep(200);
        load.Dispose();
        Report("QUIT under load", load);

        // Every connection the kernel completed was answered: the workers served the queue before
        // they released the socket, and the clients that came after were refused.
        Assert.All(load.Failures, f => Assert.Equal(Load.Refused, f.Kind));
        Assert.NotEmpty(load.Of(Load.Refused));
    }

    [Fact]
    public async Task Socket_activation_and_sd_notify_with_systemd_socket_activate()
    {
        string binary = ServerProcess.ProgramOf(await fixture.BehaviourProjectAsync());
        Assert.True(File.Exists("/usr/bin/systemd-socket-activate"), "systemd-socket-activate is not installed (.ci/run installs Debian's systemd package)");
        string notifyPath = Path.Combine(fixture.WorkDir, $"notify-{Guid.NewGuid():N}.sock");
        using var notify = new Socket(AddressFamily.Unix, SocketType.Dgram, ProtocolType.Unspecified);
        notify.Bind(new UnixDomainSocketEndPoint(notifyPath));
        int port = Client.FreePort();

        using var server = ServerProcess.StartCommand(["systemd-socket-activate", "-l", $"127.0.0.1:{port}",
            "-E", $"NOTIFY_SOCKET={notifyPath}", binary, "--workers", "3"]);
        // systemd-socket-activate starts the server on the first connection; it waits in the queue.
        Task<string> first = Task.Run(() =>
        {
            for (int attempt = 0; ; attempt++)
            {
                try { return Client.Greet(port); }
                catch (SocketException e) when (e.SocketErrorCode == SocketError.ConnectionRefused && attempt < 200)
                {
                    Thread.Sleep(50); // systemd-socket-activate is not listening yet
                }
            }
        });

        var buffer = new byte[4096];
        notify.ReceiveTimeout = 30_000;
        string message = Encoding.UTF8.GetString(buffer, 0, notify.Receive(buffer));
        // At READY=1 every worker must already accept: all three run, and the master had logged
        // "pool ready" (it does so only once each worker has said it accepts) before notifying.
        // systemd-socket-activate executes the master in its own process, so its pid is the
        // master's; the log line that tells it may not have been read yet.
        int children = Proc.ChildrenOf(server.Pid).Count;
        Assert.Contains("READY=1", message);
        Assert.Equal(3, children);
        server.WaitForLog("pool ready: 3 workers accepting", TimeSpan.FromSeconds(5));
        Assert.Contains(server.Log, l => l.Contains("(socket from systemd)", StringComparison.Ordinal));
        Assert.Matches(@"^Hello from \d+\n$", await first.WaitAsync(TimeSpan.FromSeconds(30)));

        server.Signal(Signum.SIGTERM);
        string stopping = Encoding.UTF8.GetString(buffer, 0, notify.Receive(buffer));
        Assert.Equal("STOPPING=1", stopping);
        Assert.Equal(0, server.WaitForExit(TimeSpan.FromSeconds(20)));
    }
}
