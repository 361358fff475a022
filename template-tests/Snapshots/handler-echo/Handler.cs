namespace MyServer;

using System;
using System.Buffers;
using System.Net.Sockets;
using System.Threading;
using System.Threading.Tasks;

/// <summary>
/// What the server does with a connection: THIS IS THE FILE TO EDIT.
/// This one is a line echo server: every line a client sends (its bytes up to and including
/// "\n") comes back as it was sent, until the client closes the connection.
/// Each worker process makes one Handler when it starts, then calls
/// <see cref="HandleAsync"/> for every connection it accepts, up to --max-connections
/// at once. The worker closes the connection afterwards.
/// HandleAsync starts on the worker's accepting thread and continues on the thread pool
/// after its first await that has to wait: await slow work (Task.Delay, ReceiveAsync,
/// database calls), never block on it (Thread.Sleep, .Result), or the worker stops accepting.
/// </summary>
public sealed class Handler
{
    /// <summary>
    /// The greeting when neither --greeting nor PREFORK_GREETING says otherwise. The echo
    /// server sends no greeting; Settings.cs reads this as the default of --greeting.
    /// </summary>
    public const string DefaultGreeting = "Hello from {pid}";

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

    /// <summary>
    /// Serves one client until it closes the connection. Waiting for a line with nothing in
    /// hand, the connection is idle: <see cref="Deadlines.Idle"/> closes it after
    /// --idle-timeout, or at once when the worker stops. A line that has begun must arrive,
    /// and be echoed, within --write-timeout (<see cref="Deadlines.Write"/>; the
    /// <paramref name="timeout"/> of the accept is not needed). An exception here ends this
    /// connection only (it is logged), never the worker.
    /// </summary>
    public async ValueTask HandleAsync(Socket client, CancellationToken timeout)
    {
        client.NoDelay = true; // a line goes back at once, even before the last one is acknowledged
        byte[] buffer = ArrayPool<byte>.Shared.Rent(MaxLine);
        try
        {
            int held = 0; // buffer[0..held): the start of a line still missing its "\n"
            CancellationToken deadline = timeout;
            while (true)
            {
                int read = await client.ReceiveAsync(buffer.AsMemory(held, MaxLine - held), SocketFlags.None,
                    held == 0 ? Deadlines.Idle() : deadline);
                if (read == 0) return; // the client closed; an unfinished last line is dropped
                if (held == 0) deadline = Deadlines.Write();
                held += read;

                // Send back every complete line received so far, in one write.
                int lines = buffer.AsSpan(0, held).LastIndexOf((byte)'\n') + 1;
                if (lines > 0)
                {
                    await client.SendAsync(buffer.AsMemory(0, lines), SocketFlags.None, deadline);
                    buffer.AsSpan(lines, held - lines).CopyTo(buffer);
                    held -= lines;
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
    }
}
