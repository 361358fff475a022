namespace My.Server_2;

using System;
using System.Net.Sockets;
using System.Text;

/// <summary>
/// sd_notify(3): when systemd started the server with Type=notify, it set NOTIFY_SOCKET to a
/// datagram socket that takes "READY=1", "RELOADING=1", "STOPPING=1". Anywhere else this
/// does nothing. (The protocol is one datagram per message; no library needed.)
/// </summary>
internal sealed class SystemdNotifier
{
    private readonly UnixDomainSocketEndPoint? endpoint;

    /// <summary>The socket's address, for a new master (USR2), which takes over as main process.</summary>
    public string? Path { get; }

    public SystemdNotifier()
    {
        string? path = Environment.GetEnvironmentVariable("NOTIFY_SOCKET");
        Environment.SetEnvironmentVariable("NOTIFY_SOCKET", null); // for the master only, not its workers
        if (string.IsNullOrEmpty(path)) return;
        Path = path;
        // "@name" is a socket in the abstract namespace, written with a leading NUL.
        endpoint = new UnixDomainSocketEndPoint(path[0] == '@' ? "\0" + path[1..] : path);
    }

    public void Notify(string state)
    {
        if (endpoint is null) return;
        try
        {
            using var socket = new Socket(AddressFamily.Unix, SocketType.Dgram, ProtocolType.Unspecified);
            socket.SendTo(Encoding.UTF8.GetBytes(state), endpoint);
        }
        catch (SocketException e)
        {
            Log.Info($"cannot notify systemd ({state.Replace('\n', ' ')}): {e.Message}");
        }
    }
}
