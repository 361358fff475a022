namespace PreforkServer;

using System;
using System.IO;
using System.Net.Sockets;
using System.Threading;
using System.Threading.Tasks;

/// <summary>
/// Serves the connections a worker accepts (Worker.cs) with Handler.cs: each one as a
/// Connection (Connection.cs), with the deadlines of Deadlines.cs. The worker makes it before
/// it accepts, hands it each accepted descriptor, and stops it in two steps: when it stops
/// accepting, and after it has released the listening socket.
/// </summary>
internal sealed class HandlerHost
{
    /// <summary>How long after it was accepted a connection may take to begin its first request before a stop closes idle ones.</summary>
    private const long FirstRequestGraceMs = 1000;

    private readonly Handler handler;
    private readonly Action closed;
    private long lastAccept;                       // when the last connection was handed over (Environment.TickCount64)

    /// <param name="listenFd">The listening socket (only ASP.NET Core's host names it).</param>
    /// <param name="closed">Called once for every connection handed over with <see cref="Serve"/>, when it is closed.</param>
    /// <param name="stopping">For a handler that stops the worker on its own (only ASP.NET Core's host has one).</param>
    public HandlerHost(Settings settings, int workerIndex, int listenFd, Action closed, Action stopping)
    {
        this.closed = closed;
        Deadlines.Use(settings);
        handler = new Handler(settings, workerIndex);
    }

    /// <summary>Before the worker says it is ready: nothing to start, the handler was made with the host.</summary>
    public void Start() { }

    /// <summary>
    /// Serves an accepted connection. The handler starts here, on the accepting thread, and
    /// goes on on the thread pool at its first await that has to wait. A greeting is written at
    /// once, so most connections cost no thread switch at all.
    /// </summary>
    public void Serve(int fd)
    {
        Volatile.Write(ref lastAccept, Environment.TickCount64);
        _ = ServeAsync(fd);
    }

    /// <summary>The worker accepts no more: Deadlines.Stopping is true from now on.</summary>
    public void BeginStop() => Deadlines.Stop();

    /// <summary>
    /// The worker is full and the listening socket's queue is its to serve: connections that
    /// wait idle between requests give way to the clients waiting in the queue.
    /// </summary>
    public void MakeRoom() => Deadlines.CloseIdle();

    /// <summary>
    /// After the worker has released the listening socket: closes the connections that wait idle
    /// between requests, but not one that has just been accepted: the kernel completed it, so
    /// its client is owed an answer. The handler waits for a first request with HandleAsync's
    /// deadline, which a stop does not cancel; for a handler that waits with Deadlines.Idle()
    /// all the same, idle connections are closed only once the last one accepted had
    /// <see cref="FirstRequestGraceMs"/>. The worker then waits for the rest to finish.
    /// </summary>
    /// <param name="timeout">--shutdown-timeout: the worker waits for the rest within it.</param>
    /// <param name="open">How many of the connections handed over are still open (the worker counts them).</param>
    public void Finish(TimeSpan timeout, Func<int> open)
    {
        while (open() > 0 && Environment.TickCount64 - Volatile.Read(ref lastAccept) < FirstRequestGraceMs)
            Thread.Sleep(5);
        Deadlines.CloseIdle();
    }

    private async Task ServeAsync(int fd)
    {
        var client = new Connection(fd);
        try
        {
            await handler.HandleAsync(client, Deadlines.Write());
        }
        catch (Exception e) when (e is SocketException or OperationCanceledException or IOException)
        {
            // The client reset the connection or was slower than --write-timeout: drop it.
        }
        catch (Exception e)
        {
            Log.Info($"handler failed: {e}");
        }
        finally
        {
            client.Close();
            closed();
        }
    }
}
