namespace MyServer;

using System;
using System.Net.Sockets;
using System.Threading;
using System.Threading.Tasks;
using Microsoft.Win32.SafeHandles;

/// <summary>
/// One client's connection, as Handler.cs sees it. <see cref="SendAsync"/> and
/// <see cref="ReceiveAsync"/> work as a Socket's do; <see cref="Socket"/> is the connection as
/// a .NET Socket, for everything else (socket options, the client's address, a NetworkStream).
/// Like a Socket, it takes one send and one receive at a time. Once HandleAsync has returned,
/// the worker closes it: a call after that throws ObjectDisposedException.
/// </summary>
/// <remarks>
/// Why not a Socket from the start: to make a .NET Socket of an accepted connection, the
/// runtime asks the kernel ten questions about it (the kind of socket, its addresses, its
/// flags), and for a short answer such as a greeting those calls were a third of a worker's
/// time. A reply sent before anything needs the Socket, and taken by the kernel at once, leaves
/// with one send(2), so such a connection costs three system calls: accept, send, close.
/// </remarks>
public sealed class Connection
{
    private readonly Descriptor descriptor; // also the lock that makes the Socket once (see Socket)
    private volatile Socket? socket;

    internal Connection(int fd) => descriptor = new Descriptor(fd);

    /// <summary>The connection as a .NET Socket, made when first asked for; from then on every call goes through it.</summary>
    public Socket Socket => socket ?? MakeSocket();

    /// <summary>Sends all of <paramref name="data"/>, as Socket.SendAsync does.</summary>
    public ValueTask SendAsync(ReadOnlyMemory<byte> data, CancellationToken cancellationToken = default)
    {
        if (socket is null)
        {
            // A receive on another thread may be making the Socket (which takes the descriptor
            // over) right now: the lock keeps the two apart. Nobody else holds it in the common
            // case, so it costs no system call.
            lock (descriptor)
            {
                if (socket is null)
                {
                    // What the kernel takes now leaves at once. The rest, and any error, go through the
                    // Socket, which waits for room and reports errors as a Socket does.
                    int sent = Posix.SendNow(descriptor, data.Span);
                    if (sent == data.Length) return ValueTask.CompletedTask;
                    if (sent > 0) data = data[sent..];
                }
            }
        }
        return SendThroughSocketAsync(data, cancellationToken);
    }

    /// <summary>Receives into <paramref name="buffer"/>, as Socket.ReceiveAsync does: the count of bytes read, 0 once the client has closed.</summary>
    public ValueTask<int> ReceiveAsync(Memory<byte> buffer, CancellationToken cancellationToken = default) =>
        Socket.ReceiveAsync(buffer, SocketFlags.None, cancellationToken);

    private async ValueTask SendThroughSocketAsync(ReadOnlyMemory<byte> data, CancellationToken cancellationToken) =>
        await Socket.SendAsync(data, SocketFlags.None, cancellationToken);

    /// <summary>
    /// Makes the Socket, once, whichever thread asks first: under the lock, no send on the
    /// descriptor, second Socket (two owners of one number, closing it twice) or close can come
    /// in between.
    /// </summary>
    private Socket MakeSocket()
    {
        lock (descriptor)
        {
            if (socket is Socket made) return made;
            // The Socket takes the descriptor over, and ours gives it up without closing it.
            if (descriptor.IsClosed) throw new ObjectDisposedException(nameof(Connection));
            var handle = new SafeSocketHandle(descriptor.DangerousGetHandle(), ownsHandle: true);
            try
            {
                made = new Socket(handle);
            }
            catch
            {
                // Not a Socket after all (the client is gone): the handle closes the descriptor, once.
                descriptor.SetHandleAsInvalid();
                handle.Dispose();
                throw;
            }
            descriptor.SetHandleAsInvalid();
            return socket = made;
        }
    }

    /// <summary>Closes the connection, once HandleAsync has returned: the client reads what was sent, then end-of-file.</summary>
    internal void Close()
    {
        lock (descriptor)
        {
            if (socket is null) descriptor.Dispose();
            else socket.Dispose();
        }
    }

    /// <summary>The accepted descriptor until a Socket takes it: closed once, by close(2), and never while a send uses it.</summary>
    private sealed class Descriptor : SafeHandleMinusOneIsInvalid
    {
        public Descriptor(int fd) : base(ownsHandle: true) => SetHandle(fd);

        protected override bool ReleaseHandle() => Posix.Close((int)handle);
    }
}
