namespace MyAotServer;

using System;
using System.Collections.Concurrent;
using System.Collections.Generic;
using System.ComponentModel;
using System.Diagnostics;
using System.Globalization;
using System.IO;
using System.Linq;
using System.Net;
using System.Net.Sockets;
using Mono.Unix.Native;

/// <summary>
/// The master process: it owns the listening socket, starts the workers, relays signals
/// to them and keeps their number at --workers. It never accepts a connection itself.
///
/// Everything happens on one thread, in <see cref="Loop"/>: signal handlers and process
/// callbacks only put an event in a queue, and the loop takes one event at a time, then
/// checks heartbeats and starts or stops whatever workers are missing or surplus (the shape
/// of gunicorn's arbiter and unicorn's master loop).
/// </summary>
internal sealed class Master
{
    /// <summary>
    /// A worker as the master sees it. It owns both ends of the worker's pipes: once the
    /// worker has exited and been reaped, <see cref="Close"/> frees them, and telling it
    /// anything is a no-op (its process object is gone).
    /// </summary>
    private sealed class WorkerProcess(int index, int generation, Process process)
    {
        private readonly StreamWriter control = process.StandardInput;

        public int Index { get; } = index;
        public int Generation { get; } = generation;   // bumped by HUP: older ones are replaced
        public int Pid { get; } = process.Id;
        public long StartedAt { get; } = Environment.TickCount64;
        public long LastHeartbeat { get; set; } = Environment.TickCount64;
        public bool Ready { get; set; }
        public bool Stopping { get; set; }             // asked to stop; no longer counts
        public bool Retiring { get; set; }             // served its --max-connections-per-worker
        public long Accepted { get; set; }
        public int InFlight { get; set; }
        public int Collections { get; set; }            // garbage collections so far
        public WorkerProcess? Replaces { get; set; }   // the worker this one takes over from, until it exits
        public bool Reaped { get; private set; }        // exited, and its exit handled
        public bool Released { get; set; }              // has closed its descriptor of the listening socket

        /// <summary>Writes a line to the worker's pipe; one that has exited no longer reads it.</summary>
        public void Tell(string line)
        {
            if (Reaped) return;
            try
            {
                control.WriteLine(line);
                control.Flush();
            }
            catch (IOException) { } // exiting: its exit is on the way
        }

        /// <summary>The worker has exited: its exit status, after which every descriptor for it is closed.</summary>
        public int Close()
        {
            int status = process.ExitCode;
            Reaped = true;
            // Process.Dispose leaves a redirected standard input open once it has been used:
            // close it here, or every replaced worker leaks a pipe.
            try { control.Dispose(); } catch (IOException) { }
            process.Dispose();
            return status;
        }
    }

    private abstract record Event;
    private sealed record SignalArrived(int Signal) : Event;
    private sealed record WorkerSaid(WorkerProcess Worker, string Line) : Event;
    private sealed record WorkerExited(WorkerProcess Worker) : Event;
    private sealed record NewMasterSaid(Process Master, string Line) : Event;
    private sealed record NewMasterExited(Process Master) : Event;
    private sealed record ChildExited : Event;

    private enum State { Running, Stopping, Quitting }

    /// <summary>The fd of a listening socket handed over by an old master (USR2).</summary>
    public const string UpgradeFdVariable = "PREFORK_UPGRADE_FD";

    /// <summary>Set, with the fd, when systemd holds that socket too (socket activation).</summary>
    public const string UpgradeSystemdVariable = "PREFORK_UPGRADE_SYSTEMD_SOCKET";

    private const long BackoffFirstMs = 100;
    private const long BackoffMaxMs = 10_000;

    private Settings settings;
    private readonly IReadOnlyList<string> args;
    private readonly Socket listener;
    private readonly string listenFd;
    private bool listenerReleased;
    private readonly bool upgraded;                  // started by an old master's USR2
    private readonly bool systemdSocket;             // systemd holds the socket too, and listens on after we stop
    private readonly BlockingCollection<Event> events = new();
    private readonly List<WorkerProcess> workers = [];
    private readonly Dictionary<int, int> failures = [];   // failed starts in a row, per index
    private readonly Dictionary<int, long> startAt = [];   // backoff: when an index may start again
    private readonly string program;
    private readonly string[] programArgs;
    private readonly SystemdNotifier systemd = new();

