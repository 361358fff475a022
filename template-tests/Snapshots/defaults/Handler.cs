namespace MyServer;

using System.Text;
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
    // This one sends the greeting (--greeting, or Settings.DefaultGreeting) and a newline, then
    // the worker closes the connection.

    private readonly byte[] reply;

    /// <summary>Runs once per worker, before it accepts: do per-worker set-up here.</summary>
    public Handler(Settings settings, int workerIndex)
    {
        reply = Encoding.UTF8.GetBytes(settings.GreetingFor(workerIndex) + "\n");
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
        await client.SendAsync(reply, deadline);
    }
}
