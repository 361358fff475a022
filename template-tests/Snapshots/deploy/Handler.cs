namespace MyServer;

using System;
using System.Globalization;
using System.Net.Sockets;
using System.Text;
using System.Threading;
using System.Threading.Tasks;

/// <summary>
/// What the server does with a connection: THIS IS THE FILE TO EDIT.
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
    /// The greeting when neither --greeting nor PREFORK_GREETING says otherwise.
    /// {pid} becomes the worker's process id, {worker} its index (0 to workers-1).
    /// </summary>
    public const string DefaultGreeting = "Hello from {pid}";

    private readonly byte[] reply;

    /// <summary>Runs once per worker, before it accepts: do per-worker set-up here.</summary>
    public Handler(Settings settings, int workerIndex)
    {
        string text = settings.Greeting
            .Replace("{pid}", Environment.ProcessId.ToString(CultureInfo.InvariantCulture), StringComparison.Ordinal)
            .Replace("{worker}", workerIndex.ToString(CultureInfo.InvariantCulture), StringComparison.Ordinal);
        reply = Encoding.UTF8.GetBytes(text + "\n");
    }

    /// <summary>
    /// Serves one client. <paramref name="timeout"/> is cancelled once the client has taken
    /// longer than --write-timeout; pass it to every read and write. An exception here ends
    /// this connection only (it is logged), never the worker.
    /// </summary>
    public async ValueTask HandleAsync(Socket client, CancellationToken timeout)
    {
        await client.SendAsync(reply, SocketFlags.None, timeout);
    }
}