    private State state = State.Running;
    private int target;                              // how many workers: --workers, TTIN, TTOU
    private int generation;
    private long killAt;                             // when a stop stops waiting and kills
    private bool poolReadyLogged;
    private bool reloading;
    private int failedStartsInARow;                  // across indexes, reset when a worker gets ready
    private string? fatal;
    private Process? newMaster;                      // USR2: the new master, until it is ready
    private long newMasterDeadline;
    private bool retiring;                           // a new master took over: stop and leave
    private WorkerProcess? keeper;                   // graceful stop: the worker that releases the socket last

    private Master(Settings settings, IReadOnlyList<string> args, Socket listener, bool upgraded, bool systemdSocket)
    {
        this.settings = settings;
        this.args = args;
        this.listener = listener;
        this.upgraded = upgraded;
        this.systemdSocket = systemdSocket;
        listenFd = ((int)listener.SafeHandle.DangerousGetHandle()).ToString(CultureInfo.InvariantCulture);
        target = settings.Workers;
        (program, programArgs) = SelfCommand();
    }

    public static int Run(Settings settings, IReadOnlyList<string> args, long fileLimit)
    {
        Socket listener;
        string origin;
        bool upgraded, systemdSocket;
        try
        {
            (listener, origin, upgraded, systemdSocket) = Listen(settings);
        }
        catch (SocketException e)
        {
            Log.Info($"cannot listen on {Endpoint(settings.Host, settings.Port)}: {e.Message}");
            return ExitCodes.CannotListen;
        }
        catch (InvalidOperationException e)
        {
            Log.Info(e.Message);
            return ExitCodes.CannotListen;
        }

        var master = new Master(settings, args, listener, upgraded, systemdSocket);
        var signals = settings.Signals.ToList();
        if (Environment.ProcessId == 1) signals.Add("CHLD"); // PID 1 in a container: reap orphans too
        Posix.HandleSignals(signals, signal =>
            master.events.Add(signal == (int)Signum.SIGCHLD ? new ChildExited() : new SignalArrived(signal)));
        var local = (IPEndPoint)listener.LocalEndPoint!;
        Log.Info($"listening on {Endpoint(local.Address, local.Port)}{origin}, starting {settings.Workers} workers " +
                 $"(signals: {(settings.Signals.Count == 0 ? "none" : string.Join(",", settings.Signals))}; " +
                 $"open files: {(fileLimit == long.MaxValue ? "unlimited" : fileLimit.ToString(CultureInfo.InvariantCulture))} per process)");
        try
        {
            if (!master.upgraded) master.WritePidFile();
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            Log.Info($"--pid-file: cannot write '{settings.PidFile}': {e.Message}");
            return ExitCodes.Usage;
        }
        try
        {
            return master.Loop();
        }
        finally
        {
            master.RemovePidFile();
        }
    }

    /// <summary>The master loop: bring the pool to its size, then wait for one event and act on it.</summary>
    private int Loop()
    {
        while (true)
        {
            if (state == State.Running)
            {
                KillSilentWorkers();
                CheckNewMaster();
                MaintainWorkers();
            }
            else if (workers.Count == 0)
            {
                if (retiring) Log.Info("retired: the new master serves now");
                else Log.Info(fatal is null ? "all workers have exited; stopped" : $"stopped: {fatal}");
                return fatal is null ? ExitCodes.Ok : ExitCodes.WorkersFailed;
            }
            else if (Environment.TickCount64 >= killAt)
            {
                KillAll(Signum.SIGKILL, "shutdown timeout passed");
            }

            if (events.TryTake(out Event? next, MillisecondsUntilNextDeadline()))
                Handle(next);
        }
    }

