// A user's change to Handler.cs for GeneratedTestsTests: the greeting goes out in capitals
// ("HELLO FROM 1234"), while Settings.DefaultGreeting, which the generated tests expect, stays.
namespace MyServer;

using System.Text;
using System.Threading;
using System.Threading.Tasks;

public sealed class Handler
{
    private readonly byte[] reply;

    public Handler(Settings settings, int workerIndex) =>
        reply = Encoding.UTF8.GetBytes(settings.GreetingFor(workerIndex).ToUpperInvariant() + "\n");

    public async ValueTask HandleAsync(Connection client, CancellationToken deadline) =>
        await client.SendAsync(reply, deadline);
}
