namespace My.Server_2;

using System;
using System.Collections.Generic;
using System.Diagnostics;
using System.IO;
using System.Net.Sockets;
using System.Threading;
using Microsoft.Win32.SafeHandles;
using Mono.Unix.Native;

/// <summary>
/// A worker process. It accepts on the listening socket inherited from the master with a
/// blocking accept() on one thread (Linux wakes blocked acceptors one at a time, in turn,
/// which spreads connections evenly over the workers) and hands each connection to
/// HandlerHost.cs, which serves it with Handler.cs on the thread pool.
/// </summary>
internal sealed class Worker
{
    /// <summary>The number of the inherited listening socket, set by the master.</summary>
    public const string ListenFdVariable = "PREFORK_LISTEN_FD";

    /// <summary>An idle accept() returns this often, so the accepting thread notices a stop.</summary>
    private static readonly TimeSpan AcceptWake = TimeSpan.FromMilliseconds(500);
    private const long HeartbeatMs = 500;
    /// <summary>With --metrics, the worker's figures go to the master with every other heartbeat.</summary>
    private const long FiguresMs = 1000;
    /// <summary>A thread pool that has not run the heartbeat for this long is stuck: stop accepting.</summary>
    private const long PoolStallMs = 1000;
    private static readonly TimeSpan HandshakeGrace = TimeSpan.FromMilliseconds(100);

    /// <summary>
    /// Balancing (SharedCounts.cs): a worker that holds more than this many connections above
    /// the least loaded worker that accepts, and more than a quarter of what that one holds,
    /// steps out of accept(). Short connections (a greeting: 0 to 2 open at a time) never do.
    /// </summary>
    private const int BalanceSlack = 2;
    /// <summary>The longest a worker steps out before it accepts anyway: the others may all be busy.</summary>
    private const long StepOutMs = 50;

    /// <summary>
    /// Descriptors kept free for the runtime and the handler (assemblies, threads, a pipe, a
    /// file the handler opens): a worker that has this few left stops accepting, and the
    /// kernel gives the next connection to another worker, instead of failing inside the
    /// runtime (which aborts the process and every connection it holds).
    /// </summary>
    public const int SpareFiles = 64;

    private readonly Settings settings;
    private readonly int listenFd;
    private readonly HandlerHost host;
    private readonly int capacity;                 // connections at once: --max-connections, or fewer if ulimit -n says so
    private readonly string capacityReason;
    private readonly SemaphoreSlim slots;          // free connection slots (capacity)
    private readonly long recycleAfter;            // accepted connections before retiring; 0: never
    private readonly SharedCounts? counts;         // every worker's open connections; null: not balancing
    private readonly Metrics metrics;
    private readonly bool sendsFigures;            // --metrics is on
    private long lastFigures;
    private Stream toMaster = Stream.Null;
    private int inFlight;
    private long accepted;
    private long lastHeartbeat;
    private long lastPauseLog = long.MinValue / 2;
    private bool paused;
    private bool retireSent;
    private volatile bool stopping;
    private volatile bool lastHolder;             // the master says no other process holds the listening socket
    private volatile bool serveWholeQueue;        // no one else will serve the queue: the last holder, or the master is gone
    private int stopRequested;                    // Stop comes from the signal, pipe and accepting threads: once
    private int exiting;
    private int heartbeatQueued;                  // a heartbeat waits for the thread pool
    private bool poolStalled;

    private Worker(Settings settings, int listenFd, int index, long fileLimit, SharedCounts? counts)
    {
        this.settings = settings;
        this.listenFd = listenFd;
        this.counts = counts;
        host = new HandlerHost(settings, index, listenFd, Closed, () => Stop("the application stopped: finishing connections, then exiting"));
        // Every connection is a descriptor. What is open now (the runtime's own files, the
        // pipes, the socket) stays open; SpareFiles more may be needed later.
        long byLimit = fileLimit - Posix.OpenFileCount() - SpareFiles;
        capacity = (int)Math.Clamp(byLimit, 1, settings.MaxConnections);
        capacityReason = capacity < settings.MaxConnections
            ? $"the descriptor limit (ulimit -n {fileLimit}) leaves room for {capacity}, below --max-connections {settings.MaxConnections}"
            : $"--max-connections {capacity}";
        slots = new SemaphoreSlim(capacity, capacity);
        if (settings.MaxConnectionsPerWorker > 0)
            recycleAfter = settings.MaxConnectionsPerWorker + Random.Shared.Next(settings.MaxConnectionsJitter + 1);
        sendsFigures = settings.Metrics is not null;
        metrics = new Metrics(() => Interlocked.Read(ref accepted), () => Volatile.Read(ref inFlight), sendsFigures);
    }

