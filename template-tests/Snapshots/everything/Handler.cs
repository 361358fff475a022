namespace My.Server_2;

using System;
using System.Buffers;
using System.Globalization;
using System.Net.Sockets;
using System.Text;
using System.Threading;
using System.Threading.Tasks;

/// <summary>
/// What the server does with a connection: THIS IS THE FILE TO EDIT.
/// Each worker process makes one Handler when it starts, then calls <see cref="HandleAsync"/>
/// for every connection it accepts, up to --max-connections at once, and closes the
/// connection when it returns. An exception in it ends that connection only (it is logged),
/// never the worker.
/// HandleAsync starts on the worker's accepting thread and goes on on the thread pool after
/// its first await that has to wait: await slow work (Task.Delay, ReceiveAsync, database
/// calls), never block on it (Thread.Sleep, .Result), or the worker stops accepting.
/// Its <c>timeout</c> is cancelled --write-timeout after the connection was accepted: pass it
/// to the reads and writes of the client's first request and its answer. A handler that keeps
/// the connection open takes a deadline from Deadlines.cs for each later step:
/// <see cref="Deadlines.Idle"/> while it waits for the client with nothing in hand (closed
/// after --idle-timeout, or at once when the worker stops), <see cref="Deadlines.Write"/> once
/// a request or line has begun to arrive, until its answer has left.
/// </summary>
public sealed class Handler
{
    // This one is a minimal HTTP/1.1 server. It answers GET, HEAD and POST, whatever the path,
    // with "200 OK" and the greeting and a newline as a text/plain body: change body in the
    // constructor, or the call of Answer in HandleAsync to answer each request differently.
    // It keeps connections open (HTTP/1.1 keep-alive; HTTP/1.0 only with "Connection:
    // keep-alive"), honours "Connection: close", answers pipelined requests in order, reads and
    // drops request bodies (Content-Length), and answers other methods 405. A request it cannot
    // take is answered, then the connection closed: 400 (malformed, or HTTP/1.1 without Host),
    // 414 or 431 (request line or head longer than MaxHead), 501 (a Transfer-Encoding, such
    // as a chunked body: it would need a decoder here, and no client of a greeting needs to
    // send one), 505 (not HTTP/1.x).

    /// <summary>The longest request head (request line, headers, blank line) taken, in bytes.</summary>
    private const int MaxHead = 8192;

    /// <summary>The longest answer without its body (status line and headers), in bytes.</summary>
    private const int MaxAnswerHead = 512;

    /// <summary>Bytes that may form a method or a header name (RFC 9110 "token").</summary>
    private static readonly SearchValues<byte> TokenBytes =
        SearchValues.Create("!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"u8);

    private readonly byte[] body;
    private readonly int outputSize;
    private volatile DateLine date = new(-1, []);

    /// <summary>Runs once per worker, before it accepts: do per-worker set-up here.</summary>
    public Handler(Settings settings, int workerIndex)
    {
        body = Encoding.UTF8.GetBytes(settings.GreetingFor(workerIndex) + "\n");
        outputSize = Math.Max(4096, MaxAnswerHead + body.Length);
    }