    private void Handle(Event next)
    {
        switch (next)
        {
            case SignalArrived(int signal):
                HandleSignal(signal);
                break;
            case WorkerSaid(WorkerProcess worker, string line):
                HandleMessage(worker, line);
                break;
            case WorkerExited(WorkerProcess worker):
                Reap(worker);
                break;
            case NewMasterSaid(Process master, "ready") when master == newMaster:
                Log.Info($"USR2: new master {master.Id} is ready; stopping this master's workers");
                newMaster = null;
                retiring = true;
                BeginStop(graceful: true);
                break;
            case NewMasterExited(Process master) when master == newMaster:
                Log.Info($"USR2: new master {master.Id} exited with code {master.ExitCode} before it was ready; this master keeps serving");
                newMaster = null;
                master.StandardInput.Dispose(); // Dispose alone would leave this pipe open
                master.Dispose();
                systemd.Notify($"READY=1\nMAINPID={Environment.ProcessId}");
                WritePidFile();
                break;
            case ChildExited:
                ReapOrphans();
                break;
        }
    }

    private void HandleSignal(int signal)
    {
        string name = Posix.NameOf(signal);
        switch ((Signum)signal)
        {
            case Signum.SIGINT:
            case Signum.SIGTERM or Signum.SIGQUIT when state == State.Stopping:
                // INT, or a second stop signal during a graceful stop: quick shutdown.
                if (state == State.Quitting) return; // Ctrl+C twice: nothing more to do
                Log.Info($"{name}: quick shutdown, stopping {workers.Count} workers now");
                BeginStop(graceful: false);
                break;
            case Signum.SIGTERM or Signum.SIGQUIT:
                if (state != State.Running) return;
                Log.Info($"{name}: graceful shutdown, waiting up to {settings.ShutdownTimeout.TotalSeconds:0}s for workers to finish");
                BeginStop(graceful: true, (Signum)signal);
                break;
            case Signum.SIGHUP when state == State.Running:
                Reload();
                break;
            case Signum.SIGTTIN when state == State.Running:
                if (target < 1024) target++;
                Log.Info($"TTIN: {target} workers");
                break;
            case Signum.SIGTTOU when state == State.Running:
                if (target > 1) target--;
                Log.Info($"TTOU: {target} workers");
                break;
            case Signum.SIGUSR1:
                LogStatistics();
                break;
            case Signum.SIGUSR2 when state == State.Running:
                Upgrade();
                break;
        }
    }

    /// <summary>A line from a worker's pipe: "ready", "hb ACCEPTED IN_FLIGHT COLLECTIONS", "retire" or "released" (the listening socket).</summary>
    private void HandleMessage(WorkerProcess worker, string line)
    {
        if (!workers.Contains(worker)) return;
        worker.LastHeartbeat = Environment.TickCount64;
        string[] words = line.Split(' ');
        switch (words[0])
        {
            case "ready":
                worker.Ready = true;
                failures[worker.Index] = 0;
                failedStartsInARow = 0;
                if (worker.Replaces is { Stopping: false } old)
                {
                    Log.Info($"worker {worker.Index} (pid {worker.Pid}) accepting; stopping pid {old.Pid} which it replaces");
                    StopWorker(old);
                }
                else if (poolReadyLogged)
                    Log.Info($"worker {worker.Index} (pid {worker.Pid}) accepting");
                CheckPoolReady();
                break;
            case "hb" when words.Length == 4:
                worker.Accepted = long.Parse(words[1], CultureInfo.InvariantCulture);
                worker.InFlight = int.Parse(words[2], CultureInfo.InvariantCulture);
                worker.Collections = int.Parse(words[3], CultureInfo.InvariantCulture);
                break;
            case "retire":
                Log.Info($"worker {worker.Index} (pid {worker.Pid}) reached --max-connections-per-worker; replacing it");
                worker.Retiring = true;
                break;
            case "released":
                worker.Released = true;
                TellKeeperIfLast();
                break;
        }
    }

