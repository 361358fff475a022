using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Text.Json;
using System.Text.RegularExpressions;
using Mono.Unix.Native;
using PreforkTemplates.Tests.Infrastructure;
using Xunit;
using Xunit.Abstractions;

namespace PreforkTemplates.Tests;

/// <summary>
/// --metrics: the master's /metrics, /healthz, /readyz and /status, checked with Prometheus's
/// own tools (promtool, and a real Prometheus server that scrapes the master), across what
/// replaces workers and masters (HUP, recycling, USR2), with every worker stopped, during a
/// graceful stop, and summed over the workers of the http handler. On 127.0.0.1; every wait is
/// bounded only to catch a hang.
/// </summary>
[Collection("template")]
public sealed partial class MetricsTests(TemplateFixture fixture, ITestOutputHelper output)
{
    private const int N = 4;
    private static readonly TimeSpan Hang = TimeSpan.FromSeconds(30);

    /// <summary>A port that was free a moment ago (HttpListener cannot listen on port 0 and say which it got).</summary>
    private static int FreePort()
    {
        using var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        socket.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        return ((IPEndPoint)socket.LocalEndPoint!).Port;
    }

    private static HttpClient NewHttpClient() => new(new SocketsHttpHandler { UseProxy = false }) { Timeout = Hang };

    private sealed record Metered(ServerProcess Server, string Address) : IDisposable
    {
        public void Dispose() => Server.Dispose();
    }

    private static Metered StartMetered(string projectDir, IDictionary<string, string>? environment = null, params string[] args)
    {
        string address = $"127.0.0.1:{FreePort()}";
        var server = ServerProcess.StartWith(projectDir, StartMode.AppHost, environment,
            ["--host", "127.0.0.1", "--port", "0", "--workers", N.ToString(CultureInfo.InvariantCulture), "--metrics", address, .. args]);
        try
        {
            server.WaitUntilReady();
        }
        catch
        {
            server.Dispose();
            throw;
        }
        return new Metered(server, address);
    }

    private static async Task<(HttpStatusCode Status, string Body)> GetAsync(string address, string path, string? accept = null)
    {
        using HttpClient client = NewHttpClient();
        using var request = new HttpRequestMessage(HttpMethod.Get, $"http://{address}{path}");
        if (accept is not null) request.Headers.TryAddWithoutValidation("Accept", accept);
        using HttpResponseMessage response = await client.SendAsync(request);
        return (response.StatusCode, await response.Content.ReadAsStringAsync());
    }

    /// <summary>The value of one sample of the text format, e.g. Value(text, "prefork_workers"); null if absent.</summary>
    private static double? Value(string metrics, string sample)
    {
        foreach (string line in metrics.Split('\n'))
            if (line.StartsWith(sample + " ", StringComparison.Ordinal))
                return double.Parse(line[(sample.Length + 1)..], CultureInfo.InvariantCulture);
        return null;
    }

    private static async Task<double> AcceptedAsync(string address) =>
        Value((await GetAsync(address, "/metrics")).Body, "prefork_connections_accepted_total")
        ?? throw new InvalidOperationException("no prefork_connections_accepted_total in /metrics");

    /// <summary>Runs promtool check metrics on the text; fails with what it says.</summary>
    private static async Task PromtoolCheck(string metrics, string what)
    {
        string promtool = Tool("promtool");
        string file = Path.GetTempFileName();
        try
        {
            File.WriteAllText(file, metrics);
            CliResult result = await Cli.RunAsync("/bin/sh", ["-c", $"\"{promtool}\" check metrics < \"{file}\""]);
            Assert.True(result.ExitCode == 0 && result.StdErr.Trim().Length == 0 && result.StdOut.Trim().Length == 0,
                $"promtool check metrics on the {what} /metrics:\n{Cli.Describe(result)}\nthe text:\n{metrics}");
        }
        finally
        {
            File.Delete(file);
        }
    }

    /// <summary>The path of a tool from Debian's prometheus package; fails loudly when it is missing.</summary>
    private static string Tool(string name) =>
        new[] { $"/usr/bin/{name}", $"/usr/local/bin/{name}" }.FirstOrDefault(File.Exists)
        ?? throw new InvalidOperationException($"{name} is not installed: Debian's prometheus package has it (bash test.sh installs it)");