    /// <summary>Serves one client (the class comment says how; <paramref name="timeout"/> is the first answer's deadline).</summary>
    public async ValueTask HandleAsync(Socket client, CancellationToken timeout)
    {
        client.NoDelay = true; // an answer goes out at once, even before the last one is acknowledged
        byte[] input = ArrayPool<byte>.Shared.Rent(MaxHead);
        byte[] output = ArrayPool<byte>.Shared.Rent(outputSize);
        try
        {
            int start = 0, end = 0;       // input[start..end): received, not yet taken
            int written = 0;              // output[0..written): answers not yet sent
            CancellationToken deadline = timeout;
            while (true)
            {
                // Nothing received beyond the requests answered: send those answers (pipelined
                // requests get theirs in one write), then wait, idle, for the next request.
                if (start == end)
                {
                    if (written > 0) await client.SendAsync(output.AsMemory(0, written), SocketFlags.None, deadline);
                    written = start = end = 0;
                    end = await client.ReceiveAsync(input.AsMemory(0, MaxHead), SocketFlags.None, Deadlines.Idle());
                    if (end == 0) return; // the client closed the connection
                }
                deadline = Deadlines.Write(); // a request has begun

                // Receive until the head is complete.
                int headLength;
                while ((headLength = HeadLength(input.AsSpan(start, end - start))) < 0)
                {
                    if (end - start == MaxHead)
                    {
                        bool lineEnded = input.AsSpan(start, end - start).Contains((byte)'\n');
                        await RefuseAsync(client, output, written, lineEnded ? 431 : 414, deadline);
                        return;
                    }
                    if (written > 0) await client.SendAsync(output.AsMemory(0, written), SocketFlags.None, deadline);
                    written = 0;
                    input.AsSpan(start, end - start).CopyTo(input); // make room after what we have
                    end -= start;
                    start = 0;
                    int read = await client.ReceiveAsync(input.AsMemory(end, MaxHead - end), SocketFlags.None, deadline);
                    if (read == 0) return;
                    end += read;
                }
                Request request = Parse(input.AsSpan(start, headLength));
                start += headLength;
                if (request.Error != 0)
                {
                    await RefuseAsync(client, output, written, request.Error, deadline);
                    return;
                }

                // Read and drop the body: what came with the head, then the rest.
                long left = request.ContentLength;
                int taken = (int)Math.Min(left, end - start);
                start += taken;
                left -= taken;
                if (left > 0 && request.ExpectContinue)
                    written = Put(output, written, "HTTP/1.1 100 Continue\r\n\r\n"u8);
                while (left > 0)
                {
                    if (written > 0) await client.SendAsync(output.AsMemory(0, written), SocketFlags.None, deadline);
                    written = 0;
                    end = await client.ReceiveAsync(input.AsMemory(0, MaxHead), SocketFlags.None, deadline);
                    if (end == 0) return;
                    start = (int)Math.Min(left, end);
                    left -= start;
                }

                // The answer. A stopping worker answers this request, then closes.
                if (written + MaxAnswerHead + body.Length > output.Length)
                {
                    await client.SendAsync(output.AsMemory(0, written), SocketFlags.None, deadline);
                    written = 0;
                }
                bool keepAlive = request.KeepAlive && !Deadlines.Stopping;
                ReadOnlySpan<byte> connection = !keepAlive ? "Connection: close\r\n"u8
                    : request.Http10 ? "Connection: keep-alive\r\n"u8 : default;
                written = request.Method switch
                {
                    Method.Get or Method.Post => Answer(output, written, "200 OK"u8, default, connection, body),
                    Method.Head => Answer(output, written, "200 OK"u8, default, connection, body, headOnly: true),
                    _ => Answer(output, written, "405 Method Not Allowed"u8, "Allow: GET, HEAD, POST\r\n"u8, connection,
                        "Method Not Allowed\n"u8),
                };
                if (!keepAlive)
                {
                    await client.SendAsync(output.AsMemory(0, written), SocketFlags.None, deadline);
                    return;
                }
            }
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(input);
            ArrayPool<byte>.Shared.Return(output);
        }
    }

    /// <summary>
    /// Writes one answer at output[at..] and returns where it ends: status line, Content-Type,
    /// Content-Length, Date, <paramref name="headers"/> and <paramref name="connection"/> (each
    /// line ending in "\r\n"), a blank line, and <paramref name="content"/> unless
    /// <paramref name="headOnly"/> (HEAD). Its head must fit in MaxAnswerHead bytes.
    /// </summary>
    private int Answer(byte[] output, int at, ReadOnlySpan<byte> status, ReadOnlySpan<byte> headers,
        ReadOnlySpan<byte> connection, ReadOnlySpan<byte> content, bool headOnly = false)
    {
        at = Put(output, at, "HTTP/1.1 "u8);
        at = Put(output, at, status);
        at = Put(output, at, "\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: "u8);
        content.Length.TryFormat(output.AsSpan(at), out int digits, default, CultureInfo.InvariantCulture);
        at = Put(output, at + digits, "\r\n"u8);
        at = Put(output, at, DateHeader());
        at = Put(output, at, headers);
        at = Put(output, at, connection);
        at = Put(output, at, "\r\n"u8);
        return headOnly ? at : Put(output, at, content);
    }

