namespace My.Server_2;

using System;
using System.Collections.Generic;
using System.Linq;
using System.Net.Sockets;
using System.Runtime.InteropServices;
using Mono.Unix.Native;

/// <summary>
/// The few POSIX calls the .NET base library does not offer, via Mono.Posix.NETStandard,
/// plus the names of the signals this server understands.
/// </summary>
internal static class Posix
{
    /// <summary>The signals the server can handle, by the name used in --signals.</summary>
    public static readonly IReadOnlyDictionary<string, Signum> Signals = new Dictionary<string, Signum>
    {
        ["INT"] = Signum.SIGINT,
        ["QUIT"] = Signum.SIGQUIT,
        ["TERM"] = Signum.SIGTERM,
        ["HUP"] = Signum.SIGHUP,
        ["TTIN"] = Signum.SIGTTIN,
        ["TTOU"] = Signum.SIGTTOU,
        ["USR1"] = Signum.SIGUSR1,
        ["USR2"] = Signum.SIGUSR2,
    };

    public static string NameOf(int signal) =>
        Enum.IsDefined((Signum)signal) ? ((Signum)signal).ToString() : $"signal {signal}";

    /// <summary>
    /// Calls <paramref name="handler"/> (on a thread-pool thread) each time one of the
    /// <paramref name="names"/> arrives. A script that starts a program in the background
    /// (<c>server &amp;</c>) hands it INT and QUIT already ignored, and
    /// .NET leaves an ignored signal ignored; so the disposition is reset first.
    /// Must run before anything else in the process registers a signal.
    /// </summary>
    public static List<PosixSignalRegistration> HandleSignals(IEnumerable<string> names, Action<int> handler)
    {
        // All dispositions first: the first registration sets up the runtime's signal
        // handling, which from then on keeps whatever it found ignored.
        Signum[] signums = [.. names.Select(name => name == "CHLD" ? Signum.SIGCHLD : Signals[name])];
        foreach (Signum signum in signums) Stdlib.SetSignalAction(signum, SignalAction.Default);

        var registrations = new List<PosixSignalRegistration>();
        foreach (Signum signum in signums)
        {
            registrations.Add(PosixSignalRegistration.Create(ToPosixSignal(signum), context =>
            {
                context.Cancel = true; // we decide what the signal does, not the runtime
                handler((int)signum);
            }));
        }
        return registrations;
    }

    /// <summary>
    /// Wraps an inherited descriptor (from the master, systemd or an old master) as a Socket,
    /// or says why it is not a listening TCP socket. The Socket must never be closed or
    /// disposed: on Linux that would stop the socket listening for every process (DESIGN.md).
    /// </summary>
    public static string? WrapListeningTcp(int fd, out Socket? socket)
    {
        socket = null;
        try
        {
            var candidate = new Socket(new SafeSocketHandle(fd, ownsHandle: false));
            if (candidate.SocketType == SocketType.Unknown)
                return $"fd {fd} is not a socket";
            if (candidate.SocketType != SocketType.Stream || candidate.ProtocolType != ProtocolType.Tcp)
                return $"fd {fd} is a {candidate.SocketType}/{candidate.ProtocolType} socket, not TCP";
            if ((int)candidate.GetSocketOption(SocketOptionLevel.Socket, SocketOptionName.AcceptConnection)! == 0)
                return $"fd {fd} is a TCP socket that is not listening";
            socket = candidate;
            return null;
        }
        catch (SocketException e)
        {
            return $"fd {fd} is not a socket ({e.Message})";
        }
    }

    /// <summary>Sends a signal; a process that has already gone is not an error.</summary>
    public static void Kill(int pid, int signal) => Syscall.kill(pid, (Signum)signal);

    /// <summary>Lets the file descriptor survive exec, so a worker started by the master inherits it.</summary>
    public static void Inherit(int fd)
    {
        int flags = Syscall.fcntl(fd, FcntlCommand.F_GETFD);
        if (flags < 0 || Syscall.fcntl(fd, FcntlCommand.F_SETFD, flags & ~1 /* FD_CLOEXEC */) < 0)
            throw new InvalidOperationException($"fcntl({fd}): {Stdlib.GetLastError()}");
    }

    /// <summary>
    /// Makes a blocking accept() on this socket give up after <paramref name="timeout"/>
    /// (SO_RCVTIMEO). The setting belongs to the socket, so it holds for every worker.
    /// </summary>
    public static void SetAcceptTimeout(int fd, TimeSpan timeout)
    {
        var value = new Timeval { tv_sec = (long)timeout.TotalSeconds, tv_usec = timeout.Microseconds + 1000L * timeout.Milliseconds };
        if (Syscall.setsockopt(fd, UnixSocketProtocol.SOL_SOCKET, UnixSocketOptionName.SO_RCVTIMEO, value) < 0)
            throw new InvalidOperationException($"setsockopt(SO_RCVTIMEO): {Stdlib.GetLastError()}");
    }

    /// <summary>
    /// accept4(2), blocking, with SOCK_CLOEXEC. Returns the new descriptor, or -1 with
    /// <paramref name="error"/> set (EAGAIN when the accept timeout passed, EINTR on a signal).
    /// Socket.Accept cannot be used: on a timeout it falls back to epoll, which wakes every
    /// worker at once instead of one at a time. Mono.Posix's accept4 allocates a Sockaddr
    /// per call; this is the bare call.
    /// </summary>
    public static int Accept(int fd, out Errno error)
    {
        int client = accept4(fd, IntPtr.Zero, IntPtr.Zero, SockCloexec);
        error = client < 0 ? NativeConvert.ToErrno(Marshal.GetLastPInvokeError()) : 0;
        return client;
    }

    private const int SockCloexec = 0x80000; // SOCK_CLOEXEC on Linux

    [DllImport("libc", SetLastError = true)]
    private static extern int accept4(int fd, IntPtr address, IntPtr addressLength, int flags);

    private static PosixSignal ToPosixSignal(Signum signum) => signum switch
    {
        Signum.SIGINT => PosixSignal.SIGINT,
        Signum.SIGQUIT => PosixSignal.SIGQUIT,
        Signum.SIGTERM => PosixSignal.SIGTERM,
        Signum.SIGHUP => PosixSignal.SIGHUP,
        Signum.SIGCHLD => PosixSignal.SIGCHLD,
        Signum.SIGTTIN => PosixSignal.SIGTTIN,
        Signum.SIGTTOU => PosixSignal.SIGTTOU,
        _ => (PosixSignal)(int)signum, // raw numbers are allowed for the others
    };
}
