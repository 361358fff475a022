namespace PreforkServer;

#if (echoHandler)
using System;
using System.Buffers;
#endif
#if (!echoHandler)
using System.Text;
#endif
using System.Threading;
using System.Threading.Tasks;

/// <summary>
/// What the server does with a connection: THIS IS THE FILE TO EDIT.
/// Each worker process makes one Handler when it starts, then calls <see cref="HandleAsync"/>
/// for every connection it accepts (a Connection: sends, receives and, when asked for, the
/// Socket; Connection.cs), up to --max-connections at once, and closes the connection when it
/// returns. An exception in it ends that connection only (it is logged),
/// never the worker.
/// HandleAsync starts on the worker's accepting thread and goes on on the thread pool after
/// its first await that has to wait: await slow work (Task.Delay, ReceiveAsync, database
/// calls), never block on it (Thread.Sleep, .Result), or the worker stops accepting.
/// Its <c>timeout</c> is cancelled --write-timeout after the connection was accepted: pass it
/// to the reads and writes of the client's first request and its answer, the first read
/// included. The kernel completed the connection, so its client is owed an answer: a stopping
/// worker does not cancel <c>timeout</c>. A handler that keeps the connection open takes a
/// deadline from Deadlines.cs for each later step: <see cref="Deadlines.Idle"/> while it waits
/// for the client's next request with nothing in hand (closed after --idle-timeout, or when the
/// worker stops), <see cref="Deadlines.Write"/> once a request or line has begun to arrive,
/// until its answer has left.
/// What the handler writes to the console (Console.WriteLine) goes to the server's log, and a
/// child process it starts (Process.Start) inherits neither the listening socket nor the
/// worker's pipes to the master: the port is free once the server has stopped, whatever the
/// child does.
/// </summary>
public sealed class Handler
{
#if (echoHandler)
    // This one is a line echo server: every line a client sends (its bytes up to and including
    // "\n") comes back as it was sent, until the client closes the connection.

    /// <summary>
    /// The longest line echoed, "\n" included. A client that sends this many bytes without a
    /// "\n" is disconnected and that unfinished line is not echoed, so a worker never holds
    /// more than this for one client, whatever it sends.
    /// </summary>
    private const int MaxLine = 8192;
#else
    // This one sends the greeting (--greeting, or Settings.DefaultGreeting) and a newline, then
    // the worker closes the connection.

    private readonly byte[] reply;
#endif

    /// <summary>Runs once per worker, before it accepts: do per-worker set-up here.</summary>
    public Handler(Settings settings, int workerIndex)
    {
#if (!echoHandler)
        reply = Encoding.UTF8.GetBytes(settings.GreetingFor(workerIndex) + "\n");
#endif
    }

    /// <summary>Serves one client (the class comment says how; <paramref name="timeout"/> is the first answer's deadline).</summary>
    public async ValueTask HandleAsync(Connection client, CancellationToken timeout)
    {
#if (echoHandler)
        client.Socket.NoDelay = true; // a line goes back at once, even before the last one is acknowledged
        byte[] buffer = ArrayPool<byte>.Shared.Rent(MaxLine);
        try
        {
            int held = 0; // buffer[0..held): the start of a line still missing its "\n"
            bool answered = false; // the first line is the client's request, and waits with timeout
            CancellationToken deadline = timeout;
            while (true)
            {
                // Between lines the client owes nothing: wait idle (a stopping worker closes the connection).
                bool idle = held == 0 && answered;
                int read = await client.ReceiveAsync(buffer.AsMemory(held, MaxLine - held), idle ? Deadlines.Idle() : deadline);
                if (read == 0) return; // the client closed; an unfinished last line is dropped
                if (idle) deadline = Deadlines.Write();
                held += read;

                // Send back every complete line received so far, in one write.
                int lines = buffer.AsSpan(0, held).LastIndexOf((byte)'\n') + 1;
                if (lines > 0)
                {
                    await client.SendAsync(buffer.AsMemory(0, lines), deadline);
                    buffer.AsSpan(lines, held - lines).CopyTo(buffer);
                    held -= lines;
                    answered = true;
                    deadline = Deadlines.Write(); // for the line begun after them, if any
                }
                else if (held == MaxLine)
                {
                    return; // a line longer than MaxLine: the connection is closed
                }
            }
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buffer);
        }
#else
        await client.SendAsync(reply, timeout);
#endif
    }
}
