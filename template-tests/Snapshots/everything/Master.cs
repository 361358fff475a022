namespace My.Server_2;

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
internal sealed partial class Master
{
    private abstract record Event;
    private sealed record SignalArrived(int Signal) : Event;
    private sealed record ChildSaid(Process Child, string Line) : Event;   // a worker, or a new master (USR2)
    private sealed record ChildExited(Process Child) : Event;
    private sealed record OrphansMayWait : Event;                        // SIGCHLD, as PID 1

    private enum State { Running, GracefulStop, QuickStop }

    private const long BackoffFirstMs = 100;
    private const long BackoffMaxMs = 10_000;
    private const long StallMs = 500;                // the loop came back this much later than it asked: the master was not running
    private const int FailedStartsBeforeRollback = 3; // a HUP whose workers fail this often in a row is undone

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
    private readonly PidFile pidFile;
    private readonly SharedCounts? counts = SharedCounts.Create(); // the workers' open connections (balancing)

    private State state = State.Running;
    private int target;                              // how many workers: --workers, TTIN, TTOU
    private int generation;                          // the generation new workers get
    private int generationsStarted;                  // every HUP gets a new number, even after a rollback
    private long killAt;                             // when a stop stops waiting and kills
    private bool poolReadyLogged;
    private bool reloading;
    private int failedStartsInARow;                  // across indexes, reset when a worker gets ready
    private string? fatal;
    private WorkerProcess? lastHolder;               // graceful stop: the worker that releases the socket last
    private Settings? previousSettings;              // a HUP under way: what it replaced, to roll back to
    private int previousGeneration, previousTarget;
    private int generationFailures;                  // failed starts in a row of the HUP's generation
    private bool generationReady;                    // a worker of the HUP's generation has become ready

    private Master(Settings settings, IReadOnlyList<string> args, Socket listener, bool upgraded, bool systemdSocket)
    {
        this.settings = settings;
        this.args = args;
        this.listener = listener;
        this.upgraded = upgraded;
        this.systemdSocket = systemdSocket;
        listenFd = ((int)listener.SafeHandle.DangerousGetHandle()).ToString(CultureInfo.InvariantCulture);
        target = settings.Workers;
        pidFile = new PidFile(settings.PidFile); // --pid-file cannot change on HUP
        (program, programArgs) = SelfCommand();
    }

    public static int Run(Settings settings, IReadOnlyList<string> args, long fileLimit)
    {
        Socket listener;
        string origin;
        bool upgraded, systemdSocket;
        try
        {
            (listener, origin, upgraded, systemdSocket) = ListeningSocket.Open(settings);
        }
        catch (SocketException e)
        {
            Log.Info($"cannot listen on {new IPEndPoint(settings.Host, settings.Port)}: {e.Message}");
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
            master.events.Add(signal == (int)Signum.SIGCHLD ? new OrphansMayWait() : new SignalArrived(signal)));
        var local = (IPEndPoint)listener.LocalEndPoint!;
        Log.Info($"listening on {local}{origin}, starting {settings.Workers} workers " +
                 $"(signals: {(settings.Signals.Count == 0 ? "none" : string.Join(",", settings.Signals))}; " +
                 $"open files: {(fileLimit == long.MaxValue ? "unlimited" : fileLimit.ToString(CultureInfo.InvariantCulture))} per process)");
        try
        {
            if (!master.upgraded) master.pidFile.Write();
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            Log.Info($"--pid-file: cannot write '{settings.PidFile}': {e.Message}");
            return ExitCodes.Usage;
        }
        if (!master.StartMetrics())
        {
            master.pidFile.RemoveIfOurs();
            return ExitCodes.CannotListen;
        }
        try
        {
            return master.Loop();
        }
        finally
        {
            master.pidFile.RemoveIfOurs();
        }
    }

    /// <summary>The master loop: bring the pool to its size, then wait for one event and act on it.</summary>
    private int Loop()
    {
        long lastCheck = Environment.TickCount64;
        int asked = 0;
        while (true)
        {
            // Silence is judged on the heartbeats read: every event already queued is handled
            // first, and the time this master itself did not run (stopped with SIGSTOP or Ctrl+Z,
            // a paused container, starved of CPU) does not count against its workers.
            for (int queued = events.Count; queued > 0 && events.TryTake(out Event? waiting); queued--) Handle(waiting);
            long late = Environment.TickCount64 - lastCheck - asked;
            if (late > StallMs) ForgiveStall(late);

            if (state == State.Running)
            {
                ListenForMetricsWhenDue();
                KillSilentWorkers();
                CheckNewMaster();
                MaintainWorkers();
            }
            else if (workers.Count == 0)
            {
                StopMetrics();
                if (retiring) Log.Info("retired: the new master serves now");
                else Log.Info(fatal is null ? "all workers have exited; stopped" : $"stopped: {fatal}");
                return fatal is null ? ExitCodes.Ok : ExitCodes.WorkersFailed;
            }
            else if (Environment.TickCount64 >= killAt)
            {
                KillAll(Signum.SIGKILL, "shutdown timeout passed");
            }

            // Measured from here: spawning workers above is work, not a stall.
            asked = MillisecondsUntilNextDeadline();
            lastCheck = Environment.TickCount64;
            if (events.TryTake(out Event? next, asked))
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
            case ChildSaid(Process child, string line) when child == newMaster:
                NewMasterSaid(line);
                break;
            case ChildExited(Process child) when child == newMaster:
                NewMasterExited();
                break;
            case ChildSaid(Process child, string line):
                if (workers.Find(w => w.Is(child)) is { } speaker) HandleMessage(speaker, line);
                else if (RecentlyReaped(child) is { } reaped) TakeCounts(reaped, line);
                break;
            case ChildExited(Process child):
                if (workers.Find(w => w.Is(child)) is { } exited) Reap(exited);
                break;
            case OrphansMayWait:
                ReapOrphans();
                break;
            case MetricsAsked(MetricsEndpoint.Question question, var reply):
                reply.TrySetResult(AnswerMetrics(question));
                break;
            case OldMasterSaid(var line):
                OnOldMasterSaid(line);
                break;
        }
    }

