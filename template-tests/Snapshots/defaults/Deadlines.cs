namespace MyServer;

using System;
using System.Collections.Generic;
using System.Threading;

/// <summary>
/// The timeouts of a connection, as cancellation tokens to pass to its reads and writes.
/// The client's first request and its answer use the deadline HandleAsync is given (Handler.cs).
/// A connection kept open for more takes one from here for each later step: <see cref="Idle"/>
/// while it waits for the client's next request with nothing in hand (closed after
/// --idle-timeout, or when the worker stops), <see cref="Write"/> once a request or line has
/// begun to arrive, until its answer has left.
/// A token is shared by every caller within the same second (it fires up to one second
/// late), so a connection or a read costs no timer of its own. Any thread may call these.
/// </summary>
public static class Deadlines
{
    private sealed record Shared(long Second, CancellationTokenSource Source);

    private static readonly TimeSpan Late = TimeSpan.FromSeconds(1);
    private static TimeSpan writeTimeout, idleTimeout; // from the settings (Use), before the first connection
    private static volatile Shared? write, idle;
    private static readonly object gate = new();
    private static readonly List<CancellationTokenSource> idleSources = []; // not yet fired: Stop cancels them
    private static volatile bool stopping, idleClosed;

    /// <summary>
    /// True once the worker has been asked to stop (TERM, QUIT, a HUP or USR2 replacing it):
    /// answer the request in hand, say the connection closes, and close it.
    /// </summary>
    public static bool Stopping => stopping;

    /// <summary>Cancelled --write-timeout from now: for a reply, and for a request or line that has begun to arrive.</summary>
    public static CancellationToken Write()
    {
        long second = Environment.TickCount64 / 1000;
        Shared? current = write;
        if (current is null || current.Second != second)
        {
            // Two threads may both make one for this second: harmless, each token is right.
            current = new Shared(second, new CancellationTokenSource(writeTimeout + Late));
            write = current;
        }
        return current.Source.Token;
    }

    /// <summary>
    /// Cancelled --idle-timeout from now, or once the worker stops: for waiting for a client's
    /// next request or line, so an idle connection never holds a stopping worker. Not for the
    /// first request of a connection: the kernel completed it, so the client is owed an answer;
    /// that one waits with HandleAsync's deadline.
    /// </summary>
    public static CancellationToken Idle()
    {
        long second = Environment.TickCount64 / 1000;
        Shared? current = idle;
        if (current is null || current.Second != second) current = NewIdle(second);
        return current.Source.Token;
    }

    private static Shared NewIdle(long second)
    {
        lock (gate)
        {
            if (idle is { } fresh && fresh.Second == second) return fresh;
            idleSources.RemoveAll(s => s.IsCancellationRequested);
            var source = new CancellationTokenSource(idleTimeout + Late);
            if (idleClosed) source.Cancel();
            else idleSources.Add(source);
            return idle = new Shared(second, source);
        }
    }

    internal static void Use(Settings settings)
    {
        writeTimeout = settings.WriteTimeout;
        idleTimeout = settings.IdleTimeout;
    }

    /// <summary>The worker has been asked to stop: <see cref="Stopping"/> from now on.</summary>
    internal static void Stop() => stopping = true;

    /// <summary>
    /// Cancels every <see cref="Idle"/> token, and those made from now on: the connections that
    /// wait idle for a next request or line are closed. The worker calls it once it accepts no
    /// more, and no connection it accepted is still young enough to be waiting for its first
    /// request with an idle token (Worker.cs).
    /// </summary>
    internal static void CloseIdle()
    {
        CancellationTokenSource[] waiting;
        lock (gate)
        {
            stopping = true;
            idleClosed = true;
            waiting = [.. idleSources];
            idleSources.Clear();
        }
        foreach (CancellationTokenSource source in waiting) source.Cancel();
    }
}