    public static int Run(Settings settings, string fdText, string indexText, long fileLimit)
    {
        if (!int.TryParse(indexText, out int index)) index = -1;
        Log.AsWorker(index);

        // The control pipes (ControlPipe.cs) come as our standard input and output. They move,
        // first thing, to descriptors of our own that a child process (one the handler starts)
        // does not inherit; standard input becomes /dev/null and standard output the log, so
        // such a child holds no pipe of ours, and whatever is written to the console (by the
        // handler, its constructor included, or by a child) goes to the log, not to the master.
        Stream pipeFromMaster, pipeToMaster;
        try
        {
            pipeFromMaster = new FileStream(new SafeFileHandle(Posix.DuplicateForSelf(0), ownsHandle: true), FileAccess.Read, 1);
            pipeToMaster = new FileStream(new SafeFileHandle(Posix.DuplicateForSelf(1), ownsHandle: true), FileAccess.Write, 1);
            Posix.RedirectToNull(0);
            Posix.Redirect(1, 2);
            Console.SetOut(Console.Error);
        }
        catch (Exception e) when (e is InvalidOperationException or IOException)
        {
            Log.Info($"cannot take over the pipes from the master: {e.Message}");
            return ExitCodes.Failure;
        }

        // The listening socket: the master passed its number; make sure it is what we expect.
        if (!int.TryParse(fdText, out int fd) || fd < 0)
            return Fail($"{ListenFdVariable}='{fdText}' is not a file descriptor number");
        if (Posix.WrapListeningTcp(fd, out Socket? listener) is string problem)
            return Fail("inherited " + problem);
        listener!.Dispose(); // only a check: the descriptor is not the wrapper's to close
        SharedCounts? counts = SharedCounts.Join(Environment.GetEnvironmentVariable(SharedCounts.Variable));
        // The settings (PREFORK_*) and the socket's number are this worker's, not for the
        // handler's child processes (another server of this kind would take them as its own).
        foreach (string variable in Environment.GetEnvironmentVariables().Keys)
            if (variable.StartsWith("PREFORK_", StringComparison.Ordinal)) Environment.SetEnvironmentVariable(variable, null);
        try
        {
            // Ours alone: a child process of the handler must not keep the port open after we exit.
            Posix.KeepFromChildren(fd);
            EnsureBlocking(fd);
        }
        catch (InvalidOperationException e)
        {
            return Fail("inherited " + e.Message);
        }

        // From now on, end-of-file on the pipe (the master is gone) ends this worker, even
        // while it is still starting (making the handler may take a while).
        new Thread(() => WatchMaster(pipeFromMaster)) { IsBackground = true, Name = "master pipe" }.Start();
        var worker = new Worker(settings, fd, index, fileLimit, counts) { toMaster = pipeToMaster };
        return worker.Serve();
    }

    /// <summary>
    /// accept() must wait (with SO_RCVTIMEO) for a connection: on a socket handed over
    /// non-blocking (systemd's NonBlocking=yes) it would return at once, and an idle worker
    /// would spin. The flag is shared by every process that holds the socket.
    /// </summary>
    private static void EnsureBlocking(int fd)
    {
        if (Posix.MakeBlocking(fd))
            Log.Info("the listening socket was non-blocking (O_NONBLOCK); made it blocking, as accept() here expects");
    }

    private static int Fail(string message)
    {
        Log.Info(message);
        return ExitCodes.BadSocket;
    }

