using System.Diagnostics;
using Mono.Unix.Native;
using PreforkTemplates.Tests.Infrastructure;
using Xunit;
using Xunit.Abstractions;

namespace PreforkTemplates.Tests;

/// <summary>
/// A stopping HTTP worker drains its kept-alive connections (HandlerHost.Finish): every request
/// that begins once it stops is answered with Connection: close, and only a connection idle
/// through the whole drain is closed without one. The load here never sends a request again
/// (HttpLoad with resend: false, as wrk and load balancers' health checks do): a request the
/// server closes a connection on is a failure. And --write-timeout, whose value Kestrel takes
/// only from 2 s, is refused below that at start and on HUP. On 127.0.0.1, port 0; every wait
/// is bounded only to catch a hang.
/// </summary>
[Collection("template")]
public sealed class HttpDrainTests(TemplateFixture fixture, ITestOutputHelper output)
{
    private const int N = 4;
    private const int Clients = 32; // as wrk -c32
    private const int SoakRequests = 50_000;
    private static readonly TimeSpan Hang = TimeSpan.FromSeconds(30);

    /// <summary>The project with the tests' own endpoints (Handlers/Http.Handler.cs), its workers on the smallest gen0 budget.</summary>
    private async Task<ServerProcess> Start(params string[] args) =>
        ServerProcess.StartWith(await fixture.HttpBehaviourProjectAsync(), StartMode.AppHost, ServerProcess.TinyGen0(),
            ["--host", "127.0.0.1", "--port", "0", "--workers", N.ToString(), .. args]).WaitUntilReady();

    /// <summary>
    /// Kept-alive connections that the client keeps for <paramref name="perConnection"/>
    /// requests (wrk keeps them for ever; a new one now and then spreads them over the workers
    /// as they come and go), and no request sent twice.
    /// </summary>
    private static HttpLoad WrkLoad(int port, int perConnection = 200) =>
        new(port, Clients, perConnection, TimeSpan.FromSeconds(120), resend: false);

    /// <summary>
    /// Before a signal: SoakRequests answered on new and kept-alive connections (a new one every
    /// 5 requests: Kestrel allocates mostly per connection), none failed, and every worker has
    /// collected garbage at least 10 times.
    /// </summary>
    private void Soak(ServerProcess server)
    {
        using var soak = new HttpLoad(server.Port, clients: 16, perConnection: 5, TimeSpan.FromSeconds(120), resend: false);
        soak.WaitForSuccesses(SoakRequests, TimeSpan.FromSeconds(90));
        soak.Dispose();
        Assert.True(soak.Failures.Count == 0, "failures before any signal: " + soak.Summary());
        IReadOnlyList<(long Accepted, int Collections)> counts = server.WorkerCollections(N);
        Report($"HTTP drain soak; per worker, accepted connections/gen0 collections: {string.Join(", ", counts.Select(c => $"{c.Accepted}/{c.Collections}"))}", soak);
        Assert.Equal(N, counts.Count);
        Assert.All(counts, c => Assert.True(c.Collections >= 10, $"a worker collected garbage only {c.Collections} times"));
    }

    private void Report(string scenario, HttpLoad load) => output.Report($"{scenario}: {load.Summary()}");

    // ---- the master's operations under wrk-shaped load: no request fails -----------------------

    [Fact]
    public async Task HUP_under_wrk_shaped_load_fails_no_request()
    {
        using var server = await Start();
        IReadOnlyList<int> before = server.Children();
        Soak(server);
        using var load = WrkLoad(server.Port);
        load.WaitForSuccesses(2000);
        server.Signal(Signum.SIGHUP);
        server.WaitForLog($"HUP: all {N} workers replaced", Hang);
        Assert.True(Proc.WaitUntil(() => !before.Any(Proc.IsAlive), Hang), "old workers are still running");
        load.WaitForSuccesses(2000);
        load.Dispose();
        Report("HTTP drain, HUP", load);
        Assert.Empty(load.Failures);
        Assert.Empty(server.Children().Intersect(before));
    }

    [Fact]
    public async Task USR2_under_wrk_shaped_load_fails_no_request()
    {
        using var server = await Start();
        int oldMaster = server.MasterPid;
        IReadOnlyList<int> oldWorkers = server.Children();
        Soak(server);
        using var load = WrkLoad(server.Port);
        load.WaitForSuccesses(2000);
        server.Signal(Signum.SIGUSR2);
        server.WaitForLog("retired: the new master serves now", TimeSpan.FromSeconds(60));
        Assert.True(Proc.WaitUntil(() => !Proc.IsAlive(oldMaster) && !oldWorkers.Any(Proc.IsAlive), Hang));
        load.WaitForSuccesses(2000);
        load.Dispose();
        Report("HTTP drain, USR2", load);
        Assert.Empty(load.Failures);
    }