    /// <summary>Announces, once, that all workers accept; and again after each HUP.</summary>
    private void CheckPoolReady()
    {
        List<WorkerProcess> serving = Serving();
        // A worker that has asked to retire (recycling) still accepts until its replacement does:
        // under heavy recycling some worker always is, and the pool is still complete.
        bool complete = serving.Count >= target && serving.All(w => w.Ready && w.Generation == generation);
        if (!complete) return;
        if (!poolReadyLogged)
        {
            poolReadyLogged = true;
            Log.Info($"pool ready: {serving.Count} workers accepting (pids {string.Join(" ", serving.Select(w => w.Pid))})");
            if (upgraded)
            {
                WritePidFile();
                TellOldMaster("ready");
            }
            systemd.Notify($"READY=1\nMAINPID={Environment.ProcessId}");
        }
        else if (reloading)
        {
            reloading = false;
            Log.Info($"HUP: all {serving.Count} workers replaced (pids {string.Join(" ", serving.Select(w => w.Pid))})");
            systemd.Notify("READY=1");
        }
    }

    /// <summary>HUP: read the configuration again, then replace the workers one at a time.</summary>
    private void Reload()
    {
        Settings reloaded;
        try
        {
            reloaded = Settings.Parse(args, Environment.GetEnvironmentVariables());
        }
        catch (UsageException e)
        {
            Log.Info($"HUP: configuration refused, keeping the running one: {e.Message}");
            return;
        }
        foreach (string name in settings.Differences(reloaded).Intersect(Settings.FixedOnReload))
            Log.Info($"HUP: --{name} cannot change while running (it needs a restart); keeping it");
        settings = settings.KeepFixed(reloaded);
        target = settings.Workers;
        generation++;
        reloading = true;
        systemd.Notify($"RELOADING=1\nMONOTONIC_USEC={Stopwatch.GetTimestamp() / (Stopwatch.Frequency / 1_000_000)}");
        Log.Info($"HUP: configuration reloaded; replacing {Serving().Count} workers one at a time");
    }

    /// <summary>USR2: start a new master from the program on disk, on the same socket.</summary>
    private void Upgrade()
    {
        if (newMaster is not null)
        {
            Log.Info($"USR2: an upgrade to master {newMaster.Id} is already under way");
            return;
        }
        var start = new ProcessStartInfo(program)
        {
            UseShellExecute = false,
            RedirectStandardInput = true,   // reaches end-of-file when this master exits; unused
            RedirectStandardOutput = true,  // the new master says "ready" here
        };
        foreach (string arg in programArgs.Concat(args)) start.ArgumentList.Add(arg);
        start.Environment[UpgradeFdVariable] = listenFd;
        if (systemdSocket) start.Environment[UpgradeSystemdVariable] = "1";
        if (systemd.Path is not null) start.Environment["NOTIFY_SOCKET"] = systemd.Path; // it reports READY=1 and MAINPID
        var process = new Process { StartInfo = start, EnableRaisingEvents = true };
        try
        {
            process.Start();
        }
        catch (Exception e) when (e is Win32Exception or IOException)
        {
            Log.Info($"USR2: cannot start a new master from {program}: {e.Message}");
            return;
        }
        newMaster = process;
        newMasterDeadline = Environment.TickCount64 + (long)settings.UpgradeTimeout.TotalMilliseconds;
        process.OutputDataReceived += (_, line) => { if (line.Data is not null) events.Add(new NewMasterSaid(process, line.Data)); };
        process.Exited += (_, _) => events.Add(new NewMasterExited(process));
        process.BeginOutputReadLine();
        Log.Info($"USR2: started new master {process.Id} from {program}; waiting up to {settings.UpgradeTimeout.TotalSeconds:0}s for its workers");
    }

    private void CheckNewMaster()
    {
        if (newMaster is null || Environment.TickCount64 < newMasterDeadline) return;
        Log.Info($"USR2: new master {newMaster.Id} was not ready within the upgrade timeout; killing it, this master keeps serving");
        Posix.Kill(newMaster.Id, (int)Signum.SIGKILL); // its workers see their pipe close and leave
        // NewMasterExited then restores the pid file and tells systemd who the main process is.
        newMasterDeadline = long.MaxValue;
    }

