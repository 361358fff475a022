namespace MyServer;

using System;
using System.Buffers;
using System.Threading;
using System.Threading.Tasks;

/// <summary>
/// What the server does with a connection: THIS IS THE FILE TO EDIT.
/// Each worker makes one Handler, then calls <see cref="HandleAsync"/> for every connection it
/// accepts, and closes the connection when it returns (Connection.cs, HandlerHost.cs).
/// Await slow work (Task.Delay, ReceiveAsync, a database), never block on it (Thread.Sleep,
/// .Result): a worker whose threads are all blocked is killed. An exception ends only its connection.
/// </summary>
public sealed class Handler
{
    // This one is a line echo server: every line a client sends (its bytes up to and including
    // "\n") comes back as it was sent, until the client closes the connection.

    /// <summary>
    /// The longest line echoed, "\n" included. A client that sends this many bytes without a
    /// "\n" is disconnected and that unfinished line is not echoed, so a worker never holds
    /// more than this for one client, whatever it sends.
    /// </summary>
    private const int MaxLine = 8192;

    /// <summary>Runs once per worker, before it accepts: do per-worker set-up here.</summary>
    public Handler(Settings settings, int workerIndex)
    {
    }

    /// <summary>Serves one client, up to --max-connections at once on each worker.</summary>
    /// <param name="client">The connection: send, receive, and the .NET Socket when asked for.</param>
    /// <param name="deadline">
    /// Cancelled --write-timeout after the connection was accepted, and never by a stopping
    /// worker (the kernel completed the connection, so its client is owed an answer): pass it
    /// to the reads and writes of the client's first request and its answer. For later steps
    /// of a connection kept open, take a deadline from Deadlines.cs.
    /// </param>
    public async ValueTask HandleAsync(Connection client, CancellationToken deadline)
    {
        client.Socket.NoDelay = true; // a line goes back at once, even before the last one is acknowledged
        byte[] buffer = ArrayPool<byte>.Shared.Rent(MaxLine);
        try
        {
            int held = 0; // buffer[0..held): the start of a line still missing its "\n"
            bool answered = false; // the first line is the client's request, and waits with deadline
            CancellationToken lineDeadline = deadline;
            while (true)
            {
                // Between lines the client owes nothing: wait idle (a stopping worker closes the connection).
                bool idle = held == 0 && answered;
                int read = await client.ReceiveAsync(buffer.AsMemory(held, MaxLine - held), idle ? Deadlines.Idle() : lineDeadline);
                if (read == 0) return; // the client closed; an unfinished last line is dropped
                if (idle) lineDeadline = Deadlines.Write();
                held += read;

                // Send back every complete line received so far, in one write.
                int lines = buffer.AsSpan(0, held).LastIndexOf((byte)'\n') + 1;
                if (lines > 0)
                {
                    await client.SendAsync(buffer.AsMemory(0, lines), lineDeadline);
                    buffer.AsSpan(lines, held - lines).CopyTo(buffer);
                    held -= lines;
                    answered = true;
                    lineDeadline = Deadlines.Write(); // for the line begun after them, if any
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
    }
}