    private int Serve()
    {
        // TERM/QUIT: stop accepting, finish what is in flight. INT: leave now. The master's own
        // signals (HUP, TTIN, TTOU, USR1, USR2) do nothing here: a terminal may send them to all.
        // A signal that comes twice (the master relays what the terminal already sent) does no harm.
        Posix.HandleSignals(settings.Signals, signal =>
        {
            if (signal == (int)Signum.SIGINT && Interlocked.Exchange(ref exiting, 1) == 0)
            {
                Log.Info("SIGINT: exiting now");
                Environment.Exit(ExitCodes.Ok);
            }
            if (signal is (int)Signum.SIGTERM or (int)Signum.SIGQUIT)
                Stop($"{Posix.NameOf(signal)}: finishing {Volatile.Read(ref inFlight)} connection(s), then exiting");
        });

        // The master's commands ("stop", "last-holder", end-of-file) come to this worker from now on;
        // any that came while it was being made are followed now.
        Attach(this);

        Posix.SetAcceptTimeout(listenFd, AcceptWake);
        if (capacity < settings.MaxConnections) Log.Info($"serving at most {capacity} connections at once: {capacityReason}");
        host.Start();
        Tell(ControlPipe.Ready);

        AcceptLoop();
        counts?.NotAccepting();
        DrainQueueThenRelease();

        // Drain: the connections already accepted get their full answer.
        var draining = Stopwatch.StartNew();
        host.Finish(settings.ShutdownTimeout, () => Volatile.Read(ref inFlight));
        while (Volatile.Read(ref inFlight) > 0 && draining.Elapsed < settings.ShutdownTimeout)
            Thread.Sleep(10);
        int left = Volatile.Read(ref inFlight);
        Log.Info(left == 0 ? "exiting" : $"exiting with {left} connection(s) unfinished after the shutdown timeout");
        // The last counts, so that the master's totals miss none of this worker's connections.
        Tell(Heartbeat());
        if (sendsFigures) Tell(metrics.Figures().ToString());
        return ExitCodes.Ok;
    }

    private void AcceptLoop()
    {
        bool warnedNoFds = false;
        while (!stopping)
        {
            // The heartbeat goes through the thread pool, which runs every handler after its
            // first await: a worker whose pool runs nothing (handlers that block all its
            // threads) falls silent, and the master replaces it; so does one whose accepting
            // thread is stuck (a handler that blocks before its first await).
            long now = Environment.TickCount64;
            if (now - lastHeartbeat >= HeartbeatMs && Interlocked.Exchange(ref heartbeatQueued, 1) == 0)
            {
                lastHeartbeat = now;
                bool figuresDue = sendsFigures && now - lastFigures >= FiguresMs;
                if (figuresDue) lastFigures = now;
                ThreadPool.UnsafeQueueUserWorkItem(_ =>
                {
                    Tell(Heartbeat());
                    if (figuresDue) Tell(metrics.Figures().ToString());
                    Volatile.Write(ref heartbeatQueued, 0);
                }, null);
            }
            // Connections accepted now would wait for a thread with no one to serve them:
            // leave them to the kernel, for another worker.
            if (PoolStalled(now))
            {
                counts?.NotAccepting();
                Thread.Sleep(100);
                continue;
            }

            // A full worker stops accepting, so the kernel hands the next connection to another.
            if (!TakeSlot()) continue;
            StepOutWhileFarAhead(now);

            int client = Posix.Accept(listenFd, out Errno error);
            if (client >= 0)
            {
                warnedNoFds = false;
                Start(client);
                continue;
            }

            slots.Release();
            switch (error)
            {
                case Errno.EAGAIN:
                    // Woke up without a connection (the accept timeout). Someone may have made the
                    // shared socket non-blocking since: then accept() no longer waits at all.
                    EnsureBlocking(listenFd);
                    break;
                case Errno.EINTR or Errno.ECONNABORTED:
                    break; // woke up without a connection (signal, client gave up)
                case Errno.EMFILE or Errno.ENFILE or Errno.ENOBUFS or Errno.ENOMEM:
                    // The kernel keeps the connection queued for another worker, or for us later.
                    if (!warnedNoFds) Log.Info($"accept: {error} (out of descriptors or memory: {Posix.OpenFileCount()} open, {inFlight} connections); pausing accepts");
                    warnedNoFds = true;
                    counts?.NotAccepting();
                    Thread.Sleep(100);
                    break;
                default:
                    Log.Info($"accept failed: {error}; stopping");
                    Stop("the listening socket is unusable");
                    break;
            }
        }
    }

