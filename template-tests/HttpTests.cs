using System.Diagnostics;
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
/// The --handler http choice: ASP.NET Core in every worker, on the connections the worker
/// accepts. HTTP itself is Kestrel's; these tests check the integration: the generated
/// endpoint, the fair hand-out, the master's promises (HUP, USR2, recycling, TTIN/TTOU, a
/// killed worker, a graceful stop, a hung worker) under keep-alive load, and the log. On
/// 127.0.0.1, port 0; every wait is bounded only to catch a hang.
/// </summary>
[Collection("template")]
public sealed class HttpTests(TemplateFixture fixture, ITestOutputHelper output)
{
    private const int N = 4;
    private static readonly TimeSpan Hang = TimeSpan.FromSeconds(30);

    /// <summary>The generated project, as `dotnet new prefork-server --handler http` writes it.</summary>
    private async Task<ServerProcess> StartGenerated(params string[] args) =>
        ServerProcess.Start(await fixture.BuiltAsync(TemplateFixture.Get("handler-http")),
            ["--host", "127.0.0.1", "--port", "0", "--workers", N.ToString(), .. args]).WaitUntilReady();

    /// <summary>
    /// The project with the tests' own endpoints (Handlers/Http.Handler.cs), its workers on the
    /// smallest gen0 budget, so they collect garbage all the time.
    /// </summary>
    private async Task<ServerProcess> Start(params string[] args) =>
        ServerProcess.StartWith(await fixture.HttpBehaviourProjectAsync(), StartMode.AppHost, ServerProcess.TinyGen0(),
            ["--host", "127.0.0.1", "--port", "0", "--workers", N.ToString(), .. args]).WaitUntilReady();

    private const int SoakRequests = 50_000;

    /// <summary>
    /// Before a signal: SoakRequests answered (on new and kept-alive connections), none failed,
    /// and every worker has collected garbage at least 10 times (the master's USR1 statistics).
    /// </summary>
    private void Soak(ServerProcess server, HttpLoad load, int workers = N)
    {
        load.WaitForSuccesses(SoakRequests, TimeSpan.FromSeconds(90));
        Assert.True(load.Failures.Count == 0, "failures before any signal: " + load.Summary());
        IReadOnlyList<(long Accepted, int Collections)> counts = server.WorkerCollections(workers);
        Report($"HTTP soak; per worker, accepted connections/gen0 collections: {string.Join(", ", counts.Select(c => $"{c.Accepted}/{c.Collections}"))}", load);
        Assert.Equal(workers, counts.Count);
        Assert.All(counts, c => Assert.True(c.Collections >= 10, $"a worker collected garbage only {c.Collections} times"));
    }

    private void Report(string scenario, HttpLoad load) => output.Report($"{scenario}: {load.Summary()}");

    private static HttpClient NewHttpClient() => new(new SocketsHttpHandler { UseProxy = false }) { Timeout = Hang };

    // ---- the generated endpoint ------------------------------------------------------------

    [Fact]
    public async Task Get_answers_HttpClient_with_the_greeting_of_a_worker()
    {
        using var server = await StartGenerated();
        using HttpClient http = NewHttpClient();
        var pids = new HashSet<int>();
        for (int i = 0; i < 20; i++)
        {
            using HttpResponseMessage response = await http.GetAsync($"http://127.0.0.1:{server.Port}/");
            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
            Assert.Equal("text/plain; charset=utf-8", response.Content.Headers.ContentType?.ToString());
            Assert.NotNull(response.Headers.Date);
            string body = await response.Content.ReadAsStringAsync();
            Assert.Equal(Encoding.UTF8.GetByteCount(body), response.Content.Headers.ContentLength);
            Assert.Matches(@"^Hello from \d+\n$", body);
            pids.Add(Client.PidOf(body));
        }
        Assert.Subset(server.Children().ToHashSet(), pids);

        using HttpResponseMessage missing = await http.GetAsync($"http://127.0.0.1:{server.Port}/no/such/path");
        Assert.Equal(HttpStatusCode.NotFound, missing.StatusCode);
        using HttpResponseMessage put = await http.PutAsync($"http://127.0.0.1:{server.Port}/", new StringContent("x"));
        Assert.Equal(HttpStatusCode.MethodNotAllowed, put.StatusCode);
        // Only the master's own lines and the workers' start: ASP.NET Core logs from Warning up.
        Assert.DoesNotContain(server.Log, l => l.Contains("Microsoft.", StringComparison.Ordinal));
    }