    private void LogStatistics()
    {
        long now = Environment.TickCount64;
        Log.Info($"USR1: {workers.Count} workers (target {target}), generation {generation}");
        foreach (WorkerProcess w in workers.OrderBy(w => w.Index))
        {
            Log.Info($"worker {w.Index} pid {w.Pid}: age {(now - w.StartedAt) / 1000.0:0.0}s, " +
                     $"accepted {w.Accepted}, in flight {w.InFlight}, garbage collections {w.Collections}, " +
                     $"last heartbeat {(now - w.LastHeartbeat) / 1000.0:0.0}s ago" +
                     (w.Stopping ? ", stopping" : w.Ready ? "" : ", starting"));
        }
    }

    /// <summary>A worker has exited: log how, and schedule its replacement unless stopping.</summary>
    private void Reap(WorkerProcess worker)
    {
        if (!workers.Remove(worker)) return;
        int status = worker.Close();
        // Whatever replaces it has nothing left to stop (and holds no chain of old workers).
        foreach (WorkerProcess successor in workers.Where(w => w.Replaces == worker)) successor.Replaces = null;
        Log.Info($"worker {worker.Index} (pid {worker.Pid}) {Describe(status)}");
        if (state != State.Running) TellKeeperIfLast();
        if (state != State.Running || worker.Stopping) return;

        // A worker that had started accepting is replaced at once, whatever ended it; one that
        // exits before it is ready failed to start, and repeated failures back off.
        long now = Environment.TickCount64;
        if (worker.Ready)
        {
            failures[worker.Index] = 0;
            startAt[worker.Index] = now; // replace it at once
            return;
        }

        // A crash loop: wait longer before each new try (100 ms, 200 ms, ... up to 10 s).
        int failed = failures[worker.Index] = failures.GetValueOrDefault(worker.Index) + 1;
        long delay = Math.Min(BackoffMaxMs, BackoffFirstMs << Math.Min(failed - 1, 20));
        startAt[worker.Index] = now + delay;
        failedStartsInARow++;

        // No worker has ever become ready and several in a row failed: the configuration or
        // the program is broken, and retrying forever would only hide it.
        if (!poolReadyLogged && failedStartsInARow >= Math.Max(3, target) && !workers.Any(w => w.Ready))
            GiveUp($"no worker could start (the last one, worker {worker.Index}, {Describe(status)} before it was ready; see its message above)");
        else
            Log.Info($"worker {worker.Index} failed to start; next try in {delay} ms");
    }

    /// <summary>
    /// Brings the pool to its size: starts the missing indexes, stops the surplus, and replaces
    /// one at a time the workers of an older generation (HUP) or that asked to retire.
    /// A replacement starts first; the worker it replaces stops when it is ready.
    /// </summary>
    private void MaintainWorkers()
    {
        long now = Environment.TickCount64;
        List<WorkerProcess> serving = Serving();

        foreach (WorkerProcess surplus in serving.Where(w => w.Index >= target))
        {
            Log.Info($"worker {surplus.Index} (pid {surplus.Pid}) is surplus; stopping it");
            StopWorker(surplus);
        }

        for (int index = 0; index < target; index++)
        {
            if (!serving.Any(w => w.Index == index) && now >= startAt.GetValueOrDefault(index))
                Spawn(index, replaces: null);
        }

        bool replacing = serving.Any(w => w.Replaces is { Stopping: false });
        WorkerProcess? due = serving
            .Where(w => w.Index < target && w.Ready && (w.Generation < generation || w.Retiring))
            .Where(w => !serving.Any(r => r.Replaces == w))
            .OrderBy(w => w.Generation).ThenBy(w => w.Index)
            .FirstOrDefault();
        if (!replacing && due is not null && now >= startAt.GetValueOrDefault(due.Index))
            Spawn(due.Index, replaces: due);
    }