    [Fact]
    public async Task Every_handlers_metrics_pass_promtool_check_metrics()
    {
        string[] dirs = [await fixture.BehaviourProjectAsync(), await fixture.BuiltAsync(TemplateFixture.Get("handler-echo")), await fixture.HttpBehaviourProjectAsync()];
        foreach (string dir in dirs)
        {
            using Metered metered = StartMetered(dir);
            // Some traffic first, so that every family has samples (the http handler's histogram).
            if (dir == dirs[2])
            {
                using HttpClient client = NewHttpClient();
                for (int i = 0; i < 20; i++) await client.GetStringAsync($"http://127.0.0.1:{metered.Server.Port}/");
            }
            else
            {
                for (int i = 0; i < 20; i++)
                {
                    using var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
                    socket.Connect(IPAddress.Loopback, metered.Server.Port);
                }
            }
            Thread.Sleep(1500); // a second of figures
            var (status, text) = await GetAsync(metered.Address, "/metrics");
            Assert.Equal(HttpStatusCode.OK, status);
            string handler = Path.GetFileName(dir);
            await PromtoolCheck(text, handler);
            output.Report($"{handler}: /metrics has {text.Split('\n').Count(l => l.Length > 0 && !l.StartsWith('#'))} samples; promtool check metrics: clean");
            if (dir == dirs[2]) Assert.Contains("http_server_request_duration_seconds_bucket{", text);

            // OpenMetrics when the scraper asks for it.
            var (_, open) = await GetAsync(metered.Address, "/metrics", "application/openmetrics-text; version=1.0.0");
            Assert.EndsWith("# EOF\n", open);
            Assert.Contains("# TYPE prefork_connections_accepted counter", open);
        }
    }

    /// <remarks>
    /// Prometheus asks for OpenMetrics first: its target being up checks that format as
    /// Prometheus's own parser reads it.
    /// </remarks>
    [Fact]
    public async Task A_Prometheus_server_scrapes_the_master_and_its_query_API_returns_the_accepted_connections()
    {
        string prometheus = Tool("prometheus");
        using Metered metered = StartMetered(await fixture.BehaviourProjectAsync());
        const int connections = 50;
        for (int i = 0; i < connections; i++) Client.Greet(metered.Server.Port);

        string dir = Path.Combine(fixture.WorkDir, $"prometheus-{Guid.NewGuid():N}");
        Directory.CreateDirectory(dir);
        File.WriteAllText(Path.Combine(dir, "prometheus.yml"),
            $"global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: prefork\n    static_configs:\n      - targets: ['{metered.Address}']\n");
        string web = $"127.0.0.1:{FreePort()}";
        using var server = Process.Start(new ProcessStartInfo(prometheus)
        {
            ArgumentList = { $"--config.file={Path.Combine(dir, "prometheus.yml")}", $"--storage.tsdb.path={Path.Combine(dir, "data")}", $"--web.listen-address={web}" },
            RedirectStandardError = true,
            RedirectStandardOutput = true,
            UseShellExecute = false,
        })!;
        var log = new System.Collections.Concurrent.ConcurrentQueue<string>();
        server.ErrorDataReceived += (_, e) => { if (e.Data is not null) log.Enqueue(e.Data); };
        server.BeginErrorReadLine();
        try
        {
            double? seen = null;
            var limit = Stopwatch.StartNew();
            while (limit.Elapsed < TimeSpan.FromSeconds(60) && !(seen >= connections))
            {
                Thread.Sleep(500);
                try
                {
                    var (_, body) = await GetAsync(web, "/api/v1/query?query=prefork_connections_accepted_total");
                    using var json = JsonDocument.Parse(body);
                    JsonElement result = json.RootElement.GetProperty("data").GetProperty("result");
                    if (result.GetArrayLength() > 0)
                        seen = double.Parse(result[0].GetProperty("value")[1].GetString()!, CultureInfo.InvariantCulture);
                }
                catch (HttpRequestException) { } // not listening yet
            }
            Assert.True(seen >= connections, $"Prometheus's query API gave {seen?.ToString() ?? "nothing"} for prefork_connections_accepted_total after {connections} connections; its log:\n{string.Join('\n', log)}");
            var (_, targets) = await GetAsync(web, "/api/v1/targets");
            Assert.Contains("\"health\":\"up\"", targets);
            output.Report($"Prometheus {web} scraped {metered.Address}: prefork_connections_accepted_total = {seen}");
        }
        finally
        {
            Syscall.kill(server.Id, Signum.SIGTERM);
            if (!server.WaitForExit(TimeSpan.FromSeconds(10))) Syscall.kill(server.Id, Signum.SIGKILL);
            server.WaitForExit(TimeSpan.FromSeconds(10));
            try { Directory.Delete(dir, recursive: true); } catch (IOException) { }
        }
    }