    /// <summary>True while the last heartbeat has waited for the thread pool over <see cref="PoolStallMs"/>; logs when that begins and ends.</summary>
    private bool PoolStalled(long now)
    {
        bool stalled = Volatile.Read(ref heartbeatQueued) == 1 && now - lastHeartbeat > PoolStallMs;
        if (stalled != poolStalled)
        {
            poolStalled = stalled;
            Log.Info(stalled
                ? $"the thread pool has run nothing for {PoolStallMs} ms (requests blocking its threads?); not accepting until it does"
                : "the thread pool runs again; accepting");
        }
        return stalled;
    }

    private string Heartbeat() =>
        new ControlPipe.Heartbeat(Interlocked.Read(ref accepted), Volatile.Read(ref inFlight), GC.CollectionCount(0)).ToString();

    /// <summary>
    /// Waits up to <see cref="AcceptWake"/> for a free connection slot. The log says when a
    /// worker stops accepting because it is full, and why (at most every 10 s), and when it
    /// accepts again.
    /// </summary>
    private bool TakeSlot()
    {
        if (slots.Wait(0))
        {
            if (paused)
            {
                paused = false;
                Log.Info($"accepting again ({Volatile.Read(ref inFlight)} connections open)");
            }
            return true;
        }
        counts?.NotAccepting(); // full: not the least loaded, whatever it holds
        long now = Environment.TickCount64;
        if (!paused && now - lastPauseLog >= 10_000)
        {
            paused = true;
            lastPauseLog = now;
            Log.Info($"{capacity} connections open, not accepting until one closes ({capacityReason})");
        }
        return slots.Wait(AcceptWake);
    }

    /// <summary>
    /// Balancing of long-lived connections, before each accept(): says in this worker's slot that
    /// it accepts and how many connections it holds; then, while it holds more than
    /// max(<see cref="BalanceSlack"/>, a quarter of the least) above the least loaded worker that
    /// accepts, it stays out of accept(), so the kernel hands the next connection to a worker
    /// that waits there. It looks again every millisecond, for <see cref="StepOutMs"/> at most:
    /// a pool whose other workers are all busy (serving, not in accept()) never starves. Costs a
    /// few reads of shared memory when nothing is far ahead, as with short connections.
    /// </summary>
    private void StepOutWhileFarAhead(long now)
    {
        if (counts is null) return;
        long since = now;
        while (true)
        {
            int mine = Volatile.Read(ref inFlight);
            counts.Accepting(mine, now);
            int least = counts.LeastOfOthers(now);
            if (least < 0 || mine - least <= Math.Max(BalanceSlack, least / 4)) return;
            if (now - since >= StepOutMs || stopping) return;
            Thread.Sleep(1);
            now = Environment.TickCount64;
        }
    }

    /// <summary>Counts an accepted connection and starts serving it.</summary>
    private void Start(int client)
    {
        Interlocked.Increment(ref inFlight);
        if (++accepted == recycleAfter && !retireSent)
        {
            // --max-connections-per-worker: the master starts our replacement, then stops us.
            retireSent = true;
            Tell(ControlPipe.Retire);
        }
        host.Serve(client);
    }

    /// <summary>A connection has closed: its slot is free.</summary>
    private void Closed()
    {
        slots.Release();
        Interlocked.Decrement(ref inFlight);
    }

