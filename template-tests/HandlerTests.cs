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
/// The --handler echo and --handler http choices, served by the generated server on
/// 127.0.0.1, port 0. Every wait is bounded only to catch a hang.
/// </summary>
[Collection("template")]
public sealed partial class HandlerTests(TemplateFixture fixture, ITestOutputHelper output)
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
        using var client = Raw.Connect(server.Port);

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

    [Fact]
    public async Task Echo_drops_a_client_whose_line_never_ends_and_serves_on()
    {
        using var server = await Start("handler-echo");
        using (var client = Raw.Connect(server.Port))
        {
            client.Send("fine\n");
            Assert.Equal("fine\n", client.ReadString(5));
            client.Send(new string('x', 20_000)); // no newline: over the 8 KiB line limit
            byte[] rest = client.ReadToEndOrReset();
            Assert.Empty(rest); // not one byte of the over-long line came back
        }
        using var next = Raw.Connect(server.Port);
        next.Send("still here\n");
        Assert.Equal("still here\n", next.ReadString(11));
    }

    [Fact]
    public async Task Echo_connections_left_idle_do_not_hold_up_a_rolling_restart()
    {
        // A shutdown timeout of an hour: if an idle connection held its worker, HUP would hang.
        using var server = await Start("handler-echo", "--shutdown-timeout", "3600");
        IReadOnlyList<int> before = server.Children();
        var clients = Enumerable.Range(0, 6).Select(_ => Raw.Connect(server.Port)).ToList();
        try
        {
            foreach (Raw client in clients)
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

    // ---- http ----------------------------------------------------------------------------

    [Fact]
    public async Task Http_answers_HttpClient_with_the_greeting_of_a_worker()
    {
        using var server = await Start("handler-http");
        using var http = new HttpClient(new SocketsHttpHandler { UseProxy = false }) { Timeout = Hang };
        var pids = new HashSet<int>();
        for (int i = 0; i < 20; i++)
        {
            using HttpResponseMessage response = await http.GetAsync($"http://127.0.0.1:{server.Port}/any/path?x=1");
            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
            Assert.Equal("text/plain; charset=utf-8", response.Content.Headers.ContentType?.ToString());
            Assert.NotNull(response.Headers.Date);
            string body = await response.Content.ReadAsStringAsync();
            Assert.Equal(Encoding.UTF8.GetByteCount(body), response.Content.Headers.ContentLength);
            Assert.Matches(@"^Hello from \d+\n$", body);
            pids.Add(Client.PidOf(body));
        }
        Assert.Subset(server.Children().ToHashSet(), pids);

        using HttpResponseMessage posted = await http.PostAsync($"http://127.0.0.1:{server.Port}/",
            new ByteArrayContent(new byte[200_000]));
        Assert.Equal(HttpStatusCode.OK, posted.StatusCode);
        Assert.Matches(@"^Hello from \d+\n$", await posted.Content.ReadAsStringAsync());

        using HttpResponseMessage put = await http.PutAsync($"http://127.0.0.1:{server.Port}/", new StringContent("x"));
        Assert.Equal(HttpStatusCode.MethodNotAllowed, put.StatusCode);
        Assert.Equal(new[] { "GET", "HEAD", "POST" }, put.Content.Headers.Allow.Order());
    }

    [Fact]
    public async Task Http_keeps_a_connection_alive_for_many_requests_on_one_worker()
    {
        using var server = await Start("handler-http");
        using var client = Raw.Connect(server.Port);
        var bodies = new HashSet<string>();
        for (int i = 0; i < 100; i++)
        {
            client.Send($"GET /{i} HTTP/1.1\r\nHost: test\r\n\r\n");
            Response response = client.ReadResponse();
            Assert.Equal(200, response.Status);
            Assert.Null(response.Header("Connection"));
            bodies.Add(response.Body);
        }
        string only = Assert.Single(bodies); // one connection, one worker
        Assert.Contains(Client.PidOf(only), server.Children());
    }

    [Fact]
    public async Task Http_honours_Connection_close()
    {
        using var server = await Start("handler-http");
        using var client = Raw.Connect(server.Port);
        client.Send("GET / HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
        Response response = client.ReadResponse();
        Assert.Equal(200, response.Status);
        Assert.Equal("close", response.Header("Connection"));
        Assert.Matches(@"^Hello from \d+\n$", response.Body);
        Assert.True(client.AtEnd(), "the server kept the connection open after Connection: close");
    }

    [Fact]
    public async Task Http_1_0_closes_unless_it_asks_for_keep_alive()
    {
        using var server = await Start("handler-http");
        using (var client = Raw.Connect(server.Port))
        {
            client.Send("GET / HTTP/1.0\r\n\r\n");
            Response response = client.ReadResponse();
            Assert.Equal((200, "close"), (response.Status, response.Header("Connection")));
            Assert.True(client.AtEnd(), "an HTTP/1.0 connection stayed open");
        }
        using (var client = Raw.Connect(server.Port))
        {
            for (int i = 0; i < 3; i++)
            {
                client.Send("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n");
                Response response = client.ReadResponse();
                Assert.Equal((200, "keep-alive"), (response.Status, response.Header("Connection")));
                Assert.Matches(@"^Hello from \d+\n$", response.Body);
            }
        }
    }

    [Fact]
    public async Task Http_HEAD_has_the_headers_of_GET_and_no_body()
    {
        using var server = await Start("handler-http");
        using var client = Raw.Connect(server.Port);
        client.Send("GET / HTTP/1.1\r\nHost: test\r\n\r\n");
        Response get = client.ReadResponse();
        client.Send("HEAD / HTTP/1.1\r\nHost: test\r\n\r\n");
        Response head = client.ReadResponse(headOnly: true);
        Assert.Equal(200, head.Status);
        Assert.Equal(get.Header("Content-Length"), head.Header("Content-Length"));
        Assert.Equal(get.Header("Content-Type"), head.Header("Content-Type"));
        // No body came: the next bytes on the connection are the next answer's.
        client.Send("GET / HTTP/1.1\r\nHost: test\r\n\r\n");
        Response after = client.ReadResponse();
        Assert.Equal((200, get.Body), (after.Status, after.Body));
    }

    [Fact]
    public async Task Http_reads_and_drops_a_request_body()
    {
        using var server = await Start("handler-http");
        using var client = Raw.Connect(server.Port);
        foreach (int size in new[] { 5, 100_000 })
        {
            client.Send($"POST /form HTTP/1.1\r\nHost: test\r\nContent-Type: text/plain\r\nContent-Length: {size}\r\n\r\n");
            client.Send(new string('p', size));
            Response response = client.ReadResponse();
            Assert.Equal(200, response.Status);
            Assert.Matches(@"^Hello from \d+\n$", response.Body);
        }
        client.Send("GET / HTTP/1.1\r\nHost: test\r\n\r\n"); // the body did not leak into the next request
        Assert.Equal(200, client.ReadResponse().Status);
    }

    [Fact]
    public async Task Http_answers_pipelined_requests_in_order()
    {
        using var server = await Start("handler-http");
        using var client = Raw.Connect(server.Port);
        client.Send("HEAD /1 HTTP/1.1\r\nHost: test\r\n\r\n" +
                    "DELETE /2 HTTP/1.1\r\nHost: test\r\n\r\n" +
                    "POST /3 HTTP/1.1\r\nHost: test\r\nContent-Length: 3\r\n\r\nabc" +
                    "GET /4 HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"); // one write
        Response head = client.ReadResponse(headOnly: true);
        Response delete = client.ReadResponse();
        Response post = client.ReadResponse();
        Response get = client.ReadResponse();
        Assert.Equal((200, ""), (head.Status, head.Body));
        Assert.Equal((405, "GET, HEAD, POST"), (delete.Status, delete.Header("Allow")));
        Assert.Equal(200, post.Status);
        Assert.Equal((200, post.Body, "close"), (get.Status, get.Body, get.Header("Connection")));
        Assert.True(client.AtEnd());
    }

    [Theory]
    [InlineData("garbage\r\n\r\n", 400)]
    [InlineData("GET / HTTP/1.1\r\n\r\n", 400)]                                  // HTTP/1.1 without Host
    [InlineData("GET / HTTP/1.1\r\nHost: a\r\nBad Name: x\r\n\r\n", 400)]
    [InlineData("GET / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n", 400)]
    [InlineData("GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505)]
    [InlineData("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", 501)]
    public async Task Http_refuses_a_request_it_cannot_take_and_closes(string request, int status)
    {
        using var server = await Start("handler-http");
        using var client = Raw.Connect(server.Port);
        client.Send(request);
        Response response = client.ReadResponse();
        Assert.Equal((status, "close"), (response.Status, response.Header("Connection")));
        Assert.True(client.AtEnd(), $"the connection stayed open after {status}");
    }

    [Fact]
    public async Task Http_refuses_an_oversized_header_block_with_431()
    {
        using var server = await Start("handler-http");
        using var client = Raw.Connect(server.Port);
        client.Send("GET / HTTP/1.1\r\nHost: test\r\n" + string.Concat(Enumerable.Range(0, 100).Select(i => $"X-Filler-{i}: {new string('f', 200)}\r\n")) + "\r\n");
        Response response = client.ReadResponse();
        Assert.Equal((431, "close"), (response.Status, response.Header("Connection")));
        Assert.True(client.AtEnd());
    }

    [Fact]
    public async Task Http_closes_an_idle_connection_after_the_idle_timeout_and_a_stalled_request_after_the_write_timeout()
    {
        using var server = await Start("handler-http", "--idle-timeout", "1", "--write-timeout", "1");
        using var idle = Raw.Connect(server.Port);
        idle.Send("GET / HTTP/1.1\r\nHost: test\r\n\r\n");
        Assert.Equal(200, idle.ReadResponse().Status);
        using var stalled = Raw.Connect(server.Port);
        stalled.Send("GET / HTTP/1.1\r\nHost: te"); // and nothing more
        Assert.True(idle.AtEnd(), "an idle keep-alive connection outlived --idle-timeout");
        Assert.True(stalled.AtEnd(), "a request that stopped half-way outlived --write-timeout");
    }

    [Theory]
    [InlineData(Signum.SIGQUIT)]
    [InlineData(Signum.SIGTERM)]
    public async Task Graceful_stop_closes_idle_connections_at_once_and_answers_a_request_in_progress(Signum signal)
    {
        // A shutdown timeout of an hour: if a connection held its worker, the server would not exit.
        using var server = await Start("handler-http", "--shutdown-timeout", "3600", "--idle-timeout", "3600");
        var idle = Enumerable.Range(0, 4).Select(_ => Raw.Connect(server.Port)).ToList();
        using var busy = Raw.Connect(server.Port);
        try
        {
            foreach (Raw client in idle)
            {
                client.Send("GET / HTTP/1.1\r\nHost: test\r\n\r\n");
                Assert.Equal(200, client.ReadResponse().Status);
            }
            busy.Send("GET / HTTP/1.1\r\nHost: test\r\n"); // a request begun, its end not yet sent
            Thread.Sleep(300); // the worker has taken those bytes and waits for the rest

            server.Signal(signal);
            // Both workers know: one by the signal, the other, which holds the socket last, by its pipe.
            Assert.True(Proc.WaitUntil(() => server.Log.Count(l => l.StartsWith("[worker", StringComparison.Ordinal) &&
                (l.Contains($"{signal}: finishing", StringComparison.Ordinal) || l.Contains("asked to stop last", StringComparison.Ordinal))) == 2, Hang),
                "the workers were not told to stop:\n" + server.LogText);
            Assert.All(idle, c => Assert.True(c.AtEnd(), "an idle keep-alive connection was not closed"));

            busy.Send("\r\n");
            Response response = busy.ReadResponse();
            Assert.Equal((200, "close"), (response.Status, response.Header("Connection")));
            Assert.True(busy.AtEnd());

            Assert.Equal(0, server.WaitForExit(Hang));
            Assert.DoesNotContain(server.Log, l => l.Contains("unfinished", StringComparison.Ordinal));
            output.WriteLine(server.LogText);
        }
        finally
        {
            idle.ForEach(c => c.Dispose());
        }
    }

    // ---- a raw TCP client ------------------------------------------------------------------

    private sealed record Response(int Status, IReadOnlyList<(string Name, string Value)> Headers, string Body)
    {
        public string? Header(string name) =>
            Headers.Where(h => h.Name.Equals(name, StringComparison.OrdinalIgnoreCase)).Select(h => h.Value).SingleOrDefault();
    }

    /// <summary>A TCP connection to the server with a buffer of what it has received.</summary>
    private sealed partial class Raw : IDisposable
    {
        private readonly List<byte> received = [];
        private readonly byte[] chunk = new byte[65536];

        public Socket Socket { get; } = new(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);

        public static Raw Connect(int port)
        {
            var raw = new Raw();
            raw.Socket.NoDelay = true;
            raw.Socket.ReceiveTimeout = (int)Hang.TotalMilliseconds; // only to catch a hang
            raw.Socket.Connect(IPAddress.Loopback, port);
            return raw;
        }

        public void Send(string text) => Socket.Send(Encoding.UTF8.GetBytes(text));

        /// <summary>Receives more; false when the server has closed the connection.</summary>
        private bool Receive()
        {
            int n = Socket.Receive(chunk);
            received.AddRange(chunk.AsSpan(0, n));
            return n > 0;
        }

        private byte[] Take(int count)
        {
            byte[] taken = [.. received.Take(count)];
            received.RemoveRange(0, count);
            return taken;
        }

        public string ReadString(int bytes)
        {
            while (received.Count < bytes)
                Assert.True(Receive(), $"the server closed the connection after {received.Count} of {bytes} bytes");
            return Encoding.UTF8.GetString(Take(bytes));
        }

        /// <summary>True once the server has closed the connection and nothing else is left to read.</summary>
        public bool AtEnd()
        {
            try
            {
                while (Receive()) { }
            }
            catch (SocketException e) when (e.SocketErrorCode == SocketError.ConnectionReset)
            {
            }
            return received.Count == 0;
        }

        /// <summary>What arrives until the server closes or resets the connection.</summary>
        public byte[] ReadToEndOrReset()
        {
            try
            {
                while (Receive()) { }
            }
            catch (SocketException e) when (e.SocketErrorCode == SocketError.ConnectionReset)
            {
            }
            return Take(received.Count);
        }

        /// <summary>Reads one HTTP response: status line, headers, and a body of Content-Length bytes (none for HEAD).</summary>
        public Response ReadResponse(bool headOnly = false)
        {
            int end;
            while ((end = IndexOfBlankLine()) < 0)
                Assert.True(Receive(), "the server closed the connection before a whole response head: " + Encoding.ASCII.GetString([.. received]));
            string head = Encoding.ASCII.GetString(Take(end + 4));
            string[] lines = head[..^4].Split("\r\n");
            Match status = StatusLine().Match(lines[0]);
            Assert.True(status.Success, $"not a status line: '{lines[0]}'");
            var headers = lines.Skip(1).Select(l => l.Split(':', 2)).Select(p => (p[0], p[1].Trim())).ToList();
            var response = new Response(int.Parse(status.Groups[1].Value, CultureInfo.InvariantCulture), headers, "");
            string? length = response.Header("Content-Length");
            Assert.NotNull(length);
            return headOnly ? response : response with { Body = ReadString(int.Parse(length, CultureInfo.InvariantCulture)) };
        }

        private int IndexOfBlankLine()
        {
            for (int i = 0; i + 3 < received.Count; i++)
                if (received[i] == '\r' && received[i + 1] == '\n' && received[i + 2] == '\r' && received[i + 3] == '\n') return i;
            return -1;
        }

        [GeneratedRegex(@"^HTTP/1\.1 (\d{3}) ")]
        private static partial Regex StatusLine();

        public void Dispose() => Socket.Dispose();
    }
}