    /// <remarks>One worker of four stops each time, with an eighth of the connections: three times over (TTIN in between).</remarks>
    [Fact]
    public async Task TTOU_under_wrk_shaped_load_fails_no_request()
    {
        using var server = await Start();
        Soak(server);
        using var load = WrkLoad(server.Port);
        load.WaitForSuccesses(2000);
        for (int round = 1; round <= 3; round++)
        {
            IReadOnlyList<int> before = server.Children();
            server.Signal(Signum.SIGTTOU);
            server.WaitForLog($"TTOU: {N - 1} workers", Hang, count: round);
            Assert.True(Proc.WaitUntil(() => before.Count(Proc.IsAlive) == N - 1, Hang), "the worker TTOU stopped is still running");
            load.WaitForSuccesses(1000);
            int accepting = server.Log.Count(l => l.Contains(") accepting", StringComparison.Ordinal));
            server.Signal(Signum.SIGTTIN);
            server.WaitForLog($"TTIN: {N} workers", Hang, count: round);
            Assert.True(Proc.WaitUntil(() => server.Children().Count == N &&
                server.Log.Count(l => l.Contains(") accepting", StringComparison.Ordinal)) > accepting, Hang), "TTIN added no worker");
            load.WaitForSuccesses(1000);
        }
        load.Dispose();
        Report("HTTP drain, TTOU (three times)", load);
        Assert.Empty(load.Failures);
    }

    [Fact]
    public async Task Recycling_under_wrk_shaped_load_fails_no_request()
    {
        // A new connection every 20 requests, so that workers reach their limit and are replaced.
        using var server = await Start("--max-connections-per-worker", "100", "--max-connections-jitter", "50");
        using var load = WrkLoad(server.Port, perConnection: 20);
        Assert.True(Proc.WaitUntil(() => server.StartedWorkers().Count >= 3 * N, TimeSpan.FromSeconds(60)),
            "workers were not recycled: " + load.Summary() + "\n" + server.LogText);
        load.WaitForSuccesses(1000);
        load.Dispose();
        Report($"HTTP drain, recycling ({server.StartedWorkers().Count} workers started)", load);
        Assert.Empty(load.Failures);
    }

    // ---- TERM ------------------------------------------------------------------------------------

    [Fact]
    public async Task TERM_under_wrk_shaped_load_answers_every_request_sent_and_exits_0()
    {
        using var server = await Start();
        Soak(server);
        using var load = WrkLoad(server.Port);
        load.WaitForSuccesses(2000);
        var clock = Stopwatch.StartNew();
        server.Signal(Signum.SIGTERM);
        Assert.Equal(0, server.WaitForExit(Hang));
        TimeSpan took = clock.Elapsed;
        Thread.Sleep(200);
        load.Dispose();
        Report($"HTTP drain, TERM (exited in {took.TotalMilliseconds:0} ms)", load);
        // Every request sent was answered: only connections tried after the last worker
        // released the socket failed, refused.
        Assert.All(load.Failures, f => Assert.Equal(HttpLoad.Refused, f.Kind));
        Assert.DoesNotContain(server.Log, l => l.Contains("unfinished", StringComparison.Ordinal));
    }