    /// <summary>
    /// Starts a worker: this same program, run again with --worker N, inheriting the listening
    /// socket (its number in PREFORK_LISTEN_FD) and the master's settings (PREFORK_*).
    /// Its standard input and output are pipes to the master: input carries "stop" and reaches
    /// end-of-file when the master dies; output carries "ready", heartbeats and "retire".
    /// Standard error is shared: it is the log.
    /// </summary>
    private void Spawn(int index, WorkerProcess? replaces)
    {
        var start = new ProcessStartInfo(program)
        {
            UseShellExecute = false,
            RedirectStandardInput = true,
            RedirectStandardOutput = true,
        };
        foreach (string arg in programArgs) start.ArgumentList.Add(arg);
        start.ArgumentList.Add("--worker");
        start.ArgumentList.Add(index.ToString(CultureInfo.InvariantCulture));
        settings.WriteTo(start.Environment);
        start.Environment[Worker.ListenFdVariable] = listenFd;
        // A worker's garbage lives for one connection: a 2 MiB first-generation budget (hex,
        // as the runtime reads it) keeps a worker near 5 MB instead of growing to the default,
        // which is as large as the CPU's cache (bench/README.md). Set DOTNET_GCgen0size to override.
        start.Environment.TryAdd("DOTNET_GCgen0size", "200000");

        var process = new Process { StartInfo = start, EnableRaisingEvents = true };
        try
        {
            process.Start();
        }
        catch (Exception e) when (e is Win32Exception or IOException or InvalidOperationException)
        {
            process.Dispose();
            GiveUp($"cannot start a worker from {program}: {e.Message}");
            return;
        }

        var worker = new WorkerProcess(index, generation, process) { Replaces = replaces };
        workers.Add(worker);
        process.OutputDataReceived += (_, line) =>
        {
            if (line.Data is not null) events.Add(new WorkerSaid(worker, line.Data));
        };
        process.Exited += (_, _) => events.Add(new WorkerExited(worker));
        process.BeginOutputReadLine();
        Log.Info($"worker {index} (pid {worker.Pid}) started" + (replaces is null ? "" : $" to replace pid {replaces.Pid}"));
    }

    /// <summary>The workers that count towards the pool: all but those asked to stop.</summary>
    private List<WorkerProcess> Serving() => [.. workers.Where(w => !w.Stopping)];

    /// <summary>Asks one worker, through its pipe, to stop accepting, finish and exit.</summary>
    private static void StopWorker(WorkerProcess worker)
    {
        worker.Stopping = true;
        worker.Tell("stop");
    }

    /// <summary>Hung workers: one silent for --worker-timeout is killed; Reap replaces it.</summary>
    private void KillSilentWorkers()
    {
        long now = Environment.TickCount64;
        // A stopping worker no longer accepts, so it no longer beats: it gets the shutdown timeout too.
        foreach (WorkerProcess w in workers.Where(w => now - w.LastHeartbeat >
                     (settings.WorkerTimeout + (w.Stopping ? settings.ShutdownTimeout : TimeSpan.Zero)).TotalMilliseconds))
        {
            Log.Info($"worker {w.Index} (pid {w.Pid}) silent for {(now - w.LastHeartbeat) / 1000}s (--worker-timeout {settings.WorkerTimeout.TotalSeconds:0}s); killing it");
            Posix.Kill(w.Pid, (int)Signum.SIGKILL);
            w.LastHeartbeat = long.MaxValue / 2; // once
        }
    }

    private void BeginStop(bool graceful, Signum relay = Signum.SIGTERM)
    {
        state = graceful ? State.Stopping : State.Quitting;
        killAt = Environment.TickCount64 + (long)settings.ShutdownTimeout.TotalMilliseconds;
        ReleaseListener(); // no more workers will start: the workers' own descriptors are the last
        if (!retiring) systemd.Notify("STOPPING=1");
        if (graceful)
        {
            // When the whole server stops (not a USR2 hand-over, not a socket that systemd keeps
            // listening on), one worker keeps accepting while the others serve their share of the
            // queue and release the socket; then it is told it is the last holder (TellKeeperIfLast).
            keeper = retiring || newMaster is not null || systemdSocket ? null : workers.FirstOrDefault(w => w.Ready);
            // Relay the signal; a worker that does not handle it (--signals) is asked over its pipe.
            bool handled = settings.Signals.Contains(relay.ToString()[3..]);
            foreach (WorkerProcess worker in workers)
            {
                if (worker == keeper) continue;
                if (!handled) StopWorker(worker);
                else
                {
                    worker.Stopping = true;
                    Posix.Kill(worker.Pid, (int)relay);
                }
            }
        }
        else
        {
            keeper = null;
            KillAll(QuickStopSignal, null);
        }
        TellKeeperIfLast();
    }

