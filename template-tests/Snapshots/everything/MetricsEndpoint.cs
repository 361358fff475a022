namespace My.Server_2;

using System;
using System.Net;
using System.Text;
using System.Threading.Tasks;

/// <summary>
/// The master's HTTP endpoint at --metrics, on the base library's HttpListener (no ASP.NET Core
/// in the master: it would add a quarter of a second to its start and 35 MB to its memory). It
/// parses nothing itself: each GET becomes a question to the master's loop, which answers it
/// between two events (Master.Metrics.cs), so /healthz is answered only while that loop runs.
/// </summary>
internal sealed class MetricsEndpoint : IDisposable
{
    /// <summary>A GET: its path, and whether the scraper asked for OpenMetrics.</summary>
    public sealed record Question(string Path, bool OpenMetrics);

    public sealed record Answer(int Status, string ContentType, string Body);

    /// <summary>A loop that has not answered in this time is stuck: the answer is 503.</summary>
    private static readonly TimeSpan AnswerTimeout = TimeSpan.FromSeconds(5);

    private readonly HttpListener listener;
    private readonly Func<Question, Task<Answer>> ask;

    /// <summary>Listens on <paramref name="address"/> (IPv4); throws HttpListenerException if it cannot (the port is in use).</summary>
    public MetricsEndpoint(IPEndPoint address, Func<Question, Task<Answer>> ask)
    {
        this.ask = ask;
        // "+": every address, whatever Host header the client sends (a Kubernetes probe sends the pod's IP).
        string host = address.Address.Equals(IPAddress.Any) ? "+" : address.Address.ToString();
        listener = Listen($"http://{host}:{address.Port}/");
        _ = ServeAsync();
    }

    /// <summary>
    /// HttpListener.Start, again if a client connected at the moment it began to listen: .NET's
    /// HttpListener accepts a connection already waiting before it has made its own tables, and
    /// throws ArgumentNullException. Its listening socket is then left to the garbage collector,
    /// which must close it before the port can be bound again.
    /// </summary>
    private static HttpListener Listen(string prefix)
    {
        for (int attempt = 1; ; attempt++)
        {
            var listener = new HttpListener();
            listener.Prefixes.Add(prefix);
            try
            {
                listener.Start();
                return listener;
            }
            catch (ArgumentNullException) when (attempt < 10)
            {
                listener.Close();
                GC.Collect();
                GC.WaitForPendingFinalizers();
            }
        }
    }

    private async Task ServeAsync()
    {
        while (true)
        {
            HttpListenerContext context;
            try
            {
                context = await listener.GetContextAsync();
            }
            catch (Exception e) when (e is HttpListenerException or ObjectDisposedException or InvalidOperationException)
            {
                return; // disposed: the master is exiting
            }
            _ = AnswerAsync(context);
        }
    }

    private async Task AnswerAsync(HttpListenerContext context)
    {
        HttpListenerResponse response = context.Response;
        try
        {
            Answer answer;
            if (context.Request.HttpMethod is not ("GET" or "HEAD"))
                answer = new Answer(405, "text/plain; charset=utf-8", "only GET\n");
            else
            {
                string accept = context.Request.Headers["Accept"] ?? "";
                var question = new Question(context.Request.Url?.AbsolutePath ?? "/", accept.Contains("application/openmetrics-text", StringComparison.Ordinal));
                Task<Answer> asked = ask(question);
                answer = await Task.WhenAny(asked, Task.Delay(AnswerTimeout)) == asked
                    ? await asked
                    : new Answer(503, "text/plain; charset=utf-8", "the master's loop has not answered\n");
            }
            byte[] body = Encoding.UTF8.GetBytes(answer.Body);
            response.StatusCode = answer.Status;
            response.ContentType = answer.ContentType;
            response.ContentLength64 = body.Length;
            if (context.Request.HttpMethod != "HEAD") await response.OutputStream.WriteAsync(body);
            response.Close();
        }
        catch (Exception e) when (e is HttpListenerException or ObjectDisposedException or System.IO.IOException or InvalidOperationException)
        {
            // The scraper went away, or the master is exiting: nothing to answer.
            response.Abort();
        }
    }

    public void Dispose() => listener.Close();
}
