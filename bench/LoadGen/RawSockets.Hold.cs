using System.Runtime.InteropServices;

namespace LoadGen;

/// <summary>The libc calls that <c>LoadGen hold</c> needs beside those of the client loop.</summary>
internal static unsafe partial class RawSockets
{
    private const int SolSocket = 1;
    private const int SoSndtimeo = 21;
    private const int MsgPeek = 0x2;
    private const int MsgDontwait = 0x40;
    private const int RlimitNofile = 7;
    private const int EAgain = 11;

    /// <summary>errno of a connect() that SO_SNDTIMEO cut short.</summary>
    public const int EInProgress = 115;

    [StructLayout(LayoutKind.Sequential)]
    private struct Timeval
    {
        public long Seconds;
        public long Microseconds;
    }

    [StructLayout(LayoutKind.Sequential)]
    private struct Rlimit
    {
        public ulong Current;
        public ulong Maximum;
    }

    [LibraryImport(Libc, EntryPoint = "setsockopt", SetLastError = true)]
    private static partial int SetSockOpt(int fd, int level, int name, void* value, uint length);

    [LibraryImport(Libc, EntryPoint = "getrlimit", SetLastError = true)]
    private static partial int GetRlimit(int resource, Rlimit* limit);

    [LibraryImport(Libc, EntryPoint = "setrlimit", SetLastError = true)]
    private static partial int SetRlimit(int resource, Rlimit* limit);

    /// <summary>A blocking connect() on <paramref name="fd"/> gives up after this long (SO_SNDTIMEO; EINPROGRESS then).</summary>
    public static void SetConnectTimeout(int fd, int milliseconds)
    {
        var tv = new Timeval { Seconds = milliseconds / 1000, Microseconds = milliseconds % 1000 * 1000L };
        _ = SetSockOpt(fd, SolSocket, SoSndtimeo, &tv, (uint)sizeof(Timeval));
    }

    /// <summary>
    /// True while the connection is open: nothing to read yet, or data waiting. False once the
    /// peer has closed it (EOF) or it failed (reset). Reads nothing (MSG_PEEK), never blocks.
    /// </summary>
    public static bool IsOpen(int fd)
    {
        byte b;
        nint n = Recv(fd, &b, 1, MsgPeek | MsgDontwait);
        if (n > 0)
        {
            return true;
        }

        return n < 0 && Marshal.GetLastPInvokeError() is EAgain or Errno.EINTR;
    }

    /// <summary>Raises RLIMIT_NOFILE's soft limit to the hard one; returns the soft limit now in force.</summary>
    public static long RaiseFileLimit()
    {
        Rlimit limit;
        if (GetRlimit(RlimitNofile, &limit) != 0)
        {
            return long.MaxValue;
        }

        if (limit.Current < limit.Maximum)
        {
            Rlimit raised = limit with { Current = limit.Maximum };
            if (SetRlimit(RlimitNofile, &raised) == 0)
            {
                limit = raised;
            }
        }

        return limit.Current > long.MaxValue ? long.MaxValue : (long)limit.Current;
    }
}
