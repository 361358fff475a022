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
/// The --handler echo choice, served by the generated server on 127.0.0.1, port 0 (the
/// --handler http choice: HttpTests.cs). Every wait is bounded only to catch a hang.
/// </summary>
[Collection("template")]
public sealed class HandlerTests(TemplateFixture fixture)
{
    private static readonly TimeSpan Hang = TimeSpan.FromSeconds(30);

    private async Task<ServerProcess> Start(string scenario, params string[] args)
    {
        string dir = await fixture.BuiltAsync(TemplateFixture.Get(scenario));
        return ServerProcess.Start(dir, ["--host", "127.0.0.1", "--port", "0", "--workers", "2", .. args]).WaitUntilReady();
    }

    // ---- echo ----------------------------------------------------------------------------

    [Fact]
    public async Task Echo_sends_back_every_line_as_sent_however_it_is_cut()
    {
        using var server = await Start("handler-echo");
        using var client = RawClient.Connect(server.Port);

        client.Send("one\ntwo\n");                       // two lines in one write
        Assert.Equal("one\ntwo\n", client.ReadString(8));

        foreach (string piece in new[] { "thr", "ee and ", "a ½ “quote” 😀", "\n" }) // one line in four writes
        {
            client.Send(piece);
            Thread.Sleep(20); // let each piece travel on its own
        }
        Assert.Equal("three and a ½ “quote” 😀\n", client.ReadString(Encoding.UTF8.GetByteCount("three and a ½ “quote” 😀\n")));

        client.Send("\n\r\nlast\nunfinished");            // an empty line, a CRLF line, a line, and a start
        Assert.Equal("\n\r\nlast\n", client.ReadString(8));
        client.Send(" line\n");
        Assert.Equal("unfinished line\n", client.ReadString(16));

        string big = new string('b', 8000) + "\n";        // near the limit, still a line
        client.Send(big);
        Assert.Equal(big, client.ReadString(big.Length));

        client.Socket.Shutdown(SocketShutdown.Send);      // the client is done: the server closes too
        Assert.True(client.AtEnd(), "the server kept the connection after the client closed its side");
    }

    /// <summary>
    /// --defer-accept (echo's default is 1 s; 5 here, so the kernel still holds the silent
    /// client when it is counted): a worker accepts only a client that has sent something. With
    /// 0, the silent client is accepted as soon as it connects.
    /// </summary>
    [Theory]
    [InlineData("5", 1)]
    [InlineData("0", 2)]
    public async Task Echo_with_defer_accept_takes_a_connection_once_its_client_has_spoken(string seconds, int acceptedBeforeItSpeaks)
    {
        using var server = await Start("handler-echo", "--workers", "1", "--defer-accept", seconds);
        using var silent = RawClient.Connect(server.Port); // connected, nothing sent yet
        using var speaker = RawClient.Connect(server.Port);
        speaker.Send("hello\n");
        Assert.Equal("hello\n", speaker.ReadString(6));
        Assert.Equal(acceptedBeforeItSpeaks, server.WorkerCollections(1).Single().Accepted);

        silent.Send("late\n");
        Assert.Equal("late\n", silent.ReadString(5));
        Assert.Equal(2, server.WorkerCollections(1).Single().Accepted);
    }

    [Fact]
    public async Task Echo_drops_a_client_whose_line_never_ends_and_serves_on()
    {
        using var server = await Start("handler-echo");
        using (var client = RawClient.Connect(server.Port))
        {
            client.Send("fine\n");
            Assert.Equal("fine\n", client.ReadString(5));
            client.Send(new string('x', 20_000)); // no newline: over the 8 KiB line limit
            byte[] rest = client.ReadToEndOrReset();
            Assert.Empty(rest); // not one byte of the over-long line came back
        }
        using var next = RawClient.Connect(server.Port);
        next.Send("still here\n");
        Assert.Equal("still here\n", next.ReadString(11));
    }

    [Fact]
    public async Task Echo_connections_left_idle_do_not_hold_up_a_rolling_restart()
    {
        // A shutdown timeout of an hour: if an idle connection held its worker, HUP would hang.
        using var server = await Start("handler-echo", "--shutdown-timeout", "3600");
        IReadOnlyList<int> before = server.Children();
        var clients = Enumerable.Range(0, 6).Select(_ => RawClient.Connect(server.Port)).ToList();
        try
        {
            foreach (RawClient client in clients)
            {
                client.Send("hello\n");
                Assert.Equal("hello\n", client.ReadString(6));
            }
            server.Signal(Signum.SIGHUP);
            server.WaitForLog("HUP: all 2 workers replaced", Hang);
            Assert.All(clients, c => Assert.True(c.AtEnd(), "an idle echo connection was not closed by its stopping worker"));
            Assert.True(Proc.WaitUntil(() => before.All(pid => !Proc.IsAlive(pid)), Hang), "a replaced worker did not exit:\n" + server.LogText);
        }
        finally
        {
            clients.ForEach(c => c.Dispose());
        }
    }
}
