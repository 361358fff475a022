using System.Net;
using System.Net.Sockets;
using System.Text;

namespace PreforkTemplates.Tests.Infrastructure;

/// <summary>
/// A load generator for servers that read before they answer (the echo handler): <c>clients</c>
/// threads, each connect → send one line → read one line back → close, over and over. Failed
/// connections are counted with their time by the kinds of <see cref="FailureLog"/>: <c>refused</c>,
/// <c>reset</c> (connected, then reset before the whole line came back), <c>empty</c> (closed
/// with nothing sent back), <c>short</c> (closed in the middle of the line, or another line
/// came back), <c>timeout</c> (no line within 10 s), or the socket error for anything else.
/// </summary>
public sealed class LineLoad : LoadBase
{
    private readonly int port;
    private readonly bool echo;
    private long attempted, answered;

    /// <param name="echo">The line must come back as sent; otherwise any line ending in "\n" will do.</param>
    public LineLoad(int port, int clients, bool echo)
    {
        this.port = port;
        this.echo = echo;
        Start(clients, "line load");
    }

    public long Attempted => Interlocked.Read(ref attempted);
    public long Answered => Interlocked.Read(ref answered);

    public void WaitForAnswers(long count, TimeSpan timeout)
    {
        long target = Answered + count;
        if (!Proc.WaitUntil(() => Answered >= target || !failures.IsEmpty, timeout) || Answered < target)
            throw new TimeoutException($"the load did not reach {count} more answers: {Summary()}");
    }

    /// <summary>Attempted, answered, failed by kind, and the first failures other than refused.</summary>
    public string Summary() => failures.Summary($"{Attempted} attempted, {Answered} answered, failed", shown: f => f.Kind != Refused);

    protected override void Run(int client)
    {
        var buffer = new byte[256];
        for (long n = 0; !Stopping; n++)
        {
            Interlocked.Increment(ref attempted);
            byte[] line = Encoding.ASCII.GetBytes($"client {client} line {n}\n");
            using var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
            socket.ReceiveTimeout = 10_000;
            socket.NoDelay = true;
            string stage = "connect";
            int length = 0;
            try
            {
                socket.Connect(IPAddress.Loopback, port);
                stage = "send";
                socket.Send(line);
                stage = "read";
                int read;
                while (Array.IndexOf(buffer, (byte)'\n', 0, length) < 0 && length < buffer.Length
                       && (read = socket.Receive(buffer, length, buffer.Length - length, SocketFlags.None)) > 0)
                    length += read;
                bool whole = Array.IndexOf(buffer, (byte)'\n', 0, length) >= 0;
                bool right = whole && (!echo || buffer.AsSpan(0, length).SequenceEqual(line));
                if (!right)
                {
                    failures.Add(length == 0 ? Empty : Short, $"'{Encoding.ASCII.GetString(buffer, 0, length)}'");
                    continue;
                }
                Interlocked.Increment(ref answered);
            }
            catch (SocketException e)
            {
                string kind = (stage, e.SocketErrorCode) switch
                {
                    ("connect", SocketError.ConnectionRefused) => Refused,
                    (_, SocketError.TimedOut) => Timeout,
                    ("send" or "read", SocketError.ConnectionReset or SocketError.Shutdown) when length == 0 => Reset,
                    ("send" or "read", SocketError.ConnectionReset or SocketError.Shutdown) => Short,
                    _ => $"{stage}: {e.SocketErrorCode}",
                };
                failures.Add(kind, e.Message);
                if (kind == Refused) Thread.Sleep(10); // nobody listens: do not spin
            }
        }
    }
}
