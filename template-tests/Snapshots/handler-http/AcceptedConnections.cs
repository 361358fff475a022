namespace MyServer;

using System;
using System.Collections.Concurrent;
using System.Collections.Generic;
using System.IO.Pipelines;
using System.Net;
using System.Net.Sockets;
using System.Threading;
using System.Threading.Channels;
using System.Threading.Tasks;
using Microsoft.AspNetCore.Connections;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.Features;
using Microsoft.AspNetCore.Server.Kestrel.Transport.Sockets;
using Microsoft.Extensions.Logging.Abstractions;

/// <summary>
/// Kestrel's transport in a worker: the connections that the worker's accepting thread took
/// from the listening socket (Worker.cs), handed to Kestrel as they come. Kestrel's own socket
/// transport would call listen() again on the inherited socket and wait for connections in
/// every worker at once, so each connection would wake them all and go to the quickest,
/// unevenly; here the worker takes a --max-connections slot, then blocks in accept(), and
/// Linux hands connections to the blocked workers in turn.
/// </summary>
internal sealed class AcceptedConnections : IConnectionListenerFactory, IConnectionListenerFactorySelector, IConnectionListener
{
    private readonly Channel<ConnectionContext> accepted =
        Channel.CreateUnbounded<ConnectionContext>(new UnboundedChannelOptions { SingleReader = true });
    private readonly SocketConnectionContextFactory sockets = new(new SocketConnectionFactoryOptions(), NullLogger.Instance);
    private readonly Action closed;
    private readonly ConcurrentDictionary<string, long> unstarted = new(); // connection id: when it was handed over

    /// <param name="listenFd">The listening socket, only to name it to Kestrel: Kestrel never uses it.</param>
    /// <param name="closed">Called once for every connection handed over, when it is closed.</param>
    public AcceptedConnections(int listenFd, Action closed)
    {
        EndPoint = new FileHandleEndPoint((ulong)listenFd, FileHandleType.Tcp);
        this.closed = closed;
    }

    public EndPoint EndPoint { get; }

    /// <summary>
    /// True while a connection handed to Kestrel less than <paramref name="grace"/> ago has not
    /// begun a request. Kestrel's graceful stop closes such a connection at once, unanswered,
    /// even if its request is on its way: a stopping worker waits for them first (HandlerHost.cs).
    /// </summary>
    public bool AwaitingFirstRequest(TimeSpan grace)
    {
        long now = Environment.TickCount64;
        foreach (long handedOver in unstarted.Values)
            if (now - handedOver < (long)grace.TotalMilliseconds) return true;
        return false;
    }

    /// <summary>Called by the first middleware for every request.</summary>
    public void RequestStarted(HttpContext context) => unstarted.TryRemove(context.Connection.Id, out _);

    /// <summary>Hands an accepted connection to Kestrel. Called by the accepting thread.</summary>
    public void Add(int fd)
    {
        ConnectionContext connection;
        var handle = new SafeSocketHandle(fd, ownsHandle: true);
        try
        {
            var socket = new Socket(handle) { NoDelay = true };
            connection = new Counted(sockets.Create(socket), this);
        }
        catch (SocketException)
        {
            handle.Dispose(); // the client is gone already; the handle closes the descriptor, once
            closed();
            return;
        }
        unstarted[connection.ConnectionId] = Environment.TickCount64;
        if (!accepted.Writer.TryWrite(connection))
            _ = connection.DisposeAsync(); // Kestrel has stopped taking connections
    }

    public bool CanBind(EndPoint endpoint) => endpoint == EndPoint;

    public ValueTask<IConnectionListener> BindAsync(EndPoint endpoint, CancellationToken cancellationToken = default) =>
        ValueTask.FromResult<IConnectionListener>(this);

    public async ValueTask<ConnectionContext?> AcceptAsync(CancellationToken cancellationToken = default)
    {
        while (await accepted.Reader.WaitToReadAsync(cancellationToken))
            if (accepted.Reader.TryRead(out ConnectionContext? connection)) return connection;
        return null; // unbound: Kestrel stops asking
    }

    public ValueTask UnbindAsync(CancellationToken cancellationToken = default)
    {
        accepted.Writer.TryComplete();
        return ValueTask.CompletedTask;
    }

    public async ValueTask DisposeAsync()
    {
        accepted.Writer.TryComplete();
        while (accepted.Reader.TryRead(out ConnectionContext? connection)) await connection.DisposeAsync();
        sockets.Dispose();
    }

    /// <summary>A connection that says when it is closed, so the worker frees its slot.</summary>
    private sealed class Counted(ConnectionContext inner, AcceptedConnections owner) : ConnectionContext
    {
        private int disposed;

        public override string ConnectionId { get => inner.ConnectionId; set => inner.ConnectionId = value; }
        public override IFeatureCollection Features => inner.Features;
        public override IDictionary<object, object?> Items { get => inner.Items; set => inner.Items = value; }
        public override IDuplexPipe Transport { get => inner.Transport; set => inner.Transport = value; }
        public override EndPoint? LocalEndPoint { get => inner.LocalEndPoint; set => inner.LocalEndPoint = value; }
        public override EndPoint? RemoteEndPoint { get => inner.RemoteEndPoint; set => inner.RemoteEndPoint = value; }
        public override CancellationToken ConnectionClosed { get => inner.ConnectionClosed; set => inner.ConnectionClosed = value; }
        public override void Abort(ConnectionAbortedException abortReason) => inner.Abort(abortReason);

        public override async ValueTask DisposeAsync()
        {
            if (Interlocked.Exchange(ref disposed, 1) == 1) return;
            owner.unstarted.TryRemove(inner.ConnectionId, out _);
            try { await inner.DisposeAsync(); }
            finally { owner.closed(); }
        }
    }
}
