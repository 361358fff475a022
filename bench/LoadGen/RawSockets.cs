using System.Net;
using System.Net.Sockets;
using System.Runtime.InteropServices;

namespace LoadGen;

/// <summary>
/// Direct libc socket calls (Linux/glibc), used by <see cref="ClientMode.Raw"/>: the same
/// blocking socket()/connect()/recv()/close() sequence as the managed Socket path, minus the
/// per-connection Socket/SafeHandle objects. Errors come back as errno values.
/// </summary>
internal static unsafe partial class RawSockets
{
    private const string Libc = "libc.so.6";
    private const int SockStream = 1;
    private const int SockCloexec = 0x80000;
    private const int ShutRdwr = 2;

    [LibraryImport(Libc, EntryPoint = "socket", SetLastError = true)]
    private static partial int Socket(int domain, int type, int protocol);

    [LibraryImport(Libc, EntryPoint = "connect", SetLastError = true)]
    private static partial int Connect(int fd, byte* address, uint length);

    [LibraryImport(Libc, EntryPoint = "recv", SetLastError = true)]
    private static partial nint Recv(int fd, byte* buffer, nuint length, int flags);

    [LibraryImport(Libc, EntryPoint = "close", SetLastError = true)]
    private static partial int Close(int fd);

    [LibraryImport(Libc, EntryPoint = "shutdown", SetLastError = true)]
    private static partial int Shutdown(int fd, int how);

    public static bool IsSupported => OperatingSystem.IsLinux();

    /// <summary>Null if libc sockets work here, else why not.</summary>
    public static string? Probe()
    {
        if (!IsSupported)
        {
            return "not Linux";
        }

        try
        {
            int fd = OpenStream(2);
            if (fd < 0)
            {
                return $"socket() failed: {Marshal.GetPInvokeErrorMessage(-fd)}";
            }

            CloseFd(fd);
            return null;
        }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException)
        {
            return e.Message;
        }
    }

    /// <summary>Serializes an endpoint as a sockaddr_in / sockaddr_in6.</summary>
    public static byte[] ToSockaddr(IPEndPoint endPoint)
    {
        // SocketAddress's buffer is the native sockaddr layout on Linux.
        SocketAddress sa = endPoint.Serialize();
        var bytes = new byte[sa.Size];
        for (int i = 0; i < bytes.Length; i++)
        {
            bytes[i] = sa[i];
        }

        return bytes;
    }

    public static int Family(IPEndPoint endPoint) =>
        endPoint.AddressFamily == AddressFamily.InterNetworkV6 ? 10 : 2; // AF_INET6 : AF_INET

    /// <summary>Returns a new fd, or -errno.</summary>
    public static int OpenStream(int family)
    {
        int fd = Socket(family, SockStream | SockCloexec, 0);
        return fd >= 0 ? fd : -Marshal.GetLastPInvokeError();
    }

    /// <summary>0 or errno.</summary>
    public static int ConnectTo(int fd, byte[] sockaddr)
    {
        fixed (byte* p = sockaddr)
        {
            while (true)
            {
                if (Connect(fd, p, (uint)sockaddr.Length) == 0)
                {
                    return 0;
                }

                int errno = Marshal.GetLastPInvokeError();
                if (errno != Errno.EINTR)
                {
                    return errno;
                }
            }
        }
    }

    /// <summary>Bytes read (0 = EOF), or -errno.</summary>
    public static int Receive(int fd, Span<byte> buffer)
    {
        fixed (byte* p = buffer)
        {
            while (true)
            {
                nint n = Recv(fd, p, (nuint)buffer.Length, 0);
                if (n >= 0)
                {
                    return (int)n;
                }

                int errno = Marshal.GetLastPInvokeError();
                if (errno != Errno.EINTR)
                {
                    return -errno;
                }
            }
        }
    }

    public static void CloseFd(int fd) => Close(fd);

    /// <summary>Aborts a blocking connect()/recv() on <paramref name="fd"/> from another thread.</summary>
    public static void Abort(int fd) => Shutdown(fd, ShutRdwr);

    public static int Classify(int errno) => errno switch
    {
        Errno.ECONNREFUSED => FailureKind.Refused,
        Errno.ECONNRESET or Errno.ECONNABORTED or Errno.EPIPE => FailureKind.Reset,
        Errno.ETIMEDOUT => FailureKind.Timeout,
        Errno.EADDRNOTAVAIL or Errno.EADDRINUSE => FailureKind.NoLocalPort,
        _ => FailureKind.Other,
    };

    internal static class Errno
    {
        public const int EINTR = 4;
        public const int EPIPE = 32;
        public const int EADDRINUSE = 98;
        public const int EADDRNOTAVAIL = 99;
        public const int ECONNABORTED = 103;
        public const int ECONNRESET = 104;
        public const int ETIMEDOUT = 110;
        public const int ECONNREFUSED = 111;
    }
}
