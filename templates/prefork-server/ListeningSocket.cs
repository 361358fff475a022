namespace PreforkServer;

using System;
using System.Net;
using System.Net.Sockets;

/// <summary>The master's listening socket, and where it comes from.</summary>
internal static class ListeningSocket
{
    /// <summary>
    /// The listening socket: handed over by systemd (LISTEN_FDS, socket activation) or by an
    /// old master (USR2), else bound here. Returns it, where it came from (for the log), whether
    /// an old master handed it over, and whether systemd holds it too.
    /// </summary>
    public static (Socket Socket, string Origin, bool Upgraded, bool SystemdSocket) Open(Settings settings)
    {
        if (Master.FromOldMaster() is (int upgradeFd, bool kept))
            return (Inherited(upgradeFd, "the old master"), " (socket from the old master, USR2)", true, kept);
        if (SocketActivation.ListenFd() is int fd)
            return (Inherited(fd, "systemd"), " (socket from systemd)", false, true);

        var socket = new Socket(settings.Host.AddressFamily, SocketType.Stream, ProtocolType.Tcp);
        if (settings.Host.AddressFamily == AddressFamily.InterNetworkV6 && settings.Host.Equals(IPAddress.IPv6Any))
            socket.DualMode = true; // "::" takes IPv4 connections too
        socket.Bind(new IPEndPoint(settings.Host, settings.Port));
        socket.Listen(settings.Backlog);
        // --defer-accept: a worker is woken only once the client has sent its first bytes, so
        // its first read finds them at once (no wait, no thread of the pool woken for it).
        if (settings.DeferAccept > 0)
            socket.SetRawSocketOption(IpProtocolTcp, TcpDeferAccept, BitConverter.GetBytes(settings.DeferAccept));
        // .NET opens every descriptor close-on-exec; this one, alone, must reach the workers.
        Posix.Inherit((int)socket.SafeHandle.DangerousGetHandle());
        return (socket, "", false, false);
    }

    private const int IpProtocolTcp = 6, TcpDeferAccept = 9; // Linux values

    /// <summary>A listening TCP socket received from systemd or an old master; never closed here.</summary>
    private static Socket Inherited(int fd, string from)
    {
        if (Posix.WrapListeningTcp(fd, out Socket? socket) is string problem)
            throw new InvalidOperationException($"the socket from {from}: {problem}");
        Posix.Inherit(fd);
        return socket!;
    }
}