    /// <summary>
    /// A graceful stop of the whole server: once every other worker has released the listening
    /// socket, the keeper is its last holder. It holds back new connections, serves the queue to
    /// its end and releases the socket, so nothing is left in the queue to reset, and the
    /// clients that come after are refused at once.
    /// </summary>
    private void TellKeeperIfLast()
    {
        if (keeper is null || workers.Any(w => w != keeper && !w.Released)) return;
        if (!keeper.Reaped)
        {
            keeper.Stopping = true;
            keeper.Tell("last");
        }
        keeper = null;
    }

    /// <summary>
    /// Closes the master's descriptor of the listening socket (Posix.ReleaseListener), once it
    /// will start no more workers. The workers keep theirs until they have served their queue,
    /// a new master (USR2) keeps its own.
    /// </summary>
    private void ReleaseListener()
    {
        if (listenerReleased) return;
        listenerReleased = true;
        Posix.ReleaseListener(int.Parse(listenFd, CultureInfo.InvariantCulture));
        listener.SafeHandle.SetHandleAsInvalid(); // closed above: the Socket must never close that number again
    }

    /// <summary>Stops for good: what is running is stopped, and the master exits with code 4.</summary>
    private void GiveUp(string reason)
    {
        fatal ??= reason;
        Log.Info(reason);
        BeginStop(graceful: false);
    }

    // Workers leave at once on INT, if they handle it; if not (--signals without INT), they may
    // even ignore it (a script's `&` does that), so only SIGKILL is sure to stop them.
    private Signum QuickStopSignal => settings.Signals.Contains("INT") ? Signum.SIGINT : Signum.SIGKILL;

    private void KillAll(Signum signal, string? why)
    {
        if (why is not null) Log.Info($"{why}: sending {signal} to {workers.Count} workers");
        foreach (WorkerProcess worker in workers) Posix.Kill(worker.Pid, (int)signal);
        if (signal == Signum.SIGKILL) killAt = long.MaxValue; // once is enough
    }

    /// <summary>PID 1 in a container inherits orphans; reap those that are not our workers.</summary>
    private void ReapOrphans()
    {
        var known = workers.Select(w => w.Pid).Append(newMaster?.Id ?? 0).ToHashSet();
        foreach (int pid in ZombieChildren().Where(pid => !known.Contains(pid)))
            Syscall.waitpid(pid, out _, WaitOptions.WNOHANG);
    }

    private static IEnumerable<int> ZombieChildren()
    {
        int self = Environment.ProcessId;
        foreach (string dir in Directory.EnumerateDirectories("/proc"))
        {
            if (!int.TryParse(Path.GetFileName(dir), out int pid)) continue;
            string stat;
            try { stat = File.ReadAllText(Path.Combine(dir, "stat")); }
            catch (IOException) { continue; }
            string[] fields = stat[(stat.LastIndexOf(')') + 2)..].Split(' ');
            if (fields[0] == "Z" && fields[1] == self.ToString(CultureInfo.InvariantCulture)) yield return pid;
        }
    }

    private int MillisecondsUntilNextDeadline()
    {
        long now = Environment.TickCount64;
        long next = state == State.Running ? now + 250 : killAt; // heartbeats and backoff: 4 checks a second
        return (int)Math.Clamp(next - now, 0, 1000);
    }

