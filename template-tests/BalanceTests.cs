using System.Net;
using System.Net.Sockets;
using PreforkTemplates.Tests.Infrastructure;
using Xunit;
using Xunit.Abstractions;

namespace PreforkTemplates.Tests;

/// <summary>
/// Long-lived connections that arrive together are spread over the workers too (the shared
/// connection counts, SharedCounts.cs): without them the worker that is awake takes most of a
/// burst, since it calls accept() again before the others are scheduled (measured: 64 kept-alive
/// HTTP connections over 5 workers spread 35/14/10/3/2). Behaviour, not speed: every worker gets
/// some, and none holds more than twice its share. On 127.0.0.1, port 0.
/// </summary>
[Collection("template")]
public sealed class BalanceTests(TemplateFixture fixture, ITestOutputHelper output)
{
    private const int Workers = 5;

    private static ServerProcess Start(string dir, params string[] args) =>
        ServerProcess.Start(dir, ["--host", "127.0.0.1", "--port", "0", "--workers", Workers.ToString(), .. args]).WaitUntilReady();

    [Fact]
    public async Task Kept_alive_HTTP_connections_opened_in_one_burst_reach_every_worker_and_none_holds_more_than_twice_its_share()
    {
        const int connections = 64;
        using var server = Start(await fixture.HttpBehaviourProjectAsync());
        var clients = new List<RawClient>();
        try
        {
            // All at once, then a request on each: the answer names the worker that holds it.
            for (int i = 0; i < connections; i++) clients.Add(RawClient.Connect(server.Port));
            foreach (RawClient client in clients) client.Send("GET / HTTP/1.1\r\nHost: test\r\n\r\n");
            var perPid = new Dictionary<int, int>();
            foreach (RawClient client in clients)
            {
                RawResponse response = client.ReadResponse();
                Assert.Equal(200, response.Status);
                int pid = Client.PidOf(response.Body);
                perPid[pid] = perPid.GetValueOrDefault(pid) + 1;
            }
            Check($"{connections} kept-alive HTTP connections opened in one burst", server, perPid, connections);
        }
        finally
        {
            foreach (RawClient client in clients) client.Dispose();
        }
    }

    [Fact]
    public async Task A_thousand_idle_echo_connections_opened_at_once_reach_every_worker_and_none_holds_more_than_twice_its_share()
    {
        const int connections = 1000;
        using var server = Start(await fixture.BuiltAsync(TemplateFixture.Get("handler-echo")));
        IReadOnlyList<int> workers = server.Children();
        Assert.Equal(Workers, workers.Count);
        Dictionary<int, int> before = workers.ToDictionary(w => w, SocketsOf); // the listening socket, and the runtime's own
        var clients = new List<Socket>();
        try
        {
            // All at once, and idle: nothing sent. The listening socket defers them (--defer-accept)
            // until its timeout, a second or so, then hands them all to the workers together.
            for (int i = 0; i < connections; i++)
            {
                var client = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
                clients.Add(client);
                client.Connect(IPAddress.Loopback, server.Port);
            }

            // Which worker holds each: the sockets in its /proc/PID/fd beyond those it had before.
            Dictionary<int, int> perPid = [];
            Assert.True(Proc.WaitUntil(() =>
            {
                perPid = workers.ToDictionary(w => w, w => SocketsOf(w) - before[w]);
                return perPid.Values.Sum() == connections;
            }, TimeSpan.FromSeconds(30)), $"the workers hold {perPid.Values.Sum()} connections, not {connections}:\n" + server.LogText);
            Check($"{connections} idle echo connections opened at once", server, perPid, connections);
        }
        finally
        {
            foreach (Socket client in clients) client.Dispose();
        }
    }

    /// <summary>Every worker holds some of the connections, and none more than twice its share.</summary>
    private void Check(string what, ServerProcess server, Dictionary<int, int> perPid, int connections)
    {
        double jain = Client.Jain(server.Children().Select(w => perPid.GetValueOrDefault(w)));
        string line = $"{what}: per worker {string.Join("/", perPid.Values.OrderDescending())}, Jain's index {jain:0.000}";
        output.Report(line);
        Assert.Equal(server.Children().Order(), perPid.Where(p => p.Value > 0).Select(p => p.Key).Order());
        Assert.All(perPid.Values, held => Assert.True(held <= 2 * connections / Workers, $"a worker holds {held} of {connections}; {line}"));
    }

    private static int SocketsOf(int pid) =>
        Directory.GetFiles($"/proc/{pid}/fd").Count(fd =>
        {
            try { return new FileInfo(fd).LinkTarget?.StartsWith("socket:", StringComparison.Ordinal) == true; }
            catch (IOException) { return false; }
        });
}