    /// <remarks>
    /// One scrape every 100 ms from start to end: the counter never goes back, whichever
    /// process counted (workers replaced by HUP and by recycling, then a new master by USR2);
    /// at the end it covers every connection the load had answered.
    /// </remarks>
    [Fact]
    public async Task The_accepted_counter_covers_every_connection_served_and_never_goes_back_across_HUP_recycling_and_USR2()
    {
        using Metered metered = StartMetered(await fixture.BehaviourProjectAsync(), null, "--max-connections-per-worker", "1500");
        ServerProcess server = metered.Server;
        var scrapes = new List<double>();
        int failedScrapes = 0;
        using var stop = new CancellationTokenSource();
        Task scraping = Task.Run(async () =>
        {
            while (!stop.IsCancellationRequested)
            {
                try
                {
                    double accepted = await AcceptedAsync(metered.Address);
                    lock (scrapes) scrapes.Add(accepted);
                }
                catch (HttpRequestException)
                {
                    Interlocked.Increment(ref failedScrapes); // between two masters
                }
                await Task.Delay(100);
            }
        });
        var load = new Load(server.Port);
        try
        {
            load.WaitForSuccesses(3000); // two recyclings of every worker at least
            server.SignalAndWaitForLog(Signum.SIGHUP, "HUP: all 4 workers replaced");
            load.WaitForSuccesses(load.Succeeded + 2000);
            server.Signal(Signum.SIGUSR2);
            server.WaitForLog("took over the old master's totals");
            server.WaitForLog("retired: the new master serves now");
            Assert.True(Proc.WaitUntil(() => AcceptedAsync(metered.Address).ContinueWith(t => t.IsCompletedSuccessfully).Result, Hang),
                "the new master does not serve /metrics:\n" + server.LogText);
            load.WaitForSuccesses(load.Succeeded + 2000);
        }
        finally
        {
            load.Dispose();
        }
        Thread.Sleep(1500); // the workers' last heartbeats
        double final = await AcceptedAsync(metered.Address);
        stop.Cancel();
        await scraping;

        List<double> seen;
        lock (scrapes) seen = [.. scrapes];
        output.Report($"HUP, recycling, USR2 under load: {load.Succeeded} connections answered, {load.Failures.Count} failed; " +
                      $"prefork_connections_accepted_total {final}; {seen.Count} scrapes ({failedScrapes} refused between masters); " +
                      $"recycled {server.Log.Count(l => l.Contains("reached --max-connections-per-worker", StringComparison.Ordinal))}");
        Assert.True(server.Log.Any(l => l.Contains("reached --max-connections-per-worker", StringComparison.Ordinal)), "no worker was recycled");
        for (int i = 1; i < seen.Count; i++)
            Assert.True(seen[i] >= seen[i - 1], $"the counter went back from {seen[i - 1]} to {seen[i]} (scrape {i}):\n{string.Join(' ', seen)}");
        Assert.True(final >= load.Succeeded, $"the counter says {final}, but the load had {load.Succeeded} connections answered");
        Assert.True(final >= seen.Max());
        string metrics = (await GetAsync(metered.Address, "/metrics")).Body;
        Assert.True(Value(metrics, "prefork_worker_exits_total{reason=\"recycled\"}") >= 1, metrics);
        Assert.True(Value(metrics, "prefork_worker_exits_total{reason=\"hup\"}") >= N, metrics);
    }