    /// <summary>
    /// Stopping for good: first serve the connections already waiting in the kernel's queue,
    /// then close this worker's descriptor of the listening socket. The last holder (or every
    /// worker, once the master is gone) serves the whole queue, within --shutdown-timeout. Any
    /// other serves what waits now, with the slots it has free now and for a tenth of
    /// --shutdown-timeout at most: the holders that stay take the rest, and the last holder,
    /// which the master names only once every other has released the socket, must not hear it
    /// too late to serve the queue before the timeout. Once the last process that holds the
    /// socket has closed it, new clients are refused at once instead of being accepted by the
    /// kernel and reset when the last worker exits. Runs on the accepting thread, after its
    /// last accept().
    /// </summary>
    private void DrainQueueThenRelease()
    {
        // The last holder keeps new clients out of the queue, so that it can serve it to its end;
        // handshakes already under way (from clients up to HandshakeGrace away) still join it.
        if (lastHolder)
        {
            Posix.StopNewConnections(listenFd);
            Thread.Sleep(HandshakeGrace);
        }
        // Replaced, or stopped by a signal while a last holder will follow: what waits now. Else
        // (the last holder, or every worker on its own once the master is gone) until it is empty.
        bool whole = serveWholeQueue;
        int queued = !whole && Posix.QueuedConnections(listenFd) is >= 0 and int now ? now : settings.Backlog;
        TimeSpan bound = whole ? settings.ShutdownTimeout : settings.ShutdownTimeout / 10;
        var limit = Stopwatch.StartNew();
        int drained = 0;
        while (drained < queued && limit.Elapsed < bound && Posix.HasPendingConnection(listenFd))
        {
            if (!slots.Wait(0))
            {
                if (!whole) break; // full: the other holders serve what waits
                host.MakeRoom(); // full, and the queue is ours to serve
                if (!slots.Wait(AcceptWake)) continue;
            }
            // Another process may take the connection first: accept() then waits at most AcceptWake.
            int client = Posix.Accept(listenFd, out _);
            if (client < 0)
            {
                slots.Release();
                continue;
            }
            drained++;
            Start(client);
        }
        Posix.ReleaseListener(listenFd);
        Tell(ControlPipe.Released);
        if (drained > 0) Log.Info($"served {drained} queued connection(s) before releasing the listening socket");
    }

    // The master's commands go to the worker once it is made (Attach); until then they wait
    // here, and end-of-file (the master is gone) ends the process at once.
    private static readonly object commandsGate = new();
    private static Worker? commanded;
    private static readonly List<string> early = [];

    /// <summary>Reads the master's pipe, from the start of the process to its end-of-file.</summary>
    private static void WatchMaster(Stream pipe)
    {
        try
        {
            using var fromMaster = new StreamReader(pipe);
            while (fromMaster.ReadLine() is string command) Command(command);
        }
        catch (IOException) { }
        Command(null);
    }

    /// <summary>A line from the master, or null for end-of-file.</summary>
    private static void Command(string? command)
    {
        lock (commandsGate)
        {
            if (commanded is Worker worker) worker.Follow(command);
            else if (command is not null) early.Add(command);
            else
            {
                // No master: no one would stop this worker, nor read that it is ready.
                Log.Info("the master is gone before this worker was ready: exiting");
                Environment.Exit(ExitCodes.Ok);
            }
        }
    }

    private static void Attach(Worker worker)
    {
        lock (commandsGate)
        {
            commanded = worker;
            foreach (string command in early) worker.Follow(command);
            early.Clear();
        }
    }

    private void Follow(string? command)
    {
        switch (command)
        {
            case ControlPipe.Stop:
                Stop("asked to stop: finishing connections, then exiting");
                break;
            case ControlPipe.LastHolder:
                Stop("asked to stop as the last holder: serving the queue, then refusing new connections", last: true, wholeQueue: true);
                break;
            case null:
                Stop("the master is gone: finishing connections, then exiting", wholeQueue: true);
                break;
        }
    }

    /// <summary>Sends one line to the master.</summary>
    private void Tell(string message) => ControlPipe.WriteLine(toMaster, message);

    private void Stop(string why, bool last = false, bool wholeQueue = false)
    {
        if (Interlocked.Exchange(ref stopRequested, 1) == 1) return;
        lastHolder = last;
        serveWholeQueue = wholeQueue;
        stopping = true;
        counts?.NotAccepting();
        Log.Info(why);
        host.BeginStop();
    }
}