    /// <summary>A line from a worker's pipe (ControlPipe.cs).</summary>
    private void HandleMessage(WorkerProcess worker, string line)
    {
        worker.LastHeartbeat = Environment.TickCount64;
        switch (line)
        {
            case ControlPipe.Ready:
                if (!worker.Ready) CountReady();
                worker.Ready = true;
                failures[worker.Index] = 0;
                failedStartsInARow = 0;
                if (worker.Generation == generation) generationReady = true;
                if (worker.Stopping) break; // of a HUP rolled back: it replaces nothing
                if (worker.Replaces is { Stopping: false } old)
                {
                    Log.Info($"worker {worker.Index} (pid {worker.Pid}) accepting; stopping pid {old.Pid} which it replaces");
                    StopWorker(old);
                }
                else if (poolReadyLogged)
                    Log.Info($"worker {worker.Index} (pid {worker.Pid}) accepting");
                CheckPoolReady();
                break;
            case ControlPipe.Retire:
                Log.Info($"worker {worker.Index} (pid {worker.Pid}) reached --max-connections-per-worker; replacing it");
                worker.Retiring = true;
                break;
            case ControlPipe.Released:
                worker.Released = true;
                TellLastHolderIfAlone();
                break;
            default:
                TakeCounts(worker, line);
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
            if (upgraded) TellOldMasterReady();
            systemd.Notify($"READY=1\nMAINPID={Environment.ProcessId}");
        }
        else if (reloading)
        {
            reloading = false;
            Log.Info($"HUP: all {serving.Count} workers replaced (pids {string.Join(" ", serving.Select(w => w.Pid))})");
            systemd.Notify("READY=1");
        }
    }

    /// <summary>A worker has exited: log how, and schedule its replacement unless stopping.</summary>
    private void Reap(WorkerProcess worker)
    {
        if (!workers.Remove(worker)) return;
        int status = worker.Close(waitForLastLines: settings.Metrics is not null);
        CountExit(worker);
        if (worker.CountsSlot is int slot) counts?.Free(slot);
        // Whatever replaces it has nothing left to stop (and holds no chain of old workers).
        foreach (WorkerProcess successor in workers.Where(w => w.Replaces == worker)) successor.Replaces = null;
        Log.Info($"worker {worker.Index} (pid {worker.Pid}) {Describe(status)}");
        if (state != State.Running) TellLastHolderIfAlone();
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

        StartFailed(worker.Index, worker.Generation, $"worker {worker.Index}, {Describe(status)} before it was ready; see its message above");
    }

    /// <summary>
    /// A worker could not be started, or exited before it was ready. While others serve, it is
    /// tried again later, waiting longer each time (100 ms, 200 ms, ... up to 10 s); a HUP whose
    /// new workers keep failing is rolled back. Only when no worker has ever become ready does
    /// the master give up.
    /// </summary>
    private void StartFailed(int index, int workerGeneration, string what)
    {
        int failed = failures[index] = failures.GetValueOrDefault(index) + 1;
        long delay = Math.Min(BackoffMaxMs, BackoffFirstMs << Math.Min(failed - 1, 20));
        startAt[index] = Environment.TickCount64 + delay;
        failedStartsInARow++;

        // No worker has ever become ready and several in a row failed: the configuration or
        // the program is broken, and retrying forever would only hide it.
        if (!poolReadyLogged && failedStartsInARow >= Math.Max(3, target) && !workers.Any(w => w.Ready))
            GiveUp($"no worker could start (the last one, {what})");
        else if (previousSettings is not null && workerGeneration == generation && !generationReady
                 && ++generationFailures >= FailedStartsBeforeRollback)
            RollBack();
        else
            Log.Info($"worker {index} failed to start; next try in {delay} ms");
    }

