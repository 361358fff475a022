namespace PreforkServer;

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
/// Everything happens on one thread, in <see cref="Run"/>: signal handlers and process
/// callbacks only put an event in a queue, and the loop takes one event at a time,
/// then starts whatever workers are missing (the shape of gunicorn's arbiter).
/// </summary>
internal sealed class Master
{
    private sealed class WorkerProcess(int index, Process process)
    {
        public int Index { get; } = index;
        public Process Process { get; } = process;
        public int Pid { get; } = process.Id;
        public long StartedAt { get; } = Environment.TickCount64;
        public bool Ready { get; set; }
    }

    private abstract record Event;
    private sealed record SignalArrived(int Signal) : Event;
    private sealed record WorkerReady(WorkerProcess Worker) : Event;
    private sealed record WorkerExited(WorkerProcess Worker) : Event;

    private enum State { Running, Stopping, Quitting }

    // A worker that exits within this time of starting, or before it was ready, failed to start.
    private const long StartGraceMs = 1000;
    private const long BackoffFirstMs = 100;
    private const long BackoffMaxMs = 10_000;

    private readonly Settings settings;
    private readonly Socket listener;
    private readonly BlockingCollection<Event> events = new();
    private readonly WorkerProcess?[] workers;   // by index; null while a slot waits for a worker
    private readonly int[] failures;             // failed starts in a row, per slot
    private readonly long[] startAt;             // when a slot may start its next worker (backoff)
    private readonly string program;
    private readonly string[] programArgs;

    private State state = State.Running;
    private long killAt;                         // when a stop stops waiting and kills
    private bool poolReadyLogged;
    private int failedStartsInARow;              // across slots, reset when a worker gets ready
    private string? fatal;

    private Master(Settings settings, Socket listener)
    {
        this.settings = settings;
        this.listener = listener;
        workers = new WorkerProcess?[settings.Workers];
        failures = new int[settings.Workers];
        startAt = new long[settings.Workers];
        (program, programArgs) = SelfCommand();
    }

    public static int Run(Settings settings)
    {
        Socket listener;
        try
        {
            listener = Listen(settings);
        }
        catch (SocketException e)
        {
            Log.Info($"cannot listen on {Endpoint(settings.Host, settings.Port)}: {e.Message}");
            return ExitCodes.CannotListen;
        }

        var master = new Master(settings, listener);
        using var registrations = new Registrations(Posix.HandleSignals(settings.Signals,
            signal => master.events.Add(new SignalArrived(signal))));
        var local = (IPEndPoint)listener.LocalEndPoint!;
        Log.Info($"listening on {Endpoint(local.Address, local.Port)}, starting {settings.Workers} workers " +
                 $"(signals: {(settings.Signals.Count == 0 ? "none" : string.Join(",", settings.Signals))})");
        return master.Loop();
    }

    /// <summary>The master loop: take one event, act on it, start missing workers, repeat.</summary>
    private int Loop()
    {
        while (true)
        {
            if (events.TryTake(out Event? next, MillisecondsUntilNextDeadline()))
                Handle(next);

            if (state != State.Running)
            {
                if (workers.All(w => w is null))
                {
                    Log.Info(fatal is null ? "all workers have exited; stopped" : $"stopped: {fatal}");
                    return fatal is null ? ExitCodes.Ok : ExitCodes.WorkersFailed;
                }
                if (Environment.TickCount64 >= killAt) KillAll(Signum.SIGKILL, "shutdown timeout passed");
                continue;
            }
            SpawnMissingWorkers();
        }
    }

    private void Handle(Event next)
    {
        switch (next)
        {
            case SignalArrived(int signal):
                HandleSignal(signal);
                break;
            case WorkerReady(WorkerProcess worker) when workers[worker.Index] == worker:
                worker.Ready = true;
                failures[worker.Index] = 0;
                failedStartsInARow = 0;
                if (poolReadyLogged)
                    Log.Info($"worker {worker.Index} (pid {worker.Pid}) accepting");
                else if (workers.All(w => w is { Ready: true }))
                {
                    poolReadyLogged = true;
                    Log.Info($"pool ready: {workers.Length} workers accepting " +
                             $"(pids {string.Join(" ", workers.Select(w => w!.Pid))})");
                }
                break;
            case WorkerExited(WorkerProcess worker):
                Reap(worker);
                break;
        }
    }

    private void HandleSignal(int signal)
    {
        string name = Posix.NameOf(signal);
        if (signal == (int)Signum.SIGINT || state == State.Stopping)
        {
            // INT, or a second stop signal during a graceful stop: quick shutdown.
            if (state == State.Quitting) return; // Ctrl+C twice: nothing more to do
            Log.Info($"{name}: quick shutdown, stopping {LiveWorkers().Count()} workers now");
            state = State.Quitting;
            killAt = Environment.TickCount64 + (long)settings.ShutdownTimeout.TotalMilliseconds;
            KillAll(QuickStopSignal, null);
        }
        else if (state == State.Running)
        {
            // TERM, QUIT: graceful shutdown, bounded by the shutdown timeout.
            Log.Info($"{name}: graceful shutdown, waiting up to {settings.ShutdownTimeout.TotalSeconds:0}s for workers to finish");
            state = State.Stopping;
            killAt = Environment.TickCount64 + (long)settings.ShutdownTimeout.TotalMilliseconds;
            KillAll((Signum)signal, null);
        }
    }