    /// <remarks>
    /// The drain itself, step by step: idle kept-alive connections on every worker; after TERM,
    /// a request on one of them is answered with Connection: close and the connection closed;
    /// the others stay open through the drain (5 s with the defaults), then are closed, and
    /// the server exits 0. The time TERM takes is the drain's, reported.
    /// </remarks>
    [Fact]
    public async Task TERM_keeps_idle_connections_open_through_the_drain_and_answers_their_next_request_with_close()
    {
        using var server = await Start();
        var idle = new List<RawClient>();
        var byPid = new Dictionary<int, List<RawClient>>();
        try
        {
            // Three idle kept-alive connections on every worker.
            while (byPid.Count(p => p.Value.Count >= 3) < N && idle.Count < 300)
            {
                var client = RawClient.Connect(server.Port);
                idle.Add(client);
                client.Send("GET / HTTP/1.1\r\nHost: test\r\n\r\n");
                RawResponse response = client.ReadResponse();
                Assert.Equal((200, null), (response.Status, response.Header("Connection")));
                int pid = Client.PidOf(response.Body);
                if (!byPid.TryGetValue(pid, out List<RawClient>? list)) byPid[pid] = list = [];
                list.Add(client);
            }
            Assert.Equal(N, byPid.Count);
            Thread.Sleep(1200); // older than the first-request grace of a stopping worker

            var clock = Stopwatch.StartNew();
            server.Signal(Signum.SIGTERM);
            Assert.True(Proc.WaitUntil(() => server.Log.Count(l => l.StartsWith("[worker", StringComparison.Ordinal) &&
                (l.Contains("SIGTERM: finishing", StringComparison.Ordinal) || l.Contains("asked to stop as the last holder", StringComparison.Ordinal))) == N, Hang),
                "the workers were not told to stop:\n" + server.LogText);
            Thread.Sleep(2000); // well into the drain: a connection closed at once would show now

            foreach ((int pid, List<RawClient> clients) in byPid)
            {
                RawClient asking = clients[0];
                asking.Send("GET / HTTP/1.1\r\nHost: test\r\n\r\n");
                RawResponse answer = asking.ReadResponse();
                Assert.Equal((200, "close"), (answer.Status, answer.Header("Connection")));
                Assert.Equal(pid, Client.PidOf(answer.Body));
                Assert.True(asking.AtEnd(), "the connection stayed open after Connection: close");

                // An endpoint that throws: Kestrel's own 500 says it too.
                RawClient failing = clients[1];
                failing.Send("GET /throw HTTP/1.1\r\nHost: test\r\n\r\n");
                RawResponse error = failing.ReadResponse();
                Assert.Equal((500, "close"), (error.Status, error.Header("Connection")));
                Assert.True(failing.AtEnd(), "the connection stayed open after a 500 with Connection: close");
            }
            TimeSpan asked = clock.Elapsed;

            Assert.Equal(0, server.WaitForExit(Hang));
            TimeSpan took = clock.Elapsed;
            foreach (RawClient quiet in byPid.Values.SelectMany(c => c.Skip(2))) Assert.True(quiet.AtEnd(), "an idle connection was left open");
            string line = $"HTTP TERM with {idle.Count} idle kept-alive connections on {N} workers: exited {took.TotalMilliseconds:0} ms after TERM (requests on them answered with Connection: close {asked.TotalMilliseconds:0} ms after it)";
            output.Report(line);
            Assert.True(took >= TimeSpan.FromSeconds(4), "the drain ended early: " + line);
            Assert.True(took < TimeSpan.FromSeconds(10), "the drain outlasted its 5 s: " + line);
            Assert.DoesNotContain(server.Log, l => l.Contains("unfinished", StringComparison.Ordinal));
        }
        finally
        {
            idle.ForEach(c => c.Dispose());
        }
    }

    // ---- --write-timeout: the rule Kestrel applies, checked before a worker starts ----------------

    [Fact]
    public async Task Write_timeout_1_is_refused_at_start_with_exit_code_2()
    {
        using var server = ServerProcess.StartWith(await fixture.HttpBehaviourProjectAsync(), StartMode.AppHost, null,
            "--host", "127.0.0.1", "--port", "0", "--write-timeout", "1");
        Assert.Equal(2, server.WaitForExit(Hang));
        string line = Assert.Single(server.Log);
        output.WriteLine(line);
        Assert.Contains("--write-timeout: '1' is not a whole number from 2 to 3600", line);
        Assert.Empty(server.StartedWorkers());
    }

    [Fact]
    public async Task Write_timeout_1_in_the_configuration_is_refused_on_HUP_and_the_old_pool_serves()
    {
        string config = Path.Combine(fixture.WorkDir, $"http-{Guid.NewGuid():N}.conf");
        File.WriteAllText(config, "write-timeout = 2\n");
        using var server = await Start("--config", config);
        IReadOnlyList<int> before = server.Children();

        File.WriteAllText(config, "write-timeout = 1\n");
        server.Signal(Signum.SIGHUP);
        server.WaitForLog("HUP: configuration refused", Hang);
        string refused = Assert.Single(server.Log, l => l.Contains("HUP: configuration refused", StringComparison.Ordinal));
        output.WriteLine(refused);
        Assert.Contains(server.Log, l => l.Contains($"{config}:1: write-timeout: '1' is not a whole number from 2 to 3600", StringComparison.Ordinal));

        using var load = new HttpLoad(server.Port, clients: 4, perConnection: 5, resend: false);
        load.WaitForSuccesses(500);
        load.Dispose();
        Assert.Empty(load.Failures);
        Assert.Equal(before.Order(), server.Children().Order());
        Assert.Subset(before.ToHashSet(), load.PerPid.Keys.ToHashSet());
        Assert.Equal(N, server.StartedWorkers().Count); // no replacement was tried
    }
}
