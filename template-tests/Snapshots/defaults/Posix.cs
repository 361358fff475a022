namespace MyServer;

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

    // A registration unregisters its handler when it is finalized: one that nothing refers to
    // vanishes at the first garbage collection, and the signal gets its default action back
    // (TERM and QUIT would then kill a worker outright). These live as long as the process.
    private static readonly List<PosixSignalRegistration> registrations = [];

    /// <summary>
    /// Calls <paramref name="handler"/> (on a thread-pool thread) each time one of the
    /// <paramref name="names"/> arrives, for as long as the process runs. A script that starts
    /// a program in the background (<c>server &amp;</c>) hands it INT and QUIT already ignored,
    /// and .NET leaves an ignored signal ignored; so the disposition is reset first.
    /// Must run before anything else in the process registers a signal.
    /// </summary>
    public static void HandleSignals(IEnumerable<string> names, Action<int> handler)
    {
        // All dispositions first: the first registration sets up the runtime's signal
        // handling, which from then on keeps whatever it found ignored.
        Signum[] signums = [.. names.Select(name => name == "CHLD" ? Signum.SIGCHLD : Signals[name])];
        foreach (Signum signum in signums) Stdlib.SetSignalAction(signum, SignalAction.Default);

        lock (registrations)
        {
            foreach (Signum signum in signums)
            {
                registrations.Add(PosixSignalRegistration.Create(ToPosixSignal(signum), context =>
                {
                    context.Cancel = true; // we decide what the signal does, not the runtime
                    handler((int)signum);
                }));
            }
        }
    }

    /// <summary>
    /// Wraps an inherited descriptor (from the master, systemd or an old master) as a Socket,
    /// or says why it is not a listening TCP socket. The Socket does not own the descriptor:
    /// dispose it freely; <see cref="ReleaseListener"/> is what lets go of the descriptor.
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

    /// <summary>
    /// Closes this process's descriptor of the shared listening socket, with close(2) only.
    /// Never shutdown(2): on Linux that stops the socket listening for every process that holds
    /// it. The socket goes on listening while any other process holds it; when the last one
    /// lets go, new clients are refused at once. Call it only once no thread of this process
    /// can be blocked in accept() on it.
    /// </summary>
    public static void ReleaseListener(int fd)
    {
        if (Syscall.close(fd) < 0)
            Log.Info($"close of the listening socket (fd {fd}): {Stdlib.GetLastError()}");
    }

    /// <summary>
    /// Makes the listening socket, for every process that holds it, drop new connection
    /// attempts (a TCP SYN) while the handshakes already under way complete and join the queue:
    /// a socket filter (SO_ATTACH_FILTER) that passes everything but a bare SYN. The queue can
    /// then be served to its end and the socket released with nothing left in it to reset; a
    /// client whose SYN was dropped sends it again about a second later, and is then refused.
    /// Only for a socket that nobody will listen on again (never one systemd holds).
    /// </summary>
    public static void StopNewConnections(int fd)
    {
        // Classic BPF over the TCP header: the flags are its byte 13; SYN 0x02, ACK 0x10.
        SockFilter[] program =
        [
            new(0x30, 0, 0, 13),            // ldb [13]
            new(0x54, 0, 0, 0x12),          // and #(SYN|ACK)
            new(0x15, 0, 1, 0x02),          // jeq #SYN: a bare SYN is dropped, all else kept
            new(0x06, 0, 0, 0),             // ret #0: drop
            new(0x06, 0, 0, uint.MaxValue), // ret: keep the whole packet
        ];
        GCHandle pinned = GCHandle.Alloc(program, GCHandleType.Pinned);
        try
        {
            var fprog = new SockFprog((ushort)program.Length, pinned.AddrOfPinnedObject());
            if (setsockopt(fd, SolSocket, SoAttachFilter, ref fprog, Marshal.SizeOf<SockFprog>()) < 0)
                Log.Info($"cannot hold back new connections (SO_ATTACH_FILTER): {Stdlib.GetLastError()}");
        }
        finally
        {
            pinned.Free();
        }
    }

    /// <summary>
    /// Undoes <see cref="StopNewConnections"/> for every process that holds the socket: removes
    /// the socket filter (SO_DETACH_FILTER), so that new clients are taken again. A master that
    /// goes on serving after an upgrade failed or was stopped calls it: a new master's worker
    /// may have set the filter before it went. No filter there (ENOENT) is fine.
    /// </summary>
    public static void AllowNewConnections(int fd)
    {
        int unused = 0;
        if (setsockopt(fd, SolSocket, SoDetachFilter, ref unused, sizeof(int)) < 0 && Stdlib.GetLastError() != Errno.ENOENT)
            Log.Info($"cannot remove the filter of new connections (SO_DETACH_FILTER): {Stdlib.GetLastError()}");
    }

    private const int SolSocket = 1, SoAttachFilter = 26, SoDetachFilter = 27;

    private readonly record struct SockFilter(ushort Code, byte JumpTrue, byte JumpFalse, uint K);

    private readonly record struct SockFprog(ushort Length, IntPtr Filter);

    [DllImport("libc", SetLastError = true)]
    private static extern int setsockopt(int fd, int level, int name, ref SockFprog value, int length);

    [DllImport("libc", SetLastError = true)]
    private static extern int setsockopt(int fd, int level, int name, ref int value, int length);

    /// <summary>
    /// How many connections wait in the listening socket's queue now: for a listening socket,
    /// Linux reports the queue's length in TCP_INFO's tcpi_unacked. -1 if it cannot tell.
    /// </summary>
    public static int QueuedConnections(int fd) => ListenQueue(fd).Length;

    /// <summary>
    /// The listening socket's queue: its length and its limit (the backlog the kernel applies),
    /// which Linux reports in TCP_INFO's tcpi_unacked and tcpi_sacked. (-1, -1) if it cannot tell.
    /// </summary>
    public static (int Length, int Limit) ListenQueue(int fd)
    {
        var info = new byte[TcpInfoSize];
        int length = info.Length;
        if (getsockopt(fd, IpProtoTcp, TcpInfo, info, ref length) < 0 || length < TcpiSackedOffset + 4) return (-1, -1);
        return (BitConverter.ToInt32(info, TcpiUnackedOffset), BitConverter.ToInt32(info, TcpiSackedOffset));
    }

    private const int IpProtoTcp = 6, TcpInfo = 11, TcpInfoSize = 104, TcpiUnackedOffset = 24, TcpiSackedOffset = 28;

    [DllImport("libc", SetLastError = true)]
    private static extern int getsockopt(int fd, int level, int name, byte[] value, ref int length);

    /// <summary>True when a connection is waiting in the listening socket's queue (poll, no wait).</summary>
    public static bool HasPendingConnection(int fd)
    {
        var poll = new[] { new Pollfd { fd = fd, events = PollEvents.POLLIN } };
        return Syscall.poll(poll, 0) > 0 && (poll[0].revents & PollEvents.POLLIN) != 0;
    }

    /// <summary>
    /// Raises this process's soft limit of open descriptors (RLIMIT_NOFILE, `ulimit -n`) to its
    /// hard limit, as nginx's worker_rlimit_nofile and the Go runtime do: every connection is
    /// a descriptor, and the usual soft limit (1024) is below the default --max-connections
    /// of a few workers. Returns the limit now in force (long.MaxValue: unlimited).
    /// </summary>
    public static long RaiseFileLimit()
    {
        if (getrlimit(RlimitNofile, out Rlimit limit) < 0) return long.MaxValue; // cannot know: no limit to plan for
        if (limit.Current < limit.Maximum)
        {
            var raised = limit with { Current = limit.Maximum };
            if (setrlimit(RlimitNofile, in raised) == 0) limit = raised;
        }
        return limit.Current > long.MaxValue ? long.MaxValue : (long)limit.Current;
    }

    /// <summary>The number of descriptors this process has open now.</summary>
    public static int OpenFileCount() => System.IO.Directory.GetFiles("/proc/self/fd").Length - 1; // less the one that lists them

    private const int RlimitNofile = 7; // RLIMIT_NOFILE on Linux

    private record struct Rlimit(ulong Current, ulong Maximum);

    [DllImport("libc", SetLastError = true)]
    private static extern int getrlimit(int resource, out Rlimit limit);

    [DllImport("libc", SetLastError = true)]
    private static extern int setrlimit(int resource, in Rlimit limit);

    /// <summary>
    /// A file of <paramref name="bytes"/> zero bytes that lives in memory only (memfd_create(2)),
    /// close-on-exec, for processes to share by mapping it (<see cref="MapShared"/>). Returns its
    /// descriptor, or -1 with the reason.
    /// </summary>
    public static int CreateSharedMemory(string name, long bytes, out string? problem)
    {
        problem = null;
        int fd;
        try
        {
            fd = memfd_create(name, MfdCloexec);
        }
        catch (EntryPointNotFoundException)
        {
            problem = "memfd_create is not in this C library";
            return -1;
        }
        if (fd < 0)
        {
            problem = $"memfd_create: {Stdlib.GetLastError()}";
            return -1;
        }
        if (Syscall.ftruncate(fd, bytes) < 0)
        {
            problem = $"ftruncate: {Stdlib.GetLastError()}";
            Syscall.close(fd);
            return -1;
        }
        return fd;
    }

    /// <summary>
    /// Maps <paramref name="bytes"/> of a shared file read-write (mmap(2), MAP_SHARED): what one
    /// process writes there, every other that maps it reads. IntPtr.Zero, with the reason, if it cannot.
    /// </summary>
    public static IntPtr MapShared(int fd, long bytes, out string? problem)
    {
        problem = null;
        IntPtr block = mmap(IntPtr.Zero, (nuint)bytes, ProtRead | ProtWrite, MapSharedFlag, fd, 0);
        if (block != MapFailed) return block;
        problem = $"mmap of fd {fd}: {Stdlib.GetLastError()}";
        return IntPtr.Zero;
    }

    private const uint MfdCloexec = 1;
    private const int ProtRead = 1, ProtWrite = 2, MapSharedFlag = 1; // Linux values
    private static readonly IntPtr MapFailed = new(-1);

    [DllImport("libc", SetLastError = true)]
    private static extern int memfd_create([MarshalAs(UnmanagedType.LPUTF8Str)] string name, uint flags);

    [DllImport("libc", SetLastError = true)]
    private static extern IntPtr mmap(IntPtr address, nuint length, int protection, int flags, int fd, nint offset);

    /// <summary>Sends a signal; a process that has already gone is not an error.</summary>
    public static void Kill(int pid, int signal) => Syscall.kill(pid, (Signum)signal);

    /// <summary>Lets the file descriptor survive exec, so a worker started by the master inherits it.</summary>
    public static void Inherit(int fd) => SetCloseOnExec(fd, false);

    /// <summary>
    /// The opposite of <see cref="Inherit"/>: the descriptor is closed when this process runs
    /// another program, so a child process of the handler never holds it. The flag belongs to
    /// this process's descriptor only; the master's own copy stays inheritable.
    /// </summary>
    public static void KeepFromChildren(int fd) => SetCloseOnExec(fd, true);

    private static void SetCloseOnExec(int fd, bool close)
    {
        int flags = Syscall.fcntl(fd, FcntlCommand.F_GETFD);
        if (flags < 0 || Syscall.fcntl(fd, FcntlCommand.F_SETFD, close ? flags | FdCloexec : flags & ~FdCloexec) < 0)
            throw new InvalidOperationException($"fcntl({fd}): {Stdlib.GetLastError()}");
    }

    private const int FdCloexec = 1; // FD_CLOEXEC

    /// <summary>
    /// A new descriptor for what <paramref name="fd"/> is, closed when this process runs another
    /// program, and nowhere near the standard ones (0, 1, 2).
    /// </summary>
    public static int DuplicateForSelf(int fd)
    {
        int copy = Syscall.fcntl(fd, FcntlCommand.F_DUPFD, 3);
        if (copy < 0) throw new InvalidOperationException($"fcntl({fd}, F_DUPFD): {Stdlib.GetLastError()}");
        KeepFromChildren(copy);
        return copy;
    }

    /// <summary>Makes descriptor <paramref name="target"/> another name for <paramref name="fd"/> (dup2).</summary>
    public static void Redirect(int target, int fd)
    {
        if (Syscall.dup2(fd, target) < 0)
            throw new InvalidOperationException($"dup2({fd}, {target}): {Stdlib.GetLastError()}");
    }

    /// <summary>Makes descriptor <paramref name="target"/> read end-of-file and swallow writes (/dev/null).</summary>
    public static void RedirectToNull(int target)
    {
        int devNull = Syscall.open("/dev/null", OpenFlags.O_RDWR);
        if (devNull < 0) throw new InvalidOperationException($"open(/dev/null): {Stdlib.GetLastError()}");
        if (devNull == target) return;
        try { Redirect(target, devNull); }
        finally { Syscall.close(devNull); }
    }

    /// <summary>
    /// Makes accept() on this socket wait (clears O_NONBLOCK), as the accepting thread expects:
    /// a socket handed over non-blocking (systemd's NonBlocking=yes) would make every idle
    /// accept() return at once, and the thread spin. The flag belongs to the socket as every
    /// process holding it shares it, so it is set for all of them. Returns false if the flag was
    /// already clear.
    /// </summary>
    public static bool MakeBlocking(int fd)
    {
        int flags = Syscall.fcntl(fd, FcntlCommand.F_GETFL);
        if (flags < 0) throw new InvalidOperationException($"fcntl({fd}, F_GETFL): {Stdlib.GetLastError()}");
        if ((flags & ONonblock) == 0) return false;
        if (Syscall.fcntl(fd, FcntlCommand.F_SETFL, flags & ~ONonblock) < 0)
            throw new InvalidOperationException($"fcntl({fd}, F_SETFL): {Stdlib.GetLastError()}");
        return true;
    }

    private const int ONonblock = 0x800; // O_NONBLOCK on Linux (x64 and arm64)

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

    /// <summary>
    /// send(2) of what the socket takes now, without waiting (MSG_DONTWAIT), and with no SIGPIPE
    /// if the client has gone (MSG_NOSIGNAL): the count of bytes sent, or -1 (none could go now,
    /// or an error).
    /// </summary>
    public static int SendNow(SafeHandle socket, ReadOnlySpan<byte> data) =>
        (int)send(socket, ref MemoryMarshal.GetReference(data), data.Length, MsgDontwait | MsgNosignal);

    /// <summary>close(2); false if it failed (the descriptor is closed all the same on Linux).</summary>
    public static bool Close(int fd) => Syscall.close(fd) == 0;

    private const int MsgDontwait = 0x40, MsgNosignal = 0x4000; // Linux values

    [DllImport("libc")]
    private static extern nint send(SafeHandle socket, ref byte data, nint length, int flags);

    private const int SockCloexec = 0x80000; // SOCK_CLOEXEC on Linux

    [DllImport("libc", SetLastError = true)]
    private static extern int accept4(int fd, IntPtr address, IntPtr addressLength, int flags);

    /// <summary>
    /// Writes all of <paramref name="data"/> to <paramref name="fd"/> with write(2), going on
    /// after a signal (EINTR) and waiting with poll(2) while a non-blocking pipe is full (EAGAIN).
    /// False if it could not (ENOSPC, EIO, EPIPE, ...): never an exception.
    /// </summary>
    public static bool WriteAll(int fd, ReadOnlySpan<byte> data)
    {
        while (!data.IsEmpty)
        {
            nint written = write(fd, ref MemoryMarshal.GetReference(data), data.Length);
            if (written > 0)
            {
                data = data[(int)written..];
                continue;
            }
            Errno error = written < 0 ? NativeConvert.ToErrno(Marshal.GetLastPInvokeError()) : Errno.EIO;
            if (error == Errno.EINTR) continue;
            if (error == Errno.EAGAIN && WaitUntilWritable(fd)) continue;
            return false;
        }
        return true;
    }

    private static bool WaitUntilWritable(int fd)
    {
        var poll = new[] { new Pollfd { fd = fd, events = PollEvents.POLLOUT } };
        int ready;
        while ((ready = Syscall.poll(poll, -1)) < 0 && Stdlib.GetLastError() == Errno.EINTR) { } // a signal: wait on
        return ready > 0 && (poll[0].revents & PollEvents.POLLOUT) != 0;
    }

    [DllImport("libc", SetLastError = true)]
    private static extern nint write(int fd, ref byte data, nint count);

    /// <summary>Null if this process may run <paramref name="path"/> (access(2), X_OK); else why not.</summary>
    public static string? CannotExecute(string path) =>
        Syscall.access(path, AccessModes.X_OK) == 0 ? null : Stdlib.GetLastError().ToString();

    /// <summary>True if anything has that name, a dangling symbolic link included (lstat(2)).</summary>
    public static bool NameExists(string path) => Syscall.lstat(path, out _) == 0;

    /// <summary>True if <paramref name="path"/> is a regular file (stat(2): not a FIFO, device or directory).</summary>
    public static bool IsRegularFile(string path) =>
        Syscall.stat(path, out Stat status) == 0 && (status.st_mode & FilePermissions.S_IFMT) == FilePermissions.S_IFREG;

    /// <summary>This process's parent (getppid(2)): after the parent has exited, a process that adopted it.</summary>
    public static int ParentPid() => Syscall.getppid();

    /// <summary>A process's resident memory in bytes, from /proc/PID/statm; -1 if it is gone.</summary>
    public static long ResidentBytes(int pid)
    {
        try
        {
            string[] fields = System.IO.File.ReadAllText($"/proc/{pid}/statm").Split(' ');
            return long.Parse(fields[1], System.Globalization.CultureInfo.InvariantCulture) * Environment.SystemPageSize;
        }
        catch (Exception e) when (e is System.IO.IOException or UnauthorizedAccessException or FormatException or IndexOutOfRangeException)
        {
            return -1;
        }
    }

    /// <summary>Waits for a child that has exited, without blocking (waitpid(2), WNOHANG).</summary>
    public static void Reap(int pid) => Syscall.waitpid(pid, out _, WaitOptions.WNOHANG);

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