    /// <summary>A worker has exited: log how, and schedule its replacement unless stopping.</summary>
    private void Reap(WorkerProcess worker)
    {
        if (workers[worker.Index] != worker) return;
        workers[worker.Index] = null;
        int status = worker.Process.ExitCode;
        worker.Process.Dispose();
        Log.Info($"worker {worker.Index} (pid {worker.Pid}) {Describe(status)}");
        if (state != State.Running) return;

        long now = Environment.TickCount64;
        bool failedToStart = !worker.Ready || now - worker.StartedAt < StartGraceMs;
        if (!failedToStart)
        {
            failures[worker.Index] = 0;
            startAt[worker.Index] = now; // replace it at once
            return;
        }

        // A crash loop: wait longer before each new try (100 ms, 200 ms, ... up to 10 s).
        failures[worker.Index]++;
        long delay = Math.Min(BackoffMaxMs, BackoffFirstMs << Math.Min(failures[worker.Index] - 1, 20));
        startAt[worker.Index] = now + delay;
        failedStartsInARow++;

        // No worker has ever become ready and several in a row failed: the configuration or
        // the program is broken, and retrying forever would only hide it.
        if (!poolReadyLogged && failedStartsInARow >= Math.Max(3, workers.Length) && !workers.Any(w => w is { Ready: true }))
            GiveUp($"no worker could start (the last one, worker {worker.Index}, {Describe(status)} before it was ready; see its message above)");
        else
            Log.Info($"worker {worker.Index} failed to start; next try in {delay} ms");
    }

    private void SpawnMissingWorkers()
    {
        long now = Environment.TickCount64;
        for (int index = 0; index < workers.Length && state == State.Running; index++)
        {
            if (workers[index] is null && now >= startAt[index]) Spawn(index);
        }
    }

    /// <summary>
    /// Starts a worker: this same program, run again with --worker, inheriting the listening
    /// socket (its number in PREFORK_LISTEN_FD) and the master's settings (PREFORK_*).
    /// Its standard input and output are pipes to the master: input reaches end-of-file when
    /// the master dies, output says "ready". Standard error is shared: it is the log.
    /// </summary>
    private void Spawn(int index)
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
        // A worker's garbage lives for one connection: a 2 MiB first-generation budget (hex,
        // as the runtime reads it) keeps a worker near 5 MB instead of growing to the default,
        // which is as large as the CPU's cache (bench/README.md). Set DOTNET_GCgen0size to override.
        start.Environment.TryAdd("DOTNET_GCgen0size", "200000");
        start.Environment[Worker.ListenFdVariable] = ((int)listener.SafeHandle.DangerousGetHandle()).ToString(CultureInfo.InvariantCulture);

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

        var worker = new WorkerProcess(index, process);
        workers[index] = worker;
        process.OutputDataReceived += (_, line) =>
        {
            if (line.Data == "ready") events.Add(new WorkerReady(worker));
        };
        process.Exited += (_, _) => events.Add(new WorkerExited(worker));
        process.BeginOutputReadLine();
        Log.Info($"worker {index} (pid {worker.Pid}) started");
    }

    /// <summary>Stops for good: what is running is stopped, and the master exits with code 4.</summary>
    private void GiveUp(string reason)
    {
        fatal ??= reason;
        Log.Info(reason);
        state = State.Quitting;
        killAt = Environment.TickCount64 + (long)settings.ShutdownTimeout.TotalMilliseconds;
        KillAll(QuickStopSignal, null);
    }

    // Workers leave at once on INT, if they handle it; if not (--signals without INT), they may
    // even ignore it (a script's `&` does that), so only SIGKILL is sure to stop them.
    private Signum QuickStopSignal => settings.Signals.Contains("INT") ? Signum.SIGINT : Signum.SIGKILL;

    private void KillAll(Signum signal, string? why)
    {
        if (why is not null) Log.Info($"{why}: sending {signal} to {LiveWorkers().Count()} workers");
        foreach (WorkerProcess worker in LiveWorkers()) Posix.Kill(worker.Pid, (int)signal);
        if (signal == Signum.SIGKILL) killAt = long.MaxValue; // once is enough
    }

    private IEnumerable<WorkerProcess> LiveWorkers() => workers.OfType<WorkerProcess>();

    private int MillisecondsUntilNextDeadline()
    {
        long now = Environment.TickCount64;
        long next = state == State.Running
            ? Enumerable.Range(0, workers.Length).Where(i => workers[i] is null).Select(i => startAt[i]).DefaultIfEmpty(long.MaxValue).Min()
            : killAt;
        return (int)Math.Clamp(next - now, 0, 1000);
    }

    private static Socket Listen(Settings settings)
    {
        var socket = new Socket(settings.Host.AddressFamily, SocketType.Stream, ProtocolType.Tcp);
        if (settings.Host.AddressFamily == AddressFamily.InterNetworkV6 && settings.Host.Equals(IPAddress.IPv6Any))
            socket.DualMode = true; // "::" takes IPv4 connections too
        socket.Bind(new IPEndPoint(settings.Host, settings.Port));
        socket.Listen(settings.Backlog);
        // .NET opens every descriptor close-on-exec; this one, alone, must reach the workers.
        Posix.Inherit((int)socket.SafeHandle.DangerousGetHandle());
        return socket;
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

    /// <summary>Keeps the signal registrations alive for as long as the master runs.</summary>
    private sealed class Registrations(List<System.Runtime.InteropServices.PosixSignalRegistration> list) : IDisposable
    {
        public void Dispose() => list.ForEach(r => r.Dispose());
    }
}
