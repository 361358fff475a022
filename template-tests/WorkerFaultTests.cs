using System.Collections.Concurrent;
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
/// What a worker must survive from its handler and from the socket it is handed: a handler
/// that starts a child process and writes to the console, a handler that receives and sends
/// at once, a listening socket handed over non-blocking, and stops while connections are on
/// their way. Failed connections are counted by kind, as FailureLog.cs names them.
/// </summary>
[Collection("template")]
public sealed partial class WorkerFaultTests(TemplateFixture fixture, ITestOutputHelper output)
{
    private static readonly ConcurrentDictionary<string, Lazy<Task<string>>> projects = new();

    private void Report(string line) => output.Report(line);

    /// <summary>A default project with Handlers/Fault.Handler.cs, built in Release.</summary>
    private Task<string> FaultProject() => Project("fault", "Fault", [], "Fault.Handler.cs");

    /// <summary>The echo handler as generated, built in Release.</summary>
    private Task<string> EchoProject() => Project("fault-echo", "EchoFault", ["--handler", "echo"], null);

    private Task<string> Project(string id, string name, string[] args, string? handler) =>
        projects.GetOrAdd(id, _ => new Lazy<Task<string>>(async () =>
        {
            string dir = await fixture.GenerateAsync(new Scenario(id, name, args));
            if (handler is not null) fixture.UseHandler(dir, handler);
            CliResult result = await Cli.DotnetAsync(["build", dir, "-c", "Release", "-warnaserror", "--disable-build-servers", "-nologo"], dir);
            if (result.ExitCode != 0) throw new InvalidOperationException($"build of {dir} failed:\n" + Cli.Describe(result));
            return dir;
        })).Value;

    private static ServerProcess Start(string dir, Dictionary<string, string> environment, params string[] args) =>
        ServerProcess.StartWith(dir, StartMode.AppHost, environment, ["--host", "127.0.0.1", "--port", "0", .. args]).WaitUntilReady();

    [Fact]
    public async Task A_child_process_of_the_handler_keeps_neither_the_port_nor_the_pipes_and_console_output_goes_to_the_log()
    {
        string dir = await FaultProject();
        var children = new List<int>();
        try
        {
            int port;
            using (var server = Start(dir, new() { ["FAULT_MODE"] = "child" }, "--workers", "2"))
            {
                port = server.Port;
                string reply = Encoding.ASCII.GetString(Client.Fetch(port));
                Assert.Matches(@"^child \d+\n$", reply);
                int child = int.Parse(reply.TrimEnd('\n').Split(' ')[1], CultureInfo.InvariantCulture);
                children.Add(child);

                // The child has /dev/null for input and the log for output: no socket, no pipe to the
                // master. Beyond those it may only hold what the master itself was started with
                // (the descriptors of whoever started the server, under the same numbers).
                IReadOnlyList<string> files = Proc.OpenFiles(child);
                IReadOnlyList<string> masters = Proc.OpenFiles(server.MasterPid);
                string log = files.Single(f => f.StartsWith("2 -> ", StringComparison.Ordinal))[5..];
                Report($"the handler's child {child} holds: {string.Join(", ", files)}");
                Assert.Contains("0 -> /dev/null", files);
                Assert.Contains("1 -> " + log, files);
                Assert.All(files, f => Assert.True(f.EndsWith(" -> /dev/null", StringComparison.Ordinal) || f.EndsWith(" -> " + log, StringComparison.Ordinal)
                    || (masters.Contains(f) && !f.StartsWith("0 ", StringComparison.Ordinal) && !f.StartsWith("1 ", StringComparison.Ordinal)),
                    $"the child holds {f}; all: {string.Join(", ", files)}"));
                Assert.DoesNotContain(files, f => f.Contains("socket:", StringComparison.Ordinal));

                server.Signal(Signum.SIGTERM);
                Assert.Equal(0, server.WaitForExit(TimeSpan.FromSeconds(20)));
                Assert.True(Proc.IsAlive(child), "the child should outlive the server (it is only killed at the end)");

                // Both constructors' lines are in the log; "retire" never reached the master as a message.
                Assert.Equal(2, server.Log.Count(l => Regex.IsMatch(l, @"^constructor of worker \d says hello$")));
                Assert.Equal(2, server.Log.Count(l => l == "retire"));
                Assert.DoesNotContain(server.Log, l => l.Contains("reached --max-connections-per-worker", StringComparison.Ordinal));
            }

            // The port is free: a new client is refused at once, and a new server binds it.
            var clock = Stopwatch.StartNew();
            var refused = Assert.Throws<SocketException>(() => Client.Fetch(port, TimeSpan.FromSeconds(5)));
            Report($"after the stop, a new client got {refused.SocketErrorCode} after {clock.ElapsedMilliseconds} ms");
            Assert.Equal(SocketError.ConnectionRefused, refused.SocketErrorCode);
            Assert.True(clock.Elapsed < TimeSpan.FromSeconds(1));

            using var again = ServerProcess.StartWith(dir, StartMode.AppHost, null, "--host", "127.0.0.1", "--port", port.ToString(CultureInfo.InvariantCulture), "--workers", "2");
            again.WaitUntilReady();
            Assert.Equal(port, again.Port);
            Assert.Matches(@"^Hello from \d+\n$", Client.Greet(port));
            again.Signal(Signum.SIGTERM);
            Assert.Equal(0, again.WaitForExit(TimeSpan.FromSeconds(20)));
        }
        finally
        {
            foreach (int child in children) Syscall.kill(child, Signum.SIGKILL);
        }
    }