    [Fact]
    public async Task With_every_worker_stopped_the_listen_queue_gauge_shows_the_waiting_clients()
    {
        using Metered metered = StartMetered(await fixture.BehaviourProjectAsync());
        ServerProcess server = metered.Server;
        IReadOnlyList<int> workers = server.Children();
        var clients = new List<Socket>();
        try
        {
            foreach (int pid in workers) Syscall.kill(pid, Signum.SIGSTOP);
            // Every thread stopped: one woken in accept() a moment before would still take a connection.
            Assert.True(Proc.WaitUntil(() => workers.All(Stopped), Hang), "the workers did not stop");
            for (int i = 0; i < 20; i++)
            {
                var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
                clients.Add(socket);
                socket.Connect(IPAddress.Loopback, server.Port); // completed by the kernel, queued
            }
            string metrics = (await GetAsync(metered.Address, "/metrics")).Body;
            output.Report($"every worker stopped, 20 clients: prefork_listen_queue_length {Value(metrics, "prefork_listen_queue_length")}, limit {Value(metrics, "prefork_listen_queue_limit")}");
            Assert.Equal(20, Value(metrics, "prefork_listen_queue_length"));
            Assert.Equal(1024, Value(metrics, "prefork_listen_queue_limit"));
        }
        finally
        {
            foreach (int pid in workers) Syscall.kill(pid, Signum.SIGCONT);
        }
        foreach (Socket client in clients)
        {
            client.ReceiveTimeout = (int)Hang.TotalMilliseconds;
            Assert.StartsWith("Hello from ", System.Text.Encoding.UTF8.GetString(Client.ReadToEnd(client)));
            client.Dispose();
        }
        Assert.True(Proc.WaitUntil(() => Value(GetAsync(metered.Address, "/metrics").Result.Body, "prefork_listen_queue_length") == 0, Hang));
    }

    /// <summary>True when every thread of the process is stopped (state T in /proc).</summary>
    private static bool Stopped(int pid) => Directory.GetDirectories($"/proc/{pid}/task").All(task =>
    {
        try
        {
            string stat = File.ReadAllText(Path.Combine(task, "stat"));
            return stat[stat.LastIndexOf(')') + 2] == 'T';
        }
        catch (IOException)
        {
            return true; // the thread has exited
        }
    });

    /// <remarks>A client served slowly (8 s) keeps the graceful stop draining while /readyz is asked.</remarks>
    [Fact]
    public async Task Readyz_is_503_within_a_second_of_TERM_while_the_stop_still_drains()
    {
        using var slowClient = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        slowClient.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        int slowPort = ((IPEndPoint)slowClient.LocalEndPoint!).Port;
        using Metered metered = StartMetered(await fixture.BehaviourProjectAsync(),
            new Dictionary<string, string> { ["SLOW_PORT"] = slowPort.ToString(CultureInfo.InvariantCulture), ["SLOW_MS"] = "8000" });
        ServerProcess server = metered.Server;
        Assert.Equal(HttpStatusCode.OK, (await GetAsync(metered.Address, "/readyz")).Status);
        Assert.Equal(HttpStatusCode.OK, (await GetAsync(metered.Address, "/healthz")).Status);
        slowClient.Connect(IPAddress.Loopback, server.Port);
        Thread.Sleep(300); // accepted, and waiting for its answer

        var clock = Stopwatch.StartNew();
        server.Signal(Signum.SIGTERM);
        HttpStatusCode status = HttpStatusCode.OK;
        while (clock.Elapsed < TimeSpan.FromSeconds(1) && status == HttpStatusCode.OK)
            status = (await GetAsync(metered.Address, "/readyz")).Status;
        TimeSpan after = clock.Elapsed;
        Assert.Equal(HttpStatusCode.ServiceUnavailable, status);
        Assert.True(Proc.IsAlive(server.MasterPid), "the master has exited already: the stop was not draining");
        Assert.Equal(HttpStatusCode.OK, (await GetAsync(metered.Address, "/healthz")).Status);
        output.Report($"/readyz 503 {after.TotalMilliseconds:0} ms after TERM, while the slow client is still being served");
        slowClient.ReceiveTimeout = (int)Hang.TotalMilliseconds;
        Assert.StartsWith("Hello from ", System.Text.Encoding.UTF8.GetString(Client.ReadToEnd(slowClient)));
        Assert.Equal(0, server.WaitForExit(Hang));
    }