    private static int Put(byte[] output, int at, ReadOnlySpan<byte> bytes)
    {
        bytes.CopyTo(output.AsSpan(at));
        return at + bytes.Length;
    }

    /// <summary>
    /// Answers an error with "Connection: close", then closes gently: the client may still be
    /// sending (the rest of a long head, a body), and closing a socket with unread bytes makes
    /// the kernel reset the connection, which can destroy the answer before the client reads it.
    /// So it stops sending, then reads and drops up to 64 KiB for up to 2 s, until the client closes.
    /// </summary>
    private async ValueTask RefuseAsync(Socket client, byte[] output, int written, int status, CancellationToken deadline)
    {
        string reason = status switch
        {
            414 => "URI Too Long",
            431 => "Request Header Fields Too Large",
            501 => "Not Implemented",
            505 => "HTTP Version Not Supported",
            _ => "Bad Request",
        };
        if (written + MaxAnswerHead + reason.Length + 1 > output.Length)
        {
            await client.SendAsync(output.AsMemory(0, written), SocketFlags.None, deadline);
            written = 0;
        }
        written = Answer(output, written, Encoding.ASCII.GetBytes($"{status} {reason}"), default,
            "Connection: close\r\n"u8, Encoding.ASCII.GetBytes(reason + "\n"));
        await client.SendAsync(output.AsMemory(0, written), SocketFlags.None, deadline);
        client.Shutdown(SocketShutdown.Send);
        using var linger = new CancellationTokenSource(TimeSpan.FromSeconds(2));
        for (int dropped = 0, read = 1; read > 0 && dropped < 65536; dropped += read)
            read = await client.ReceiveAsync(output, SocketFlags.None, linger.Token);
    }

    /// <summary>The "Date:" header line, made once a second (RFC 9110 asks for it).</summary>
    private ReadOnlySpan<byte> DateHeader()
    {
        long second = Environment.TickCount64 / 1000;
        DateLine current = date;
        if (current.Second != second)
        {
            current = new DateLine(second, Encoding.ASCII.GetBytes($"Date: {DateTime.UtcNow.ToString("r", CultureInfo.InvariantCulture)}\r\n"));
            date = current;
        }
        return current.Bytes;
    }

    private sealed record DateLine(long Second, byte[] Bytes);

    private enum Method { Get, Head, Post, Other }

    /// <summary>What this server needs to know of a request head.</summary>
    private record struct Request(int Error, Method Method, bool Http10, bool KeepAlive, bool ExpectContinue, long ContentLength);

    /// <summary>
    /// The length of the request head at the start of <paramref name="data"/>, through the blank
    /// line that ends it, or -1 if the head has not all arrived. Lines end in "\r\n" or "\n".
    /// </summary>
    private static int HeadLength(ReadOnlySpan<byte> data)
    {
        int at = 0;
        while (true)
        {
            int lineEnd = data[at..].IndexOf((byte)'\n');
            if (lineEnd < 0) return -1;
            at += lineEnd + 1;
            if (data[at..].StartsWith("\n"u8)) return at + 1;
            if (data[at..].StartsWith("\r\n"u8)) return at + 2;
        }
    }

