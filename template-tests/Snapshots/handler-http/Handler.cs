namespace MyServer;

using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;

/// <summary>
/// What the server answers: THIS IS THE FILE TO EDIT.
/// Every worker process runs one ASP.NET Core application (HandlerHost.cs) on the connections
/// it accepts; this is its Program.cs: the services, the middleware and the endpoints of a
/// minimal API. Each worker runs these once, when it starts, before it accepts.
/// Requests run on the worker's thread pool: await slow work (Task.Delay, database calls),
/// do not block on it (Thread.Sleep, .Result). A worker whose thread pool has run nothing for
/// --worker-timeout (its threads all blocked) stops sending heartbeats, and the master
/// replaces it.
/// </summary>
public static class Handler
{
    /// <summary>Services for dependency injection, e.g. builder.Services.AddSingleton&lt;MyService&gt;().</summary>
    public static void AddServices(WebApplicationBuilder builder)
    {
    }

    /// <summary>Middleware and endpoints.</summary>
    public static void Map(WebApplication app, Settings settings, int workerIndex)
    {
        // Middleware runs for every request, in the order added, before its endpoint, e.g.
        //   app.Use(async (context, next) => { context.Response.Headers["X-Worker"] = $"{workerIndex}"; await next(context); });

        // GET / answers the greeting (--greeting, or Settings.DefaultGreeting) and a newline,
        // as text/plain.
        string greeting = settings.GreetingFor(workerIndex) + "\n";
        app.MapGet("/", () => Results.Text(greeting));

        // Another endpoint, e.g.
        //   app.MapGet("/hello/{name}", (string name) => $"Hello, {name}\n");
    }
}