    /// <summary>
    /// The listening socket: handed over by systemd (LISTEN_FDS, socket activation) or by an
    /// old master (USR2), else bound here. Returns it and where it came from, for the log.
    /// </summary>
    private static (Socket Socket, string Origin, bool Upgraded, bool SystemdSocket) Listen(Settings settings)
    {
        string? upgradeFd = Environment.GetEnvironmentVariable(UpgradeFdVariable);
        if (upgradeFd is not null)
        {
            bool systemdSocket = Environment.GetEnvironmentVariable(UpgradeSystemdVariable) is not null;
            Environment.SetEnvironmentVariable(UpgradeFdVariable, null);
            Environment.SetEnvironmentVariable(UpgradeSystemdVariable, null);
            return (Inherited(int.Parse(upgradeFd, CultureInfo.InvariantCulture), "the old master"), " (socket from the old master, USR2)", true, systemdSocket);
        }
        if (Environment.GetEnvironmentVariable("LISTEN_PID") == Environment.ProcessId.ToString(CultureInfo.InvariantCulture)
            && Environment.GetEnvironmentVariable("LISTEN_FDS") is string count)
        {
            foreach (string name in new[] { "LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES" })
                Environment.SetEnvironmentVariable(name, null);
            if (count != "1") throw new InvalidOperationException($"systemd passed LISTEN_FDS={count} sockets; this server takes exactly one");
            return (Inherited(3, "systemd"), " (socket from systemd)", false, true);
        }

        var socket = new Socket(settings.Host.AddressFamily, SocketType.Stream, ProtocolType.Tcp);
        if (settings.Host.AddressFamily == AddressFamily.InterNetworkV6 && settings.Host.Equals(IPAddress.IPv6Any))
            socket.DualMode = true; // "::" takes IPv4 connections too
        socket.Bind(new IPEndPoint(settings.Host, settings.Port));
        socket.Listen(settings.Backlog);
        // .NET opens every descriptor close-on-exec; this one, alone, must reach the workers.
        Posix.Inherit((int)socket.SafeHandle.DangerousGetHandle());
        return (socket, "", false, false);
    }

    /// <summary>A listening TCP socket received from systemd or an old master; never closed here.</summary>
    private static Socket Inherited(int fd, string from)
    {
        if (Posix.WrapListeningTcp(fd, out Socket? socket) is string problem)
            throw new InvalidOperationException($"the socket from {from}: {problem}");
        Posix.Inherit(fd);
        return socket!;
    }

    /// <summary>Tells the master that started this one (USR2) that the new pool is ready.</summary>
    private static void TellOldMaster(string message)
    {
        try
        {
            using Stream toOld = Console.OpenStandardOutput();
            toOld.Write(System.Text.Encoding.ASCII.GetBytes(message + "\n"));
        }
        catch (IOException) { }
    }

    private void WritePidFile()
    {
        if (settings.PidFile.Length == 0) return;
        string temporary = settings.PidFile + ".tmp";
        File.WriteAllText(temporary, Environment.ProcessId.ToString(CultureInfo.InvariantCulture) + "\n");
        File.Move(temporary, settings.PidFile, overwrite: true); // atomic: readers never see half a file
    }

    private void RemovePidFile()
    {
        try
        {
            if (settings.PidFile.Length > 0 && File.ReadAllText(settings.PidFile).Trim() == Environment.ProcessId.ToString(CultureInfo.InvariantCulture))
                File.Delete(settings.PidFile);
        }
        catch (IOException) { }
    }

    /// <summary>
    /// How to run this program again: the apphost or NativeAOT binary runs as it is;
    /// under `dotnet MyServer.dll` the process is the dotnet host, which needs the .dll.
    /// </summary>
    private static (string Program, string[] Args) SelfCommand()
    {
        string path = Environment.ProcessPath ?? throw new InvalidOperationException("the path of this program is unknown");
        return Path.GetFileNameWithoutExtension(path) == "dotnet"
            ? (path, [Environment.GetCommandLineArgs()[0]])
            : (path, []);
    }

    private static string Endpoint(IPAddress address, int port) => new IPEndPoint(address, port).ToString();

    private static string Describe(int status) => status > 128 && status < 128 + 65
        ? $"was killed by {Posix.NameOf(status - 128)}"
        : $"exited with code {status}";
}
