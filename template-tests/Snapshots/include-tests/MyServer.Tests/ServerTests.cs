namespace MyServer.Tests;

using System;
using System.Collections.Generic;
using System.Diagnostics;
using System.Globalization;
using System.IO;
using System.Linq;
using System.Net.Sockets;
using System.Text;
using Mono.Unix.Native;
using Xunit;
using Xunit.Abstractions;

/// <summary>
/// The server as its clients see it. Each test starts the built server (TestServer.cs) on
/// 127.0.0.1 and a free port, talks to it, and stops it (`dotnet test` builds the server
/// first). When you change Handler.cs, change the first test to expect your answers, and
/// add yours at the end, starting the server and talking to it as the first test does.
/// </summary>
public sealed class ServerTests(ITestOutputHelper output)
{
    private const int Workers = 3;

    [Fact]
    public void Greeting_comes_from_a_worker()
    {
        using var server = new TestServer(output, Workers);

        string answer = Receive(server);

        Assert.Contains(answer, server.Workers().Select(pid => Greeting(server, pid)));
    }

    [Fact]
    public void Every_worker_answers()
    {
        // The greeting is set to just the worker's pid, so that each answer says who sent it.
        using var server = new TestServer(output, Workers, "--greeting", "{pid}");
        IReadOnlyList<int> workers = server.Workers();
        Assert.Equal(Workers, workers.Count);

        // One connection after another: the kernel hands each to the next waiting worker.
        var answered = new HashSet<int>();
        var waited = Stopwatch.StartNew();
        while (answered.Count < Workers && waited.Elapsed < TestServer.Timeout)
            answered.Add(int.Parse(Receive(server).Trim(), CultureInfo.InvariantCulture));
        Assert.Equal(workers.Order(), answered.Order());
    }

    [Fact]
    public void Interrupt_stops_the_master_and_every_worker()
    {
        using var server = new TestServer(output, Workers);
        IReadOnlyList<int> workers = server.Workers();
        Assert.Equal(Workers, workers.Count);

        server.Signal(Signum.SIGINT); // as `kill -INT <master pid>` or Ctrl+C

        Assert.Equal(0, server.WaitForExit());
        Assert.All(workers, pid => Assert.False(TestServer.IsAlive(pid), $"worker {pid} is still running"));
        Assert.Throws<SocketException>(() => server.Connect().Dispose()); // nobody listens any more
    }

    // Add your tests here.

    /// <summary>What a worker sends by default: Settings.DefaultGreeting with {pid} and {worker} filled in, and a newline.</summary>
    private static string Greeting(TestServer server, int pid) =>
        Settings.DefaultGreeting
            .Replace("{pid}", pid.ToString(CultureInfo.InvariantCulture), StringComparison.Ordinal)
            .Replace("{worker}", server.IndexOf(pid).ToString(CultureInfo.InvariantCulture), StringComparison.Ordinal) + "\n";

    /// <summary>Connects and reads what the server sends until it closes the connection.</summary>
    private static string Receive(TestServer server)
    {
        using Socket client = server.Connect();
        using var stream = new NetworkStream(client);
        using var reader = new StreamReader(stream, Encoding.UTF8);
        return reader.ReadToEnd();
    }
}
