// The fault project's Handler.cs (WorkerFaultTests copies it over a generated default project, as
// a user would change the file): the greeting handler, plus what a user's handler may do that
// the worker must survive, chosen through the environment the tests start the server with.
namespace Fault;

using System;
using System.Diagnostics;
using System.Text;
using System.Threading;
using System.Threading.Tasks;

public sealed class Handler
{
    private readonly byte[] reply;
    private readonly string mode; // FAULT_MODE: greeting (unset), child, race or hold

    public Handler(Settings settings, int workerIndex)
    {
        reply = Encoding.UTF8.GetBytes(settings.GreetingFor(workerIndex) + "\n");
        mode = Environment.GetEnvironmentVariable("FAULT_MODE") ?? "greeting";
        // Per-worker set-up that writes to the console: the line must reach the log, never the
        // master's pipe (where "retire" would be a message).
        Console.WriteLine($"constructor of worker {workerIndex} says hello");
        Console.WriteLine("retire");
        // START_DELAY_MS: per-worker set-up that takes this long (a worker still starting).
        Thread.Sleep(int.Parse(Environment.GetEnvironmentVariable("START_DELAY_MS") ?? "0", System.Globalization.CultureInfo.InvariantCulture));
    }

    public async ValueTask HandleAsync(Connection client, CancellationToken deadline)
    {
        switch (mode)
        {
            case "child":
                // A child process that outlives the server: it must hold neither the port nor a pipe.
                using (var child = Process.Start(new ProcessStartInfo("sleep", "300") { UseShellExecute = false })!)
                    await client.SendAsync(Encoding.ASCII.GetBytes($"child {child.Id}\n"), deadline);
                break;
            case "race":
                // The first receive and the first send at once, on two threads: each may make the Socket.
                using (var stop = CancellationTokenSource.CreateLinkedTokenSource(deadline))
                {
                    var buffer = new byte[16];
                    Task<int> receive = Task.Run(() => client.ReceiveAsync(buffer, stop.Token).AsTask());
                    await Task.Run(() => client.SendAsync(reply, deadline).AsTask());
                    stop.Cancel();
                    try { await receive; } catch (OperationCanceledException) { }
                }
                break;
            case "hold":
                // Says who holds the connection at once, then waits for a byte from the client.
                await client.SendAsync(reply, deadline);
                await client.ReceiveAsync(new byte[1], deadline);
                break;
            default:
                await client.SendAsync(reply, deadline);
                break;
        }
    }
}
