namespace MyServer;

using System;
using System.Globalization;
using System.Net.Sockets;
using System.Text;

/// <summary>
/// Socket activation (sd_listen_fds(3)): systemd bound the socket, passes it as descriptor 3,
/// and says so with LISTEN_PID (our pid) and LISTEN_FDS (how many sockets).
/// </summary>
internal static class SocketActivation
{
    private const int FirstFd = 3; // SD_LISTEN_FDS_START

    /// <summary>The socket systemd passed, or null if it passed none; more than one is an error.</summary>
    public static int? ListenFd()
    {
        if (Environment.GetEnvironmentVariable("LISTEN_PID") != Environment.ProcessId.ToString(CultureInfo.InvariantCulture)
            || Environment.GetEnvironmentVariable("LISTEN_FDS") is not string count)
            return null;
        foreach (string name in new[] { "LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES" })
            Environment.SetEnvironmentVariable(name, null); // not for our workers
        if (count != "1") throw new InvalidOperationException($"systemd passed LISTEN_FDS={count} sockets; this server takes exactly one");
        return FirstFd;
    }
}

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
