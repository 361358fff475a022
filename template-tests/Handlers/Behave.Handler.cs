// The behaviour project's Handler.cs (TemplateFixture.BehaviourProjectAsync copies it over the
// generated one, as a user would change the file): the greeting handler, made to misbehave on
// demand through the environment the tests start the server with.
namespace Behave;

using System;
using System.Globalization;
using System.IO;
using System.Net;
using System.Text;
using System.Threading;
using System.Threading.Tasks;

public sealed class Handler
{
    private readonly byte[] reply;
    private readonly TimeSpan delay;     // SLOW_MS: wait this long before answering...
    private readonly int slowPort;       // ...SLOW_PORT: only the client connecting from this port
    private readonly string? hang;       // HANG_FILE: the connection that renames it blocks its thread for ever
    private readonly string? blockPool;  // BLOCK_POOL_FILE: the connection that renames it, after its first await, blocks every thread of the pool
    private readonly byte[]? large;      // REPLY_BYTES: this many bytes (0, 1, ... 250, 0, ...) instead of the greeting
    private readonly int garbage;        // GARBAGE_BYTES: allocated (and dropped) for each connection, as a handler that reads a request does

    public Handler(Settings settings, int workerIndex)
    {
        reply = Encoding.UTF8.GetBytes(settings.GreetingFor(workerIndex) + "\n");
        if (Environment.GetEnvironmentVariable("FAIL_START") is not null) throw new InvalidOperationException("FAIL_START is set");
        // A value of the configuration that a worker refuses, where the master cannot tell (a HUP's --config file).
        if (settings.Greeting.Contains("FAIL_START", StringComparison.Ordinal)) throw new InvalidOperationException("the greeting says FAIL_START");
        delay = TimeSpan.FromMilliseconds(int.Parse(Environment.GetEnvironmentVariable("SLOW_MS") ?? "0", CultureInfo.InvariantCulture));
        slowPort = int.Parse(Environment.GetEnvironmentVariable("SLOW_PORT") ?? "0", CultureInfo.InvariantCulture);
        hang = Environment.GetEnvironmentVariable("HANG_FILE");
        blockPool = Environment.GetEnvironmentVariable("BLOCK_POOL_FILE");
        garbage = int.Parse(Environment.GetEnvironmentVariable("GARBAGE_BYTES") ?? "0", CultureInfo.InvariantCulture);
        if (Environment.GetEnvironmentVariable("REPLY_BYTES") is string bytes)
        {
            large = new byte[int.Parse(bytes, CultureInfo.InvariantCulture)];
            for (int i = 0; i < large.Length; i++) large[i] = (byte)(i % 251);
        }
    }

    public async ValueTask HandleAsync(Connection client, CancellationToken deadline)
    {
        if (delay > TimeSpan.Zero && (slowPort == 0 || ((IPEndPoint)client.Socket.RemoteEndPoint!).Port == slowPort))
            await Task.Delay(delay, deadline);
        if (garbage > 0) GC.KeepAlive(new byte[garbage]);
        if (hang is not null && File.Exists(hang))
        {
            try
            {
                File.Move(hang, hang + ".taken");
                Thread.Sleep(Timeout.Infinite); // a handler that blocks: the worker falls silent
            }
            catch (IOException) { } // another connection took it first
        }
        if (blockPool is not null && File.Exists(blockPool))
        {
            try
            {
                File.Move(blockPool, blockPool + ".taken");
                await Task.Yield(); // from here on the thread pool's
                // Work that blocks, queued faster than .NET adds threads: the pool runs nothing else.
                for (int i = 0; i < 256; i++) ThreadPool.QueueUserWorkItem(_ => Thread.Sleep(Timeout.Infinite));
                Thread.Sleep(Timeout.Infinite);
            }
            catch (IOException) { } // another connection took it first
        }
        await client.SendAsync(large ?? reply, deadline);
    }
}