    /// <summary>Reads a complete request head (RFC 9112); a malformed one gives Error 400.</summary>
    private static Request Parse(ReadOnlySpan<byte> head)
    {
        var bad = new Request(400, Method.Other, false, false, false, 0);
        if (head.Contains((byte)0)) return bad;
        if (head.StartsWith("\r\n"u8)) head = head[2..];       // one empty line before a request is allowed
        else if (head.StartsWith("\n"u8)) head = head[1..];

        // The request line: METHOD SP TARGET SP HTTP/1.1
        ReadOnlySpan<byte> line = NextLine(ref head);
        if (line.Contains((byte)'\r')) return bad;
        int space = line.IndexOf((byte)' '), lastSpace = line.LastIndexOf((byte)' ');
        if (space <= 0 || lastSpace <= space + 1) return bad;
        ReadOnlySpan<byte> method = line[..space], target = line[(space + 1)..lastSpace], version = line[(lastSpace + 1)..];
        if (method.IndexOfAnyExcept(TokenBytes) >= 0 || target.IndexOfAnyInRange((byte)0, (byte)' ') >= 0 || target.Contains((byte)0x7F))
            return bad;
        bool http10 = version.SequenceEqual("HTTP/1.0"u8);
        if (!http10 && !version.SequenceEqual("HTTP/1.1"u8))
        {
            bool otherVersion = version.Length == 8 && version.StartsWith("HTTP/"u8) && char.IsAsciiDigit((char)version[5])
                && version[6] == '.' && char.IsAsciiDigit((char)version[7]);
            return bad with { Error = otherVersion ? 505 : 400 };
        }
        var request = new Request(0,
            method.SequenceEqual("GET"u8) ? Method.Get : method.SequenceEqual("HEAD"u8) ? Method.Head
                : method.SequenceEqual("POST"u8) ? Method.Post : Method.Other,
            http10, false, false, 0);

        // Header lines, "Name: value", up to the blank line.
        bool close = false, keepAlive = false, host = false, length = false;
        while (NextLine(ref head) is { IsEmpty: false } header)
        {
            int colon = header.IndexOf((byte)':');
            if (colon <= 0 || header[..colon].IndexOfAnyExcept(TokenBytes) >= 0 || header.Contains((byte)'\r'))
                return bad; // also a folded line, and a CR that does not end the line
            ReadOnlySpan<byte> name = header[..colon], value = header[(colon + 1)..].Trim(" \t"u8);
            if (Ascii.EqualsIgnoreCase(name, "Content-Length"u8))
            {
                if (!long.TryParse(value, NumberStyles.None, CultureInfo.InvariantCulture, out long n)
                    || (length && n != request.ContentLength)) return bad;
                request.ContentLength = n;
                length = true;
            }
            else if (Ascii.EqualsIgnoreCase(name, "Transfer-Encoding"u8))
            {
                return bad with { Error = 501 };
            }
            else if (Ascii.EqualsIgnoreCase(name, "Host"u8))
            {
                if (host) return bad;
                host = true;
            }
            else if (Ascii.EqualsIgnoreCase(name, "Connection"u8))
            {
                foreach (Range option in value.Split((byte)','))
                {
                    close |= Ascii.EqualsIgnoreCase(value[option].Trim(" \t"u8), "close"u8);
                    keepAlive |= Ascii.EqualsIgnoreCase(value[option].Trim(" \t"u8), "keep-alive"u8);
                }
            }
            else if (Ascii.EqualsIgnoreCase(name, "Expect"u8))
            {
                request.ExpectContinue = !http10 && Ascii.EqualsIgnoreCase(value, "100-continue"u8);
            }
        }
        if (!http10 && !host) return bad; // RFC 9112 3.2: an HTTP/1.1 request must name its host
        request.KeepAlive = !close && (!http10 || keepAlive);
        return request;
    }

    /// <summary>Takes the next line off a head and returns it without its "\r\n" or "\n".</summary>
    private static ReadOnlySpan<byte> NextLine(ref ReadOnlySpan<byte> head)
    {
        int end = head.IndexOf((byte)'\n');
        ReadOnlySpan<byte> line = head[..end];
        head = head[(end + 1)..];
        return line.EndsWith("\r"u8) ? line[..^1] : line;
    }
}