    [Fact]
    public async Task A_worker_still_starting_when_its_master_dies_exits()
    {
        string dir = await FaultProject();
        // Each worker's handler takes 60 s to make: the master is killed while they are at it.
        using var server = ServerProcess.StartWith(dir, StartMode.AppHost, new Dictionary<string, string> { ["START_DELAY_MS"] = "60000" },
            "--host", "127.0.0.1", "--port", "0", "--workers", "2", "--worker-timeout", "120");
        server.WaitForLog("worker 1 (pid ");
        server.WaitForLog("constructor of worker 0 says hello");
        server.WaitForLog("constructor of worker 1 says hello");
        IReadOnlyList<int> workers = server.StartedWorkers();
        Assert.Equal(2, workers.Count);
        var clock = Stopwatch.StartNew();
        Syscall.kill(server.MasterPid, Signum.SIGKILL);
        bool gone = Proc.WaitUntil(() => !workers.Any(Proc.IsAlive), TimeSpan.FromSeconds(10));
        Report($"master killed while its workers were starting: {(gone ? $"both exited within {clock.ElapsedMilliseconds} ms" : "a worker is still running")}");
        Assert.True(gone, "a starting worker outlived its master:\n" + server.LogText);
        server.WaitForLog("the master is gone before this worker was ready: exiting", count: 2);
    }

    [Fact]
    public async Task A_first_receive_and_send_at_once_on_a_connection_lose_no_answer()
    {
        string dir = await FaultProject();
        using var server = Start(dir, new() { ["FAULT_MODE"] = "race" }, "--workers", "3");
        using var load = new Load(server.Port, clients: 16, limit: TimeSpan.FromSeconds(90));
        load.WaitForSuccesses(6000, TimeSpan.FromSeconds(80));
        load.Dispose();
        Report($"receive and send at once, 3 workers: {load.Summary()}");

        Assert.Empty(load.Failures);
        Assert.DoesNotContain(server.Log, l => l.Contains("handler failed", StringComparison.Ordinal));
    }