    /// <remarks>
    /// Kestrel's own transport on the inherited socket (ListenHandle) accepts in every worker at
    /// once, and the quickest takes most connections (47/7/6 of 60 over 3 workers, measured).
    /// </remarks>
    [Fact]
    public async Task Requests_on_new_connections_spread_evenly_over_the_workers()
    {
        using var server = await StartGenerated();
        var perPid = new Dictionary<int, int>();
        for (int i = 0; i < 20 * N; i++)
        {
            using var client = RawClient.Connect(server.Port);
            client.Send("GET / HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
            RawResponse response = client.ReadResponse();
            Assert.Equal(200, response.Status);
            int pid = Client.PidOf(response.Body);
            perPid[pid] = perPid.GetValueOrDefault(pid) + 1;
        }
        double jain = Client.Jain(perPid.Values);
        string line = $"HTTP fairness over {20 * N} requests on new connections: {string.Join("/", perPid.Values.OrderDescending())}, Jain's index {jain:0.000}";
        output.Report(line);
        Assert.Equal(server.Children().Order(), perPid.Keys.Order());
        Assert.True(jain >= 0.9, line);
    }

    // ---- Kestrel's HTTP, through our transport ------------------------------------------------

    [Fact]
    public async Task Kestrel_takes_a_chunked_body_a_pipelined_pair_and_Connection_close()
    {
        using var server = await Start();
        using var client = RawClient.Connect(server.Port);

        client.Send("POST /length HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n");
        RawResponse chunked = client.ReadResponse();
        Assert.Equal((200, "11\n"), (chunked.Status, chunked.Body));

        client.Send("GET / HTTP/1.1\r\nHost: test\r\n\r\nGET /slow?ms=1 HTTP/1.1\r\nHost: test\r\n\r\n"); // two in one write
        RawResponse first = client.ReadResponse(), second = client.ReadResponse();
        Assert.Equal((200, 200), (first.Status, second.Status));
        Assert.Equal(first.Body, second.Body); // one connection: one worker
        Assert.Equal(first.Header("X-Worker"), second.Header("X-Worker")); // the test's middleware ran for both

        client.Send("GET / HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
        RawResponse last = client.ReadResponse();
        Assert.Equal((200, "close"), (last.Status, last.Header("Connection")));
        Assert.True(client.AtEnd(), "the server kept the connection after Connection: close");
    }

    [Fact]
    public async Task An_endpoint_that_throws_gets_a_500_and_one_log_line_that_names_its_worker()
    {
        using var server = await Start();
        using HttpClient http = NewHttpClient();
        using HttpResponseMessage failed = await http.GetAsync($"http://127.0.0.1:{server.Port}/throw");
        Assert.Equal(HttpStatusCode.InternalServerError, failed.StatusCode);
        using HttpResponseMessage fine = await http.GetAsync($"http://127.0.0.1:{server.Port}/");
        Assert.Equal(HttpStatusCode.OK, fine.StatusCode);

        Assert.True(Proc.WaitUntil(() => server.Log.Any(l => l.Contains("an endpoint that fails", StringComparison.Ordinal)), Hang),
            "the exception was not logged:\n" + server.LogText);
        string line = Assert.Single(server.Log, l => l.Contains("an endpoint that fails", StringComparison.Ordinal));
        output.WriteLine(line);
        Match who = Regex.Match(line, @"^\[worker (\d+) (\d+)\] Error Microsoft\.AspNetCore\.[\w.]+: ");
        Assert.True(who.Success, $"not a worker's error line: {line}");
        Assert.Contains(int.Parse(who.Groups[2].Value), server.Children());
        Assert.Contains("InvalidOperationException", line); // the exception, on the same line
    }

    // ---- graceful stop ----------------------------------------------------------------------

    [Theory]
    [InlineData(Signum.SIGQUIT)]
    [InlineData(Signum.SIGTERM)]
    public async Task Graceful_stop_closes_idle_connections_and_finishes_the_requests_in_flight(Signum signal)
    {
        // A shutdown timeout of an hour: if a connection held its worker, the server would not exit.
        using var server = await Start("--shutdown-timeout", "3600", "--idle-timeout", "3600");
        using (var load = new HttpLoad(server.Port, perConnection: 5, limit: TimeSpan.FromSeconds(120))) Soak(server, load);
        // A request begun, its end not yet sent. Connected more than a second before the stop,
        // so its worker does not wait for it to begin (a stop waits up to a second after the
        // accept for a connection's first request), and its end, sent once the stop is under
        // way, meets Kestrel's stop.
        using var begun = RawClient.Connect(server.Port);
        begun.Send("GET / HTTP/1.1\r\nHost: test\r\n");
        // Idle kept-alive connections on every worker: once all are closed (after the drain),
        // every worker's Kestrel has begun its stop.
        var idle = new List<RawClient>();
        var covered = new HashSet<int>();
        using var slow = RawClient.Connect(server.Port);
        try
        {
            while (covered.Count < N && idle.Count < 40)
            {
                var client = RawClient.Connect(server.Port);
                idle.Add(client);
                client.Send("GET / HTTP/1.1\r\nHost: test\r\n\r\n");
                RawResponse response = client.ReadResponse();
                Assert.Equal(200, response.Status);
                covered.Add(Client.PidOf(response.Body));
            }
            Assert.Equal(N, covered.Count);
            // In flight for 12 s: well past the 5 s drain that keeps idle connections open (which
            // the last holder begins only once the others have released the socket), so it is
            // still running when Kestrel's stop begins, and Kestrel's stop answers it with close.
            slow.Send("GET /slow?ms=12000 HTTP/1.1\r\nHost: test\r\n\r\n");
            Thread.Sleep(1200); // the workers have taken those bytes; begun is over a second old

            var clock = Stopwatch.StartNew();
            server.Signal(signal);
            Assert.True(Proc.WaitUntil(() => server.Log.Count(l => l.StartsWith("[worker", StringComparison.Ordinal) &&
                (l.Contains($"{signal}: finishing", StringComparison.Ordinal) || l.Contains("asked to stop as the last holder", StringComparison.Ordinal))) == N, Hang),
                "the workers were not told to stop:\n" + server.LogText);
            Assert.All(idle, c => Assert.True(c.AtEnd(), "an idle keep-alive connection was not closed"));

            begun.Send("\r\n");
            RawResponse answered = begun.ReadResponse();
            Assert.Equal((200, "close"), (answered.Status, answered.Header("Connection")));
            Assert.True(begun.AtEnd());

            RawResponse finished = slow.ReadResponse();
            output.WriteLine($"the slow request was answered {clock.ElapsedMilliseconds} ms after {signal}");
            Assert.Equal((200, "close"), (finished.Status, finished.Header("Connection")));
            Assert.Matches(@"^Hello from \d+\n$", finished.Body);
            Assert.True(slow.AtEnd());

            Assert.Equal(0, server.WaitForExit(Hang));
            Assert.DoesNotContain(server.Log, l => l.Contains("unfinished", StringComparison.Ordinal));
            output.WriteLine(server.LogText);
        }
        finally
        {
            idle.ForEach(c => c.Dispose());
        }
    }

    [Fact]
    public async Task TERM_under_keep_alive_load_answers_every_request_it_took()
    {
        using var server = await Start();
        using var load = new HttpLoad(server.Port, perConnection: 5, limit: TimeSpan.FromSeconds(120));
        Soak(server, load);
        server.Signal(Signum.SIGTERM);
        Assert.Equal(0, server.WaitForExit(Hang));
        Thread.Sleep(200);
        load.Dispose();
        Report("HTTP TERM under keep-alive load", load);
        // After the last worker released the socket, new connections are refused; nothing else fails.
        Assert.All(load.Failures, f => Assert.Equal(HttpLoad.Refused, f.Kind));
        Assert.NotEmpty(load.Failures);
    }

    // ---- the master's operations under keep-alive load ------------------------------------------

    [Fact]
    public async Task HUP_under_keep_alive_load_fails_no_request()
    {
        using var server = await Start();
        IReadOnlyList<int> before = server.Children();
        using var load = new HttpLoad(server.Port, perConnection: 5, limit: TimeSpan.FromSeconds(120));
        Soak(server, load);
        server.Signal(Signum.SIGHUP);
        server.WaitForLog($"HUP: all {N} workers replaced", Hang);
        Assert.True(Proc.WaitUntil(() => !before.Any(Proc.IsAlive), Hang), "old workers are still running");
        load.WaitForSuccesses(2000);
        load.Dispose();
        Report("HTTP HUP", load);
        Assert.Empty(load.Failures);
        Assert.Empty(server.Children().Intersect(before));
    }

    [Fact]
    public async Task USR2_under_keep_alive_load_fails_no_request()
    {
        using var server = await Start();
        int oldMaster = server.MasterPid;
        IReadOnlyList<int> oldWorkers = server.Children();
        using var load = new HttpLoad(server.Port, perConnection: 5, limit: TimeSpan.FromSeconds(120));
        Soak(server, load);
        server.Signal(Signum.SIGUSR2);
        server.WaitForLog("retired: the new master serves now", TimeSpan.FromSeconds(60));
        Assert.True(Proc.WaitUntil(() => !Proc.IsAlive(oldMaster) && !oldWorkers.Any(Proc.IsAlive), Hang));
        load.WaitForSuccesses(2000);
        load.Dispose();
        Report("HTTP USR2", load);
        Assert.Empty(load.Failures);
    }

    [Fact]
    public async Task Recycling_under_keep_alive_load_fails_no_request()
    {
        using var server = await Start("--max-connections-per-worker", "60", "--max-connections-jitter", "30");
        using var load = new HttpLoad(server.Port, perConnection: 5);
        Assert.True(Proc.WaitUntil(() => server.StartedWorkers().Count >= 3 * N, Hang), "workers were not recycled:\n" + server.LogText);
        load.WaitForSuccesses(1000);
        load.Dispose();
        Report($"HTTP recycling ({server.StartedWorkers().Count} workers started)", load);
        Assert.Empty(load.Failures);
    }

    [Fact]
    public async Task TTIN_and_TTOU_under_keep_alive_load_fail_no_request()
    {
        using var server = await Start();
        using var load = new HttpLoad(server.Port, perConnection: 5, limit: TimeSpan.FromSeconds(120));
        Soak(server, load);
        server.SignalAndWaitForLog(Signum.SIGTTIN, $"TTIN: {N + 1} workers");
        Assert.True(Proc.WaitUntil(() => server.Children().Count == N + 1 && server.Log.Count(l => l.Contains(") accepting", StringComparison.Ordinal)) >= 1, Hang));
        load.WaitForSuccesses(1000);
        server.SignalAndWaitForLog(Signum.SIGTTOU, $"TTOU: {N} workers");
        Assert.True(Proc.WaitUntil(() => server.Children().Count == N, Hang), "TTOU left the pool at " + server.Children().Count);
        load.WaitForSuccesses(1000);
        load.Dispose();
        Report("HTTP TTIN then TTOU", load);
        Assert.Empty(load.Failures);
    }

    /// <remarks>
    /// A worker killed with SIGKILL takes with it the requests it was serving: at most one per
    /// client connection it held. Every other request is answered, and the pool comes back.
    /// </remarks>
    [Fact]
    public async Task Killing_a_worker_under_keep_alive_load_loses_only_its_requests_in_flight()
    {
        const int clients = 16;
        using var server = await Start();
        using var load = new HttpLoad(server.Port, clients, perConnection: 5, limit: TimeSpan.FromSeconds(120));
        Soak(server, load);
        int victim = server.Children()[0];
        Assert.Equal(0, Syscall.kill(victim, Signum.SIGKILL));
        Assert.True(Proc.WaitUntil(() => server.Children().Count == N && !server.Children().Contains(victim), Hang));
        load.WaitForSuccesses(2000);
        load.Dispose();
        Report("HTTP worker SIGKILL", load);
        Assert.All(load.Failures, f => Assert.Contains(f.Kind, new[] { HttpLoad.Reset, HttpLoad.Empty, HttpLoad.Short }));
        Assert.True(load.Failures.Count <= clients, $"{load.Failures.Count} requests lost for one worker killed");
    }

    // ---- a hung worker ---------------------------------------------------------------------------

    /// <remarks>
    /// The endpoint /block sleeps for ever, as one stuck on a lock would. Clients that give up
    /// after a second and ask again block one thread of the pool each, faster than .NET adds
    /// threads: the worker's heartbeat, which waits for the pool, stops, and the master
    /// replaces the worker after --worker-timeout.
    /// </remarks>
    [Fact]
    public async Task A_worker_whose_requests_block_every_thread_is_replaced()
    {
        using var server = await Start("--workers", "1", "--worker-timeout", "3");
        int hung = Assert.Single(server.Children());
        var clock = Stopwatch.StartNew();
        using var stop = new CancellationTokenSource(Hang);
        Task[] blockers = [.. Enumerable.Range(0, 8).Select(_ => Task.Run(async () =>
        {
            while (!stop.IsCancellationRequested && Proc.IsAlive(hung))
            {
                using var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
                try
                {
                    await socket.ConnectAsync(IPAddress.Loopback, server.Port);
                    await socket.SendAsync(Encoding.ASCII.GetBytes("GET /block HTTP/1.1\r\nHost: test\r\n\r\n"));
                    using var patience = new CancellationTokenSource(TimeSpan.FromSeconds(1));
                    await socket.ReceiveAsync(new byte[256], patience.Token);
                }
                catch (Exception e) when (e is SocketException or OperationCanceledException) { }
            }
        }))];

        server.WaitForLog($"(pid {hung}) silent for", Hang);
        TimeSpan detected = clock.Elapsed;
        stop.Cancel();
        await Task.WhenAll(blockers).WaitAsync(Hang);
        Assert.True(Proc.WaitUntil(() => !Proc.IsAlive(hung) && server.Children().Count == 1, Hang), "the hung worker was not replaced:\n" + server.LogText);
        server.WaitForLog("accepting", Hang, count: 1);
        using HttpClient http = NewHttpClient();
        string body = await http.GetStringAsync($"http://127.0.0.1:{server.Port}/");
        Assert.NotEqual(hung, Client.PidOf(body));
        Assert.Contains(server.Log, l => l.Contains("the thread pool has run nothing", StringComparison.Ordinal));
        string line = $"HTTP hung worker (every request blocks a thread, --worker-timeout 3): killed {detected.TotalSeconds:0.0} s after the first blocking request";
        output.Report(line);
    }
}
