using System.Collections.Concurrent;
using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Text;

namespace PreforkTemplates.Tests.Infrastructure;

/// <summary>
/// An HTTP load generator for tests, as wrk is: <c>clients</c> threads, each with one
/// kept-alive connection at a time on which it sends GET / and reads the answer, over and
/// over; the <c>perConnection</c>-th request says <c>Connection: close</c> and the client
/// connects again, so new connections come all the time too. A request fails by the kinds of
/// <see cref="FailureLog"/> and HTTP's own:
/// <c>refused</c> (the connect), <c>reset</c> or <c>empty</c> (the connection was reset or
/// closed before any byte of the answer), <c>short</c> (in the middle of it), <c>timeout</c>
/// (no answer within 10 s), <c>status N</c> (not 200 with a greeting). A reused connection
/// that the server closed before any byte of the answer is not a failure but <c>Stale</c>: the
/// server closed it idle just as the request left, and the request is sent again on a new
/// connection, as HTTP clients do (RFC 9112, 9.3.1); with <c>resend: false</c> it is a failure
/// like any other, as for wrk, load balancers' health checks and clients of requests that are
/// not safe to repeat. It stops when disposed, or after <c>limit</c> at the latest.
/// </summary>
public sealed class HttpLoad : LoadBase
{
    private sealed class Broken(string kind, string detail) : Exception(detail)
    {
        public string Kind { get; } = kind;
    }

    private readonly int port;
    private readonly int perConnection;
    private readonly bool resend;
    private readonly TimeSpan limit;
    private readonly ConcurrentDictionary<int, int> perPid = new();
    private long attempted, succeeded, stale, connections;

    public HttpLoad(int port, int clients = 16, int perConnection = 20, TimeSpan? limit = null, bool resend = true)
    {
        this.port = port;
        this.perConnection = perConnection;
        this.resend = resend;
        this.limit = limit ?? TimeSpan.FromSeconds(60);
        Start(clients, "http load");
    }

    public long Succeeded => Interlocked.Read(ref succeeded);
    public long Stale => Interlocked.Read(ref stale);
    public IReadOnlyDictionary<int, int> PerPid => perPid;

    public void WaitForSuccesses(int count, TimeSpan? timeout = null)
    {
        long target = Succeeded + count;
        if (!Proc.WaitUntil(() => Succeeded >= target, timeout ?? TimeSpan.FromSeconds(20)))
            throw new TimeoutException($"the load did not reach {count} more answers: {Summary()}");
    }

    public string Summary() =>
        failures.Summary($"{Interlocked.Read(ref attempted)} requests on {Interlocked.Read(ref connections)} connections, {Succeeded} answered, " +
            $"{Stale} sent again after a kept-alive connection closed; failed");

    protected override void Run(int client)
    {
        var buffer = new byte[4096];
        byte[] keepAlive = Encoding.ASCII.GetBytes("GET / HTTP/1.1\r\nHost: load\r\n\r\n");
        byte[] close = Encoding.ASCII.GetBytes("GET / HTTP/1.1\r\nHost: load\r\nConnection: close\r\n\r\n");
        while (!Stopping && clock.Elapsed < limit)
        {
            using var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true, ReceiveTimeout = 10_000 };
            Interlocked.Increment(ref attempted);
            try
            {
                socket.Connect(IPAddress.Loopback, port);
            }
            catch (SocketException e)
            {
                failures.Add(e.SocketErrorCode == SocketError.ConnectionRefused ? Refused : $"connect: {e.SocketErrorCode}", e.Message);
                Thread.Sleep(10); // nobody listens: do not spin
                continue;
            }
            Interlocked.Increment(ref connections);
            for (int n = 0; n < perConnection && !Stopping; n++)
            {
                if (n > 0) Interlocked.Increment(ref attempted);
                bool last = n == perConnection - 1;
                int received = 0;
                try
                {
                    socket.Send(last ? close : keepAlive);
                    (int pid, bool closing) = ReadAnswer(socket, buffer, ref received);
                    perPid.AddOrUpdate(pid, 1, (_, c) => c + 1);
                    Interlocked.Increment(ref succeeded);
                    if (closing) break;
                }
                catch (Exception e) when (e is SocketException or Broken)
                {
                    string kind = e switch
                    {
                        Broken b => b.Kind,
                        SocketException { SocketErrorCode: SocketError.TimedOut } => Timeout,
                        SocketException { SocketErrorCode: SocketError.ConnectionReset or SocketError.Shutdown or SocketError.ConnectionAborted } => received == 0 ? Reset : Short,
                        SocketException s => $"{s.SocketErrorCode}",
                        _ => e.GetType().Name,
                    };
                    if (resend && n > 0 && received == 0 && kind is Reset or Empty)
                    {
                        Interlocked.Increment(ref stale); // sent again on the next connection
                        Interlocked.Decrement(ref attempted);
                    }
                    else failures.Add(kind, e.Message);
                    break;
                }
            }
        }
    }

    /// <summary>Reads one answer: the greeting's pid, and whether the server closes the connection after it.</summary>
    private static (int Pid, bool Closing) ReadAnswer(Socket socket, byte[] buffer, ref int received)
    {
        int headEnd = -1, bodyLength = -1;
        while (true)
        {
            if (received == buffer.Length) throw new Broken("too long", "an answer of more than 4 KiB");
            int n = socket.Receive(buffer, received, buffer.Length - received, SocketFlags.None);
            if (n == 0) throw new Broken(received == 0 ? Empty : Short, $"closed after {received} bytes: '{Encoding.ASCII.GetString(buffer, 0, received)}'");
            received += n;
            if (headEnd < 0)
            {
                headEnd = buffer.AsSpan(0, received).IndexOf("\r\n\r\n"u8);
                if (headEnd < 0) continue;
                string head = Encoding.ASCII.GetString(buffer, 0, headEnd);
                if (!head.StartsWith("HTTP/1.1 200 ", StringComparison.Ordinal))
                    throw new Broken($"status {head.Split(' ').ElementAtOrDefault(1)}", head.Split("\r\n")[0]);
                string? length = head.Split("\r\n").FirstOrDefault(l => l.StartsWith("Content-Length:", StringComparison.OrdinalIgnoreCase));
                if (length is null) throw new Broken("no Content-Length", head);
                bodyLength = int.Parse(length["Content-Length:".Length..].Trim(), CultureInfo.InvariantCulture);
            }
            if (received < headEnd + 4 + bodyLength) continue;
            if (received > headEnd + 4 + bodyLength) throw new Broken("extra bytes", "more than one answer to one request");
            string body = Encoding.UTF8.GetString(buffer, headEnd + 4, bodyLength);
            bool closing = Encoding.ASCII.GetString(buffer, 0, headEnd).Contains("\r\nConnection: close", StringComparison.OrdinalIgnoreCase);
            return int.TryParse(body.TrimEnd('\n').Split(' ')[^1], NumberStyles.None, CultureInfo.InvariantCulture, out int pid)
                ? (pid, closing)
                : throw new Broken("not a greeting", $"'{body}'");
        }
    }
}