    [Fact]
    public async Task A_listening_socket_handed_over_non_blocking_leaves_idle_workers_idle()
    {
        string binary = ServerProcess.ProgramOf(await FaultProject());
        Assert.True(File.Exists("/usr/bin/systemd-socket-activate"), "systemd-socket-activate is not installed (.ci/run installs Debian's systemd package)");
        int port = Client.FreePort();
        // systemd's NonBlocking=yes, as a wrapper between systemd-socket-activate and the server:
        // it sets O_NONBLOCK on the socket (fd 3), then becomes the server (same pid, so LISTEN_PID holds).
        const string nonBlocking = "use Fcntl; $^F = 10; open(my $s, '+<&=', 3) or die \"fd 3: $!\"; " +
            "my $f = fcntl($s, F_GETFL, 0) or die \"F_GETFL: $!\"; fcntl($s, F_SETFL, $f | O_NONBLOCK) or die \"F_SETFL: $!\"; " +
            "exec @ARGV or die \"exec: $!\"";
        using var server = ServerProcess.StartCommand(["systemd-socket-activate", "-l", $"127.0.0.1:{port}", "perl", "-e", nonBlocking, binary, "--workers", "2"]);
        // systemd-socket-activate starts the server on the first connection, which waits in the queue.
        string first = await Task.Run(() =>
        {
            for (int attempt = 0; ; attempt++)
            {
                try { return Client.Greet(port); }
                catch (SocketException e) when (e.SocketErrorCode == SocketError.ConnectionRefused && attempt < 200)
                {
                    Thread.Sleep(50); // not listening yet
                }
            }
        }).WaitAsync(TimeSpan.FromSeconds(30));
        Assert.Matches(@"^Hello from \d+\n$", first);
        server.WaitForLog("pool ready: 2 workers accepting");
        server.WaitForLog("made it blocking");
        IReadOnlyList<int> workers = Proc.ChildrenOf(server.Pid);
        Assert.Equal(2, workers.Count);

        Thread.Sleep(1000); // past start-up
        var before = workers.Select(CpuTicks).ToList();
        Thread.Sleep(2000);
        var after = workers.Select(CpuTicks).ToList();
        double[] share = [.. before.Zip(after, (b, a) => (a - b) / 100.0 / 2.0)]; // ticks are 1/100 s
        Report($"idle workers on a socket handed over non-blocking: CPU over 2 s {string.Join(", ", share.Select(s => $"{s:P0}"))} of one CPU");
        Assert.All(share, s => Assert.True(s < 0.2, $"an idle worker used {s:P0} of a CPU (spinning in accept?):\n{server.LogText}"));
        for (int i = 0; i < 10; i++) Assert.Matches(@"^Hello from \d+\n$", Client.Greet(port));

        server.Signal(Signum.SIGTERM, server.Pid);
        Assert.Equal(0, server.WaitForExit(TimeSpan.FromSeconds(20)));
    }

