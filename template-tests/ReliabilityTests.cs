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
/// The promises of the server where they break in production: after tens of thousands of
/// connections and many garbage collections (the server runs with the smallest gen0 budget
/// the runtime takes, so every worker collects every few dozen connections), under a load of
/// 16 clients that always have a connection open, counting every failed connection by kind.
/// </summary>
[Collection("template")]
public sealed partial class ReliabilityTests(TemplateFixture fixture, ITestOutputHelper output)
{
    private const int N = 5;
    private const int SoakConnections = 30_000;
    private const int MinimumCollections = 10; // per worker, before any signal

    private void Report(string line) => output.Report(line);

    /// <summary>
    /// The behaviour project with 5 workers on a quiet machine, after SoakConnections answered
    /// connections with no failure and at least MinimumCollections garbage collections in every
    /// worker (from USR1). The load goes on: the caller disposes both.
    /// </summary>
    private async Task<(ServerProcess Server, Load Load)> StartSoaked(Dictionary<string, string>? environment = null, params string[] args)
    {
        await fixture.AllBuiltAsync(); // no compiler beside the load
        string dir = await fixture.BehaviourProjectAsync();
        var env = ServerProcess.TinyGen0();
        foreach (var (key, value) in environment ?? new Dictionary<string, string>()) env[key] = value;
        var server = ServerProcess.StartWith(dir, StartMode.AppHost, env,
            ["--host", "127.0.0.1", "--port", "0", "--workers", N.ToString(CultureInfo.InvariantCulture), .. args]);
        Load? load = null;
        try
        {
            server.WaitUntilReady();
            load = new Load(server.Port, limit: TimeSpan.FromSeconds(180));
            load.WaitForSuccesses(SoakConnections, TimeSpan.FromSeconds(90));
            Assert.True(load.Failures.Count == 0, "failures before any signal: " + load.Summary());
            // Every worker that has served its share collected garbage many times (one started by
            // recycling a moment ago has not had the time).
            IReadOnlyList<(long Accepted, int Collections)> workers = server.WorkerCollections(N);
            Report($"soak: {load.Succeeded} connections answered; per worker, accepted/gen0 collections: {string.Join(", ", workers.Select(w => $"{w.Accepted}/{w.Collections}"))}");
            Assert.Contains(workers, w => w.Accepted >= 2000);
            Assert.All(workers.Where(w => w.Accepted >= 2000), w => Assert.True(w.Collections >= MinimumCollections,
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

    [Theory]
    [InlineData(Signum.SIGTERM)]
    [InlineData(Signum.SIGQUIT)]
    public async Task After_30000_connections_a_graceful_stop_finishes_the_slow_connection_serves_the_queue_and_refuses_new_clients(Signum signal)
    {
        // The slow client's port is known before the server starts: only its connection waits 3 s.
        using var slow = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        slow.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        int slowPort = ((IPEndPoint)slow.LocalEndPoint!).Port;
        var (server, load) = await StartSoaked(new() { ["SLOW_PORT"] = slowPort.ToString(CultureInfo.InvariantCulture), ["SLOW_MS"] = "3000" });
        using var _ = server;
        using var __ = load;

        slow.ReceiveTimeout = 20_000;
        slow.Connect(IPAddress.Loopback, server.Port);
        Thread.Sleep(300); // accepted, and waiting in the handler
        TimeSpan signalAt = load.Now;
        var clock = Stopwatch.StartNew();
        server.Signal(signal);
        Task<TimeSpan?> refusal = Client.FirstRefusalAsync(server.Port, clock, TimeSpan.FromSeconds(15));

        string reply = Encoding.UTF8.GetString(Client.ReadToEnd(slow));
        int? code = server.WaitForExit(TimeSpan.FromSeconds(30));
        TimeSpan exited = clock.Elapsed;
        TimeSpan? refusedAt = await refusal;
        Thread.Sleep(200);
        load.Dispose();
        TimeSpan? loadRefusedAt = load.Of(Load.Refused).FirstOrDefault()?.At - signalAt;
        Report($"{Posix(signal)} after {SoakConnections} connections, under load: {load.Summary()}; " +
               $"a new client is first refused {Ms(refusedAt)} after the signal (a load client {Ms(loadRefusedAt)}), the server exited after {Ms(exited)}");

        Assert.Equal(0, code);
        Assert.Matches(@"^Hello from \d+\n$", reply);
        // Every connection the kernel completed was answered: nothing reset, empty or cut short.
        Assert.All(load.Failures, f => Assert.Equal(Load.Refused, f.Kind));
        Assert.True(refusedAt is not null && refusedAt < TimeSpan.FromSeconds(1),
            $"new clients were first refused {Ms(refusedAt)} after {Posix(signal)}, not within 1 s:\n{server.LogText}");
        Assert.DoesNotContain(server.Log, l => l.Contains("was killed by", StringComparison.Ordinal));
    }

    [Fact]
    public async Task After_30000_connections_TERM_to_one_worker_drains_it_and_the_master_replaces_it()
    {
        var (server, load) = await StartSoaked();
        using var _ = server;
        using var __ = load;
        int worker = server.Children()[0];
        server.Signal(Signum.SIGTERM, worker);
        Assert.True(Proc.WaitUntil(() => !Proc.IsAlive(worker), TimeSpan.FromSeconds(10)), "the worker did not stop:\n" + server.LogText);
        Assert.True(Proc.WaitUntil(() => server.Children().Count == N, TimeSpan.FromSeconds(10)), "the worker was not replaced:\n" + server.LogText);
        load.WaitForSuccesses(1000);
        load.Dispose();
        Report($"TERM to one worker after {SoakConnections} connections: {load.Summary()}");

        Assert.Contains(server.Log, l => l.Contains($"(pid {worker}) exited with code 0", StringComparison.Ordinal));
        Assert.Empty(load.Failures);
    }

    [Fact]
    public async Task After_30000_connections_INT_stops_at_once()
    {
        var (server, load) = await StartSoaked();
        using var _ = server;
        using var __ = load;
        IReadOnlyList<int> workers = server.Children();
        var clock = Stopwatch.StartNew();
        server.Signal(Signum.SIGINT);
        Assert.Equal(0, server.WaitForExit(TimeSpan.FromSeconds(5)));
        Report($"INT after {SoakConnections} connections: the server exited after {Ms(clock.Elapsed)}");
        Assert.All(workers, w => Assert.False(Proc.IsAlive(w)));
        Assert.All(workers, w => Assert.Contains(server.Log, l => l.Contains($"[worker ", StringComparison.Ordinal) && l.Contains($" {w}] SIGINT: exiting now", StringComparison.Ordinal)));
    }

    [Fact]
    public async Task After_30000_connections_signals_to_the_whole_process_group_leave_every_worker_alive()
    {
        var (server, load) = await StartSoaked();
        using var _ = server;
        using var __ = load;

        // A terminal, or `kill -SIG -PGID`, sends these to the master and every worker at once.
        server.SignalGroup(Signum.SIGHUP);
        server.WaitForLog($"HUP: all {N} workers replaced", TimeSpan.FromSeconds(60));
        load.WaitForSuccesses(500);
        server.SignalGroup(Signum.SIGTTIN);
        server.WaitForLog($"TTIN: {N + 1} workers");
        Assert.True(Proc.WaitUntil(() => server.Children().Count == N + 1, TimeSpan.FromSeconds(10)), "TTIN did not add a worker:\n" + server.LogText);
        load.WaitForSuccesses(500);
        server.SignalGroup(Signum.SIGTTOU);
        server.WaitForLog($"TTOU: {N} workers");
        Assert.True(Proc.WaitUntil(() => server.Children().Count == N, TimeSpan.FromSeconds(10)), "TTOU did not remove a worker:\n" + server.LogText);
        load.WaitForSuccesses(500);
        server.SignalGroup(Signum.SIGUSR1);
        server.WaitForLog($"USR1: {N} workers", count: 2); // the first came from the soak's check
        load.WaitForSuccesses(500);
        IReadOnlyList<int> old = server.Children();
        server.SignalGroup(Signum.SIGUSR2);
        server.WaitForLog("retired: the new master serves now", TimeSpan.FromSeconds(60));
        Assert.True(Proc.WaitUntil(() => !old.Any(Proc.IsAlive), TimeSpan.FromSeconds(10)), "old workers outlived the retired master");
        load.WaitForSuccesses(500);
        load.Dispose();
        Report($"HUP, TTIN, TTOU, USR1, USR2 to the process group after {SoakConnections} connections: {load.Summary()}");

        Assert.Empty(load.Failures);
        Assert.DoesNotContain(server.Log, l => l.Contains("was killed by", StringComparison.Ordinal));
        Assert.All(server.Log.Where(l => l.Contains(" exited with code ", StringComparison.Ordinal) && l.Contains("(pid ", StringComparison.Ordinal)),
            l => Assert.EndsWith(" exited with code 0", l));
        // USR2's retirement ends every old worker with exit code 0.
        Assert.All(old, w => Assert.Contains(server.Log, l => l.Contains($"(pid {w}) exited with code 0", StringComparison.Ordinal)));
    }

    /// <remarks>
    /// A killed worker loses the connection it had accepted and not yet answered: the only
    /// failure allowed is that one empty answer, at most one per kill. Among the kills is, after
    /// each HUP, the worker being replaced, before its replacement is ready (that once crashed
    /// the master). Recycling replaces workers all the while too.
    /// </remarks>
    [Fact]
    public async Task A_20_second_signal_storm_under_load_leaves_the_pool_whole_and_the_master_without_leaked_descriptors()
    {
        var (server, load) = await StartSoaked(null, "--max-connections-per-worker", "15000", "--max-connections-jitter", "10000");
        using var _ = server;
        using var __ = load;
        int master = server.MasterPid;

        // Every operation once before the baseline, so the runtime has opened what it opens once.
        server.Signal(Signum.SIGHUP);
        server.WaitForLog($"HUP: all {N} workers replaced", TimeSpan.FromSeconds(60));
        server.Signal(Signum.SIGTTIN);
        server.WaitForLog($"TTIN: {N + 1} workers");
        server.Signal(Signum.SIGTTOU);
        server.WaitForLog($"TTOU: {N} workers");
        int killed = server.Children()[0];
        Syscall.kill(killed, Signum.SIGKILL);
        server.WaitForLog($"(pid {killed}) was killed by SIGKILL");
        var (baseline, before) = FewestOpenFiles(server, N, TimeSpan.FromSeconds(3));

        var random = new Random(7);
        var storm = Stopwatch.StartNew();
        int kills = 0, signals = 0, target = N;
        while (storm.Elapsed < TimeSpan.FromSeconds(20))
        {
            switch (random.Next(6))
            {
                case 0: // HUP, then kill the worker being replaced before its replacement is ready
                    int seen = server.Log.Count;
                    server.Signal(Signum.SIGHUP);
                    target = N; // a HUP reads --workers again
                    if (WaitForReplaced(server, seen) is int replaced && Syscall.kill(replaced, Signum.SIGKILL) == 0) kills++;
                    break;
                case 1 when target < 8:
                    server.Signal(Signum.SIGTTIN);
                    target++;
                    break;
                case 2 when target > 2:
                    server.Signal(Signum.SIGTTOU);
                    target--;
                    break;
                case 3:
                    server.Signal(Signum.SIGUSR1);
                    break;
                case 4:
                    IReadOnlyList<int> children = server.Children();
                    if (children.Count > 0 && Syscall.kill(children[random.Next(children.Count)], Signum.SIGKILL) == 0) kills++;
                    break;
                default:
                    continue;
            }
            signals++;
            Thread.Sleep(random.Next(100, 400));
        }

        Assert.True(Proc.IsAlive(master), "the master died in the storm:\n" + server.LogText);
        server.SignalAndWaitForLog(Signum.SIGUSR1, "USR1: ");
        Assert.Contains(server.Log, l => l.Contains($" workers (target {target}), generation ", StringComparison.Ordinal));
        Assert.True(Proc.WaitUntil(() => server.Children().Count == target, TimeSpan.FromSeconds(20)),
            $"the pool did not come back to {target} (has {server.Children().Count}):\n" + server.LogText);
        // One at a time: a signal sent again before the first is handled is delivered once.
        for (; target < N; target++) server.SignalAndWaitForLog(Signum.SIGTTIN, $"TTIN: {target + 1} workers");
        for (; target > N; target--) server.SignalAndWaitForLog(Signum.SIGTTOU, $"TTOU: {target - 1} workers");
        Assert.True(Proc.WaitUntil(() => server.Children().Count == N, TimeSpan.FromSeconds(20)), "the pool did not come back to 5:\n" + server.LogText);
        load.WaitForSuccesses(1000);
        var (after, left) = FewestOpenFiles(server, N, TimeSpan.FromSeconds(15), stopAt: baseline);
        Dictionary<string, int> was = Kinds(before), now = Kinds(left);
        string assemblies = string.Join(", ", now.Where(k => k.Key.EndsWith(".dll", StringComparison.Ordinal) && k.Value > was.GetValueOrDefault(k.Key)).Select(k => Path.GetFileName(k.Key)));
        load.Dispose();
        Report($"signal storm, 20 s ({signals} signals, {kills} worker kills, recycling): {load.Summary()}; " +
               $"master descriptors other than assemblies: {baseline} before, {after} after (assemblies loaded since: {(assemblies.Length == 0 ? "none" : assemblies)}); " +
               $"{server.StartedWorkers().Count} workers started in all");

        Assert.DoesNotContain(server.Log, l => l.Contains("unexpected error", StringComparison.Ordinal));
        Assert.All(load.Failures, f => Assert.Equal(Load.Empty, f.Kind));
        Assert.True(load.Failures.Count <= kills, $"{load.Failures.Count} connections lost for {kills} kills");
        // Pipes and sockets are what workers cost the master: there must be no more than before.
        // An assembly the runtime loads the first time a path runs (2 descriptors each) is not a leak.
        Assert.True(after <= baseline, $"the master has {after} descriptors (not counting assemblies) open after the storm, {baseline} before; more of: " +
            string.Join(", ", now.Where(k => k.Value > was.GetValueOrDefault(k.Key)).Select(k => $"{k.Key} ({was.GetValueOrDefault(k.Key)} -> {k.Value})")));
    }

    /// <summary>After a HUP, the pid of the first worker being replaced, once its replacement has started.</summary>
    private static int? WaitForReplaced(ServerProcess server, int seenLines)
    {
        int? pid = null;
        Proc.WaitUntil(() =>
        {
            Match match = server.Log.Skip(seenLines).Select(l => ReplaceLine().Match(l)).FirstOrDefault(m => m.Success) ?? Match.Empty;
            if (match.Success) pid = int.Parse(match.Groups[1].Value, CultureInfo.InvariantCulture);
            return match.Success;
        }, TimeSpan.FromSeconds(2));
        return pid;
    }

    [GeneratedRegex(@"started to replace pid (\d+)")]
    private static partial Regex ReplaceLine();

    /// <summary>
    /// The fewest descriptors that are not assemblies (and all that are open then) the master
    /// has over <paramref name="period"/>, counted while it has <paramref name="workers"/> workers
    /// (a worker being started or reaped holds two more for a moment); stops early at
    /// <paramref name="stopAt"/> or fewer.
    /// </summary>
    private static (int Count, IReadOnlyList<string> Targets) FewestOpenFiles(ServerProcess server, int workers, TimeSpan period, int stopAt = 0)
    {
        (int Count, IReadOnlyList<string> Targets) fewest = (int.MaxValue, []);
        Proc.WaitUntil(() =>
        {
            if (server.Children().Count == workers)
            {
                IReadOnlyList<string> open = Proc.OpenFiles(server.MasterPid);
                int count = open.Count(o => !o.EndsWith(".dll", StringComparison.Ordinal));
                if (count < fewest.Count) fewest = (count, open);
            }
            return fewest.Count <= stopAt;
        }, period);
        return fewest;
    }

    /// <summary>Open descriptors counted by what they are: "pipe", "socket", or the file's path.</summary>
    private static Dictionary<string, int> Kinds(IReadOnlyList<string> open) =>
        open.Select(o => o[(o.IndexOf("-> ", StringComparison.Ordinal) + 3)..].Split(':')[0])
            .GroupBy(k => k).ToDictionary(g => g.Key, g => g.Count());

    [Fact]
    public async Task With_few_descriptors_a_worker_stops_accepting_instead_of_aborting_and_serves_again_when_clients_leave()
    {
        string dir = await fixture.BuiltAsync(TemplateFixture.Get("handler-echo"));
        // `ulimit -n` sets the soft and the hard limit: the server cannot raise it.
        using var server = ServerProcess.StartCommand(["bash", "-c", "ulimit -n 256 && exec \"$@\"", "server",
            ServerProcess.ProgramOf(dir), "--host", "127.0.0.1", "--port", "0", "--workers", "2"]).WaitUntilReady();
        IReadOnlyList<int> workers = server.Children();
        int capacity = server.Log.Select(l => CapacityLine().Match(l)).Where(m => m.Success)
            .Sum(m => int.Parse(m.Groups[1].Value, CultureInfo.InvariantCulture));
        Assert.True(capacity > 0, "the workers did not say how many connections the descriptor limit leaves them:\n" + server.LogText);

        // More idle clients than the limit allows: each sends a line, and is answered once accepted.
        var clients = new List<EchoClient>();
        try
        {
            for (int i = 0; i < capacity + 100; i++) clients.Add(new EchoClient(server.Port, i));
            server.WaitForLog("not accepting until one closes (the descriptor limit (ulimit -n 256)", count: 2);
            Thread.Sleep(500);
            int answered = clients.Count(c => c.Answered("first", TimeSpan.FromMilliseconds(50)));
            Assert.Equal(capacity, answered);
            Assert.Equal(workers.Order(), server.Children().Order());

            // Clients leave: the ones waiting in the queue are served, and those served stay served.
            List<EchoClient> leaving = [.. clients.Where(c => c.HasAnswered).Take(150)];
            foreach (EchoClient client in leaving) client.Dispose();
            clients.RemoveAll(leaving.Contains);
            Assert.All(clients, c => Assert.True(c.Answered("first", TimeSpan.FromSeconds(10)) && c.Echoes("second", TimeSpan.FromSeconds(10)),
                $"client {c.Number} was not served after others left:\n{server.LogText}"));
            server.WaitForLog("accepting again");
            Report($"ulimit -n 256, 2 workers: room for {capacity} connections, {capacity + 100} clients; " +
                   $"{answered} served at once, every one of the other {clients.Count} served once 150 left");
        }
        finally
        {
            foreach (EchoClient client in clients) client.Dispose();
        }
        Assert.DoesNotContain(server.Log, l => l.Contains("was killed by", StringComparison.Ordinal) || l.Contains("unexpected error", StringComparison.Ordinal));
        Assert.Equal(workers.Order(), server.Children().Order());
    }

    [GeneratedRegex(@"serving at most (\d+) connections at once: the descriptor limit \(ulimit -n 256\)")]
    private static partial Regex CapacityLine();

    [Fact]
    public async Task A_descriptor_limit_too_small_to_run_is_one_clear_line_and_exit_code_2()
    {
        string program = ServerProcess.ProgramOf(await fixture.BehaviourProjectAsync());
        using var server = ServerProcess.StartCommand(["bash", "-c", "ulimit -n 64 && exec \"$@\"", "server", program, "--port", "0"]);
        Assert.Equal(2, server.WaitForExit(TimeSpan.FromSeconds(30)));
        Assert.Equal("Behave: the limit of open files (ulimit -n) is 64; the server needs at least 128", Assert.Single(server.Log));
    }

    [Fact]
    public async Task As_PID_1_of_a_PID_namespace_it_reaps_orphans_and_stops_on_TERM()
    {
        Assert.True(Syscall.geteuid() == 0, "a new PID namespace (unshare --pid) needs root");
        string program = ServerProcess.ProgramOf(await fixture.BehaviourProjectAsync());
        using var server = ServerProcess.StartCommand(["unshare", "--pid", "--fork", "--mount-proc", program,
            "--host", "127.0.0.1", "--port", "0", "--workers", "2"]).WaitUntilReady();
        Assert.Equal(1, server.MasterPid); // as the server sees itself, inside the namespace
        int master = Assert.Single(Proc.ChildrenOf(server.Pid)); // as this machine sees it: never signal pid 1 here
        IReadOnlyList<int> workers = Proc.ChildrenOf(master);
        Assert.Equal(2, workers.Count);

        // Two processes whose parent exits at once: the kernel gives them to the namespace's PID 1.
        CliResult orphans = await Cli.RunAsync("nsenter", ["--target", master.ToString(CultureInfo.InvariantCulture), "--pid", "--",
            "/bin/sh", "-c", "for i in 1 2; do sleep 1 </dev/null >/dev/null 2>&1 & done; exit 0"], timeout: TimeSpan.FromSeconds(30));
        Assert.True(orphans.ExitCode == 0, Cli.Describe(orphans));
        Assert.True(Proc.ChildrenOf(master).Count == 4, $"the orphans are not the server's children: {string.Join(", ", Proc.ChildrenOf(master))}");
        Assert.True(Proc.WaitUntil(() => Proc.ChildrenOf(master).Count == 2 && Proc.ZombiesOf(master).Count == 0, TimeSpan.FromSeconds(10)),
            $"orphans were not reaped: zombies {string.Join(", ", Proc.ZombiesOf(master))}\n{server.LogText}");
        Assert.Equal(workers.Order(), Proc.ChildrenOf(master).Order());
        Assert.Equal(2, Client.PidsUntil(server.Port, 2).Count);

        Assert.Equal(0, Syscall.kill(master, Signum.SIGTERM));
        Assert.Equal(0, server.WaitForExit(TimeSpan.FromSeconds(30)));
        Assert.Contains(server.Log, l => l.Contains("SIGTERM: graceful shutdown", StringComparison.Ordinal));
    }

    private static string Posix(Signum signal) => signal.ToString()[3..];

    private static string Ms(TimeSpan? time) => time is null ? "never" : $"{time.Value.TotalMilliseconds:0} ms";

    /// <summary>A client of the echo server that connects, sends "first N\n", and then waits.</summary>
    private sealed class EchoClient : IDisposable
    {
        private readonly Socket socket = new(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        private readonly StringBuilder received = new();

        public int Number { get; }
        public bool HasAnswered { get; private set; }

        public EchoClient(int port, int number)
        {
            Number = number;
            socket.Connect(IPAddress.Loopback, port); // the kernel completes it, accepted or not
            socket.Send(Encoding.ASCII.GetBytes($"first {number}\n"));
        }

        /// <summary>True once the echo of <paramref name="word"/>'s line has come back.</summary>
        public bool Answered(string word, TimeSpan wait)
        {
            string line = $"{word} {Number}\n";
            var limit = Stopwatch.StartNew();
            var chunk = new byte[256];
            while (!received.ToString().Contains(line, StringComparison.Ordinal))
            {
                TimeSpan left = wait - limit.Elapsed;
                if (left <= TimeSpan.Zero || !socket.Poll(left, SelectMode.SelectRead)) return false;
                int n = socket.Receive(chunk);
                if (n == 0) return false;
                received.Append(Encoding.ASCII.GetString(chunk, 0, n));
            }
            if (word == "first") HasAnswered = true;
            return true;
        }

        /// <summary>Sends another line and waits for its echo.</summary>
        public bool Echoes(string word, TimeSpan wait)
        {
            socket.Send(Encoding.ASCII.GetBytes($"{word} {Number}\n"));
            return Answered(word, wait);
        }

        public void Dispose() => socket.Dispose();
    }
}