    [Fact]
    public async Task Status_shows_one_row_per_worker_with_their_pids_and_fails_clearly_with_no_server()
    {
        string dir = await fixture.BehaviourProjectAsync();
        string program = ServerProcess.ProgramOf(dir);
        using (Metered metered = StartMetered(dir))
        {
            Thread.Sleep(700); // a heartbeat
            // The address from the environment, as a deployment's PREFORK_METRICS gives it.
            CliResult status = await Cli.RunAsync(program, ["status"], environment: new Dictionary<string, string?> { ["PREFORK_METRICS"] = metered.Address });
            output.Report("status:\n" + status.StdOut);
            Assert.True(status.ExitCode == 0, Cli.Describe(status));
            string[] lines = status.StdOut.TrimEnd('\n').Split('\n');
            Assert.StartsWith($"pool ready: {N} workers ({N} desired)", lines[0]);
            Assert.StartsWith("WORKER", lines[1]);
            var rows = lines.Skip(2).Select(l => l.Split(' ', StringSplitOptions.RemoveEmptyEntries)).ToList();
            Assert.Equal(N, rows.Count);
            Assert.Equal(Enumerable.Range(0, N).Select(i => i.ToString(CultureInfo.InvariantCulture)), rows.Select(r => r[0]));
            Assert.Equal(metered.Server.Children().Order(), rows.Select(r => int.Parse(r[1], CultureInfo.InvariantCulture)).Order());
            Assert.All(rows, r => Assert.Equal("serving", r[^1]));
        }

        string free = $"127.0.0.1:{FreePort()}";
        CliResult none = await Cli.RunAsync(program, ["status", "--metrics", free]);
        Assert.Equal(6, none.ExitCode);
        Assert.Contains($"status: no server answers at http://{free}/status", none.StdErr);
        CliResult unset = await Cli.RunAsync(program, ["status"]);
        Assert.Equal(6, unset.ExitCode);
        Assert.Contains("status: no --metrics address", unset.StdErr);
    }

    [Fact]
    public async Task A_bad_metrics_address_or_one_in_use_stops_the_start_with_its_exit_code()
    {
        string dir = await fixture.BehaviourProjectAsync();
        string program = ServerProcess.ProgramOf(dir);
        CliResult bad = await Cli.RunAsync(program, ["--port", "0", "--metrics", "9100"]);
        Assert.Equal(2, bad.ExitCode);
        Assert.Contains("--metrics: '9100' is not IPV4:PORT", bad.StdErr);
        CliResult v6 = await Cli.RunAsync(program, ["--port", "0", "--metrics", "[::1]:9100"]);
        Assert.Equal(2, v6.ExitCode);
        Assert.Contains("--metrics: '[::1]:9100' is not IPV4:PORT", v6.StdErr);

        using var taken = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        taken.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        taken.Listen();
        string address = $"127.0.0.1:{((IPEndPoint)taken.LocalEndPoint!).Port}";
        using var server = ServerProcess.StartWith(dir, StartMode.AppHost, null, "--host", "127.0.0.1", "--port", "0", "--metrics", address);
        Assert.Equal(3, server.WaitForExit(Hang));
        Assert.Contains(server.Log, l => l.Contains($"--metrics: cannot listen on {address}", StringComparison.Ordinal));
        Assert.Empty(server.StartedWorkers());
    }

    [Fact]
    public async Task HTTP_request_durations_summed_over_the_workers_match_the_requests_sent()
    {
        using Metered metered = StartMetered(await fixture.HttpBehaviourProjectAsync(), ServerProcess.TinyGen0());
        const int requests = 400;
        var pids = new HashSet<string>();
        // Eight clients, each a connection kept alive, so every worker answers some.
        await Parallel.ForEachAsync(Enumerable.Range(0, 8), async (_, _) =>
        {
            using HttpClient client = NewHttpClient();
            for (int i = 0; i < requests / 8; i++)
            {
                string answer = await client.GetStringAsync($"http://127.0.0.1:{metered.Server.Port}/");
                lock (pids) pids.Add(answer);
            }
        });
        double? counted = null;
        Assert.True(Proc.WaitUntil(() =>
        {
            string text = GetAsync(metered.Address, "/metrics").Result.Body;
            counted = CountSamples().Matches(text).Where(m => m.Groups[1].Value.Contains("http_route=\"/\"", StringComparison.Ordinal))
                .Sum(m => double.Parse(m.Groups[2].Value, CultureInfo.InvariantCulture));
            return counted == requests;
        }, Hang), $"http_server_request_duration_seconds_count for / is {counted}, not the {requests} requests sent");
        output.Report($"HTTP: {requests} requests from {pids.Count} workers; http_server_request_duration_seconds_count summed: {counted}");
        Assert.True(pids.Count > 1, "one worker answered every request: the sum over workers is not tested");
    }

    [GeneratedRegex(@"^http_server_request_duration_seconds_count\{([^}]*)\} (\S+)$", RegexOptions.Multiline)]
    private static partial Regex CountSamples();
}
