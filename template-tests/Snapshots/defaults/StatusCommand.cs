namespace MyServer;

using System;
using System.Net.Http;
using System.Threading.Tasks;

/// <summary>
/// `PROGRAM status [options]`: asks the running master, at its --metrics address (from the same
/// options, environment and --config file as the server), for its pool and prints the answer:
/// one line for the pool, one row per worker.
/// </summary>
internal static class StatusCommand
{
    public static int Run(Settings settings, string program, Action<string> print, Action<string> fail)
    {
        if (settings.Metrics is null)
        {
            fail($"{program} status: no --metrics address (give the server's --metrics, PREFORK_METRICS or its --config)\n");
            return ExitCodes.NoServer;
        }
        string url = $"http://{settings.Metrics}/status";
        try
        {
            // Straight to the address: an http_proxy of the environment is not for it.
            using var client = new HttpClient(new SocketsHttpHandler { UseProxy = false }) { Timeout = TimeSpan.FromSeconds(10) };
            using HttpResponseMessage response = client.GetAsync(url).GetAwaiter().GetResult();
            string body = response.Content.ReadAsStringAsync().GetAwaiter().GetResult();
            if (!response.IsSuccessStatusCode || !body.StartsWith("pool ", StringComparison.Ordinal))
            {
                fail($"{program} status: {url} answered {(int)response.StatusCode}, not a pool's status: is it this server's --metrics address?\n");
                return ExitCodes.NoServer;
            }
            print(body);
            return ExitCodes.Ok;
        }
        catch (Exception e) when (e is HttpRequestException or TaskCanceledException)
        {
            fail($"{program} status: no server answers at {url}: {e.Message}\n");
            return ExitCodes.NoServer;
        }
    }
}