    /// <summary>PID 1: reap the orphans that are not our workers or our new master.</summary>
    private void ReapOrphans() =>
        Orphans.ReapAllBut(workers.Select(w => w.Pid).Append(newMaster?.Id ?? 0).ToHashSet());

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
            if (state != State.Running) return; // given up
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
        var start = new ProcessStartInfo(program);
        foreach (string arg in programArgs) start.ArgumentList.Add(arg);
        start.ArgumentList.Add("--worker");
        start.ArgumentList.Add(index.ToString(CultureInfo.InvariantCulture));
        settings.WriteTo(start.Environment);
        start.Environment[Worker.ListenFdVariable] = listenFd;
        // A worker's garbage lives for one connection: a 2 MiB first-generation budget (hex,
        // as the runtime reads it) keeps a worker near 5 MB instead of growing to the default,
        // which is as large as the CPU's cache. Set DOTNET_GCgen0size to override.
        start.Environment.TryAdd("DOTNET_GCgen0size", "200000");
        // Its slot in the connection counts (SharedCounts.cs). The block's descriptor is
        // inheritable only while this worker starts: no other child (a new master) gets it.
        int? slot = counts?.Take(start.Environment);
        if (slot is not null) Posix.Inherit(counts!.Fd);

        Process process;
        try
        {
            process = StartChild(start);
        }
        catch (Exception e) when (e is Win32Exception or IOException or InvalidOperationException)
        {
            if (slot is int unused) counts!.Free(unused);
            // The program gone or not executable, no more processes allowed (EAGAIN), no memory:
            // the workers that serve go on, and this one is tried again later.
            Log.Info($"cannot start a worker from {program}: {e.Message}");
            StartFailed(index, generation, $"worker {index}, could not be started: {e.Message}");
            return;
        }
        finally
        {
            if (slot is not null) Posix.KeepFromChildren(counts!.Fd);
        }

        var worker = new WorkerProcess(index, generation, process) { Replaces = replaces, CountsSlot = slot };
        workers.Add(worker);
        CountStart();
        Log.Info($"worker {index} (pid {worker.Pid}) started" + (replaces is null ? "" : $" to replace pid {replaces.Pid}"));
    }

    /// <summary>
    /// Starts a child (a worker, or a new master) whose standard input and output are pipes to
    /// this master: every line it writes, and its exit, become events of the loop, handled
    /// once the loop is back from what it is doing now.
    /// </summary>
    private Process StartChild(ProcessStartInfo start)
    {
        start.UseShellExecute = false;
        start.RedirectStandardInput = true;
        start.RedirectStandardOutput = true;
        var process = new Process { StartInfo = start, EnableRaisingEvents = true };
        process.OutputDataReceived += (_, line) => { if (line.Data is not null) events.Add(new ChildSaid(process, line.Data)); };
        process.Exited += (_, _) => events.Add(new ChildExited(process));
        try
        {
            process.Start();
        }
        catch
        {
            process.Dispose();
            throw;
        }
        process.BeginOutputReadLine();
        return process;
    }

    /// <summary>The workers that count towards the pool: all but those asked to stop.</summary>
    private List<WorkerProcess> Serving() => [.. workers.Where(w => !w.Stopping)];

    /// <summary>Asks one worker, through its pipe, to stop accepting, finish and exit.</summary>
    private static void StopWorker(WorkerProcess worker)
    {
        worker.Stopping = true;
        worker.Tell(ControlPipe.Stop);
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
            w.KilledAsHung = true;
            w.LastHeartbeat = long.MaxValue / 2; // once
        }
    }

    /// <summary>
    /// The loop came back <paramref name="late"/> ms later than it asked to: this master was
    /// not running (or was blocked). Its workers may have beaten all along, in lines not read
    /// yet: the clocks that judge them (and a new master, and a stop) move on by that time.
    /// </summary>
    private void ForgiveStall(long late)
    {
        long now = Environment.TickCount64;
        foreach (WorkerProcess w in workers.Where(w => w.LastHeartbeat <= now)) // not one already killed
            w.LastHeartbeat = Math.Min(now, w.LastHeartbeat + late);
        if (newMasterDeadline != long.MaxValue) newMasterDeadline += late;
        if (killAt != long.MaxValue && state != State.Running) killAt += late;
        if (late >= 1000)
            Log.Info($"this master was held up for {late / 1000.0:0.0}s (stopped, blocked or short of CPU); that time does not count against its workers");
    }

    private int MillisecondsUntilNextDeadline()
    {
        long now = Environment.TickCount64;
        long next = state == State.Running ? now + 250 : killAt; // heartbeats and backoff: 4 checks a second
        return (int)Math.Clamp(next - now, 0, 1000);
    }

    /// <summary>
    /// How to run this program again: the apphost or NativeAOT binary runs as it is;
    /// under `dotnet My.Server_2.dll` the process is the dotnet host, which needs the .dll.
    /// </summary>
    private static (string Program, string[] Args) SelfCommand()
    {
        string path = Environment.ProcessPath ?? throw new InvalidOperationException("the path of this program is unknown");
        return Path.GetFileNameWithoutExtension(path) == "dotnet"
            ? (path, [Environment.GetCommandLineArgs()[0]])
            : (path, []);
    }

    private static string Describe(int status) => status > 128 && status < 128 + 65
        ? $"was killed by {Posix.NameOf(status - 128)}"
        : $"exited with code {status}";
}
