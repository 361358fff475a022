namespace MyServer;

using System.Text;
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
/// to the reads and writes of the client's first request and its answer. A handler that keeps
/// the connection open takes a deadline from Deadlines.cs for each later step:
/// <see cref="Deadlines.Idle"/> while it waits for the client with nothing in hand (closed
/// after --idle-timeout, or at once when the worker stops), <see cref="Deadlines.Write"/> once
/// a request or line has begun to arrive, until its answer has left.
/// </summary>
public sealed class Handler
{
    // This one sends the greeting (--greeting, or Settings.DefaultGreeting) and a newline, then
    // the worker closes the connection.

    private readonly byte[] reply;

    /// <summary>Runs once per worker, before it accepts: do per-worker set-up here.</summary>
    public Handler(Settings settings, int workerIndex)
    {
        reply = Encoding.UTF8.GetBytes(settings.GreetingFor(workerIndex) + "\n");
    }

    /// <summary>Serves one client (the class comment says how; <paramref name="timeout"/> is the first answer's deadline).</summary>
    public async ValueTask HandleAsync(Connection client, CancellationToken timeout)
    {
        await client.SendAsync(reply, timeout);
    }
}
