namespace MyServer;

using System;
using System.Diagnostics;
using System.Threading;
using System.Threading.Tasks;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Connections;
using Microsoft.AspNetCore.Connections.Features;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

/// <summary>
/// Serves the connections a worker accepts (Worker.cs) with ASP.NET Core: Kestrel on those
/// connections (AcceptedConnections.cs), with the middleware and endpoints of Handler.cs, and
/// the server's options as Kestrel's limits. The worker starts it before it says it is ready,
/// hands it each accepted descriptor, and stops it in two steps: when it stops accepting, and
/// after it has released the listening socket.
/// </summary>
internal sealed class HandlerHost
{
    /// <summary>How long after it was accepted a connection may take to begin its first request before a stop.</summary>
    private static readonly TimeSpan FirstRequestGrace = TimeSpan.FromSeconds(1);

    /// <summary>
    /// The longest a stopping worker keeps a kept-alive connection open for its client's next
    /// request; less if --idle-timeout or half of --shutdown-timeout is less.
    /// </summary>
    private static readonly TimeSpan DrainLimit = TimeSpan.FromSeconds(5);

    private readonly WebApplication app;
    private readonly AcceptedConnections connections;
    private readonly TimeSpan idleTimeout;
    private volatile bool draining;

    /// <param name="closed">Called when a connection handed over with <see cref="Serve"/> is closed.</param>
    /// <param name="stopping">Called if the application stops on its own (IHostApplicationLifetime.StopApplication).</param>
    public HandlerHost(Settings settings, int workerIndex, int listenFd, Action closed, Action stopping)
    {
        connections = new AcceptedConnections(listenFd, closed);
        idleTimeout = settings.IdleTimeout;
        WebApplicationBuilder builder = WebApplication.CreateSlimBuilder();

        // One line each in the server's log, from Warning up (Log.cs); the configuration
        // (e.g. Logging__LogLevel__Default=Information in the environment) may ask for more.
        builder.Logging.ClearProviders();
        builder.Logging.AddProvider(new Log.Provider());
        builder.Logging.SetMinimumLevel(LogLevel.Warning);

        // The worker handles the signals and stops the application itself, once it has
        // served the queue of the listening socket: the host's own handlers would stop it at once.
        builder.Services.AddSingleton<IHostLifetime, WorkerLifetime>();
        builder.Services.AddSingleton<IConnectionListenerFactory>(connections);
        builder.WebHost.ConfigureKestrel(kestrel =>
        {
            // --protocols, and TLS with --certificate (Https.cs).
            kestrel.Listen(connections.EndPoint, listen => Https.Configure(listen, settings));
            kestrel.AddServerHeader = false;
            // --max-connections is the worker's: it stops accepting when full (Worker.cs).
            kestrel.Limits.MaxConcurrentConnections = null;
            kestrel.Limits.KeepAliveTimeout = settings.IdleTimeout;
            kestrel.Limits.RequestHeadersTimeout = settings.WriteTimeout;
            // A client slower than 240 bytes/s (Kestrel's default) for --write-timeout is dropped.
            kestrel.Limits.MinRequestBodyDataRate = new MinDataRate(240, settings.WriteTimeout);
            kestrel.Limits.MinResponseDataRate = new MinDataRate(240, settings.WriteTimeout);
        });
        Handler.AddServices(builder);

        app = builder.Build();
        app.Lifetime.ApplicationStopping.Register(stopping);
        app.Use((context, next) =>
        {
            connections.RequestStarted(context);
            return draining ? LastOnItsConnection(context, next) : next(context);
        });
        Handler.Map(app, settings, workerIndex);
    }

    public void Start() => app.StartAsync().GetAwaiter().GetResult();

    /// <summary>Serves an accepted connection.</summary>
    public void Serve(int fd) => connections.Add(fd);

    /// <summary>
    /// The worker accepts no more: from now on every request that begins is answered with
    /// Connection: close, and its connection closed after the answer, so a client that sends its
    /// next request on a kept-alive connection gets an answer instead of a closed connection.
    /// </summary>
    public void BeginStop() => draining = true;

    /// <summary>The worker is full while it serves the listening socket's queue: Kestrel's idle connections stay until <see cref="Finish"/>.</summary>
    public void MakeRoom() { }

    /// <summary>
    /// After the worker has released the listening socket, stops serving within
    /// <paramref name="timeout"/>. First the drain that <see cref="BeginStop"/> began goes on
    /// until no connection is left, or for the shortest of <see cref="DrainLimit"/>,
    /// --idle-timeout and half of <paramref name="timeout"/>. Then Kestrel's graceful stop:
    /// requests in flight finish (their answers say Connection: close), connections still idle
    /// are closed; after the timeout, what is left is cut.
    /// </summary>
    /// <param name="open">How many of the connections handed over are still open (the worker counts them).</param>
    public void Finish(TimeSpan timeout, Func<int> open)
    {
        var clock = Stopwatch.StartNew();
        // Closing an idle kept-alive connection loses a request that its client may be sending
        // at that moment (HTTP/1.1 has no way to say "no more" but in an answer): only a
        // connection that stays idle through the whole drain is closed without one.
        TimeSpan drain = Min(Min(DrainLimit, idleTimeout), timeout / 2);
        while (open() > 0 && clock.Elapsed < drain) Thread.Sleep(10);
        // The connections served from the queue last were handed over just before: let their
        // requests begin (Kestrel's stop would close them unanswered), for up to a second
        // after each was accepted.
        while (connections.AwaitingFirstRequest(FirstRequestGrace)) Thread.Sleep(5);
        using var limit = new CancellationTokenSource(Max(timeout - clock.Elapsed, TimeSpan.Zero));
        app.StopAsync(limit.Token).GetAwaiter().GetResult();
        app.DisposeAsync().AsTask().GetAwaiter().GetResult();
    }

    /// <summary>
    /// A request that begins while the worker drains: its answer says Connection: close, and
    /// Kestrel closes the connection after it, so the client knows to go elsewhere for its next
    /// one. If the endpoint fails, Kestrel answers 500 with headers of its own: asking Kestrel
    /// to close the connection makes that answer say Connection: close too.
    /// </summary>
    private static async Task LastOnItsConnection(HttpContext context, RequestDelegate next)
    {
        context.Response.Headers.Connection = "close";
        // HTTP/2 has no Connection header (Kestrel leaves it out): asking Kestrel to close sends
        // GOAWAY, the streams in flight finish, and the client opens its next ones elsewhere.
        if (HttpProtocol.IsHttp2(context.Request.Protocol))
            context.Features.Get<IConnectionLifetimeNotificationFeature>()?.RequestClose();
        try
        {
            await next(context);
        }
        catch when (!context.Response.HasStarted)
        {
            context.Features.Get<IConnectionLifetimeNotificationFeature>()?.RequestClose();
            throw;
        }
    }

    private static TimeSpan Min(TimeSpan a, TimeSpan b) => a < b ? a : b;
    private static TimeSpan Max(TimeSpan a, TimeSpan b) => a > b ? a : b;

    private sealed class WorkerLifetime : IHostLifetime
    {
        public Task WaitForStartAsync(CancellationToken cancellationToken) => Task.CompletedTask;
        public Task StopAsync(CancellationToken cancellationToken) => Task.CompletedTask;
    }
}