    /// <summary>utime + stime of a process, in clock ticks (/proc/PID/stat fields 14 and 15).</summary>
    private static long CpuTicks(int pid)
    {
        string text = File.ReadAllText($"/proc/{pid}/stat");
        string[] fields = text[(text.LastIndexOf(')') + 2)..].Split(' ');
        return long.Parse(fields[11], CultureInfo.InvariantCulture) + long.Parse(fields[12], CultureInfo.InvariantCulture);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task After_a_soak_TERM_to_the_echo_server_answers_every_connection_it_accepted(bool noDeferAccept)
    {
        const int Workers = 3, Soak = 20_000;
        string dir = await EchoProject();
        string[] args = noDeferAccept ? ["--workers", "3", "--defer-accept", "0"] : ["--workers", "3"];
        using var server = Start(dir, ServerProcess.TinyGen0(), args);
        using var load = new LineLoad(server.Port, clients: 16, echo: true);
        load.WaitForAnswers(Soak, TimeSpan.FromSeconds(120));
        Assert.True(load.Failures.Count == 0, "failures before the stop: " + load.Summary());
        IReadOnlyList<(long Accepted, int Collections)> collections = server.WorkerCollections(Workers);
        Report($"echo soak{(noDeferAccept ? " (--defer-accept 0)" : "")}: {load.Answered} lines echoed; per worker, accepted/gen0 collections: " +
               string.Join(", ", collections.Select(w => $"{w.Accepted}/{w.Collections}")));

        TimeSpan signalAt = load.Now;
        server.Signal(Signum.SIGTERM);
        int? code = server.WaitForExit(TimeSpan.FromSeconds(30));
        Thread.Sleep(300);
        load.Dispose();
        Report($"TERM to the echo server{(noDeferAccept ? " (--defer-accept 0)" : "")} under 16 clients: {load.Summary()}");

        Assert.Equal(0, code);
        // Every connection the kernel completed had its line echoed; after the stop, clients are refused.
        Assert.All(load.Failures, f => Assert.Equal(LineLoad.Refused, f.Kind));
        Assert.All(load.Failures, f => Assert.True(f.At >= signalAt, $"refused before the stop, at {f.At}"));
        Assert.NotEmpty(load.Failures);
        Assert.DoesNotContain(server.Log, l => l.Contains("was killed by", StringComparison.Ordinal));
    }

    [Fact]
    public async Task A_full_worker_that_is_not_the_last_holder_does_not_hold_up_a_graceful_stop()
    {
        string dir = await FaultProject();
        using var server = Start(dir, new() { ["FAULT_MODE"] = "hold" },
            "--workers", "2", "--max-connections", "2", "--shutdown-timeout", "12", "--write-timeout", "60");
        // The master keeps its first worker accepting while the others release the socket: the last holder.
        int lastHolder = int.Parse(Regex.Match(server.LogText, @"worker 0 \(pid (\d+)\) started").Groups[1].Value, CultureInfo.InvariantCulture);

        // Both workers full: four connections, two each (a full worker leaves accept to the other).
        var held = new List<(Socket Socket, int Pid)>();
        try
        {
            for (int i = 0; i < 4; i++)
            {
                var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp) { ReceiveTimeout = 20_000 };
                socket.Connect(IPAddress.Loopback, server.Port);
                held.Add((socket, Client.PidOf(ReadLine(socket))));
            }
            Assert.Equal(2, held.Count(h => h.Pid == lastHolder));

            // Clients waiting in the queue: each sends its byte, and reads its answer when it comes.
            // (Threads of their own: blocked clients must not hold up the thread pool, nor the clock below.)
            Task<string>[] queued = [.. Enumerable.Range(0, 4).Select(_ => Task.Factory.StartNew(() =>
            {
                using var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp) { ReceiveTimeout = 20_000 };
                socket.Connect(IPAddress.Loopback, server.Port);
                socket.Send("x"u8);
                return ReadLine(socket);
            }, TaskCreationOptions.LongRunning))];
            Thread.Sleep(300);

            var clock = Stopwatch.StartNew();
            server.Signal(Signum.SIGTERM);
            // When the last holder's "asked to stop as the last holder" line is read.
            Task<TimeSpan?> lastHeard = Task.Factory.StartNew(() => Proc.WaitUntil(() => server.Log.Any(l => l.Contains("asked to stop as the last holder", StringComparison.Ordinal)),
                TimeSpan.FromSeconds(20)) ? clock.Elapsed : (TimeSpan?)null, TaskCreationOptions.LongRunning);
            // The other worker is full and holds its connections for 2 s, the last holder for 3 s.
            Thread.Sleep(2000);
            foreach (var (socket, _) in held.Where(h => h.Pid != lastHolder)) Finish(socket);
            Thread.Sleep(1000);
            foreach (var (socket, _) in held.Where(h => h.Pid == lastHolder)) Finish(socket);
            int? code = server.WaitForExit(TimeSpan.FromSeconds(20));
            TimeSpan stopped = clock.Elapsed;
            string[] answers = await Task.WhenAll(queued).WaitAsync(TimeSpan.FromSeconds(10));

            TimeSpan? lastAt = await lastHeard;
            Report($"graceful stop with a full worker that is not the last holder: the last holder was told 'last-holder' " +
                   $"{(lastAt is null ? "never" : "by " + lastAt.Value.TotalMilliseconds.ToString("0", CultureInfo.InvariantCulture) + " ms")}, " +
                   $"the server exited after {stopped.TotalMilliseconds:0} ms (--shutdown-timeout 12 s); queued clients answered: {answers.Count(a => a.StartsWith("Hello from ", StringComparison.Ordinal))}/4");

            Assert.Equal(0, code);
            Assert.All(answers, a => Assert.Matches(@"^Hello from \d+\n$", a));
            Assert.DoesNotContain(server.Log, l => l.Contains("was killed by", StringComparison.Ordinal));
            Assert.True(stopped < TimeSpan.FromSeconds(6), $"the stop took {stopped}:\n{server.LogText}");
            // The last holder heard 'last-holder' long before the full worker's connections ended (2 s after the signal).
            Assert.Contains(server.Log, l => l.Contains($" {lastHolder}] asked to stop as the last holder", StringComparison.Ordinal));
            Assert.True(lastAt < TimeSpan.FromSeconds(1.5), $"the last holder heard 'last-holder' only {lastAt} after the signal:\n{server.LogText}");
        }
        finally
        {
            foreach (var (socket, _) in held) socket.Dispose();
        }
    }

    /// <summary>Sends the byte the hold handler waits for, and reads to the end.</summary>
    private static void Finish(Socket socket)
    {
        socket.Send("x"u8);
        Client.ReadToEnd(socket);
    }

    /// <summary>Reads up to and including the first "\n" (or to the end).</summary>
    private static string ReadLine(Socket socket)
    {
        var bytes = new List<byte>();
        var one = new byte[1];
        while (socket.Receive(one) == 1)
        {
            bytes.Add(one[0]);
            if (one[0] == '\n') break;
        }
        return Encoding.UTF8.GetString([.. bytes]);
    }
}
