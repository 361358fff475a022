using Mono.Unix.Native;
using PreforkTemplates.Tests.Infrastructure;
using Xunit;
using Xunit.Abstractions;

namespace PreforkTemplates.Tests;

/// <summary>A project generated with --aot publishes as a NativeAOT binary whose workers serve and relay signals.</summary>
[Collection("template")]
public sealed class AotTests(TemplateFixture fixture, ITestOutputHelper output)
{
    private ServerProcess Start(string binary) =>
        ServerProcess.StartCommand([binary, "--host", "127.0.0.1", "--port", "0"]).WaitUntilReady();

    [Fact]
    public async Task Native_workers_serve_round_robin()
    {
        string binary = await fixture.PublishedAotAsync();
        Assert.True(File.Exists(Path.Combine(Path.GetDirectoryName(binary)!, "libMonoPosixHelper.so")), "libMonoPosixHelper.so is not published beside the binary");
        Assert.False(File.Exists(binary + ".dll"), "the publish output has a managed .dll: not NativeAOT");

        using var server = Start(binary);
        IReadOnlyList<int> workers = server.Children();
        Assert.Equal(5, workers.Count);
        Assert.All(workers, w => Assert.Equal(binary, new FileInfo($"/proc/{w}/exe").LinkTarget));

        IReadOnlySet<int> pids = Client.PidsUntil(server.Port, workers.Count);
        output.WriteLine($"pids: {string.Join(" ", pids)}");
        Assert.Equal(workers.Order(), pids.Order());
    }

    [Theory]
    [InlineData(Signum.SIGTERM)]
    [InlineData(Signum.SIGQUIT)]
    [InlineData(Signum.SIGINT)]
    public async Task Native_master_relays_signals_to_its_workers(Signum signal)
    {
        using var server = Start(await fixture.PublishedAotAsync());
        IReadOnlyList<int> workers = server.Children();
        server.Signal(signal);
        Assert.Equal(0, server.WaitForExit(TimeSpan.FromSeconds(10)));
        Assert.All(workers, w => Assert.False(Proc.IsAlive(w)));
        // INT reaches every worker; a graceful stop reaches all but the one that holds the socket
        // last, which the master tells on its pipe once the others have released it.
        int last = signal == Signum.SIGINT ? 0 : 1;
        Assert.Equal(workers.Count - last, server.Log.Count(l => l.Contains($"{signal}: ", StringComparison.Ordinal) && l.StartsWith("[worker", StringComparison.Ordinal)));
        Assert.Equal(last, server.Log.Count(l => l.Contains("asked to stop as the last holder", StringComparison.Ordinal) && l.StartsWith("[worker", StringComparison.Ordinal)));
    }
}
