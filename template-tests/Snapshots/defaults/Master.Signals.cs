namespace MyServer;

using System;
using System.Diagnostics;
using System.IO;
using System.Linq;
using Mono.Unix.Native;

/// <summary>
/// What the master does on each signal of --signals (the table in docs/operations.md): the handlers
/// only queue it, and the loop calls <see cref="HandleSignal"/>, one at a time.
/// </summary>
internal sealed partial class Master
{
    private void HandleSignal(int signal)
    {
        string name = Posix.NameOf(signal);
        switch ((Signum)signal)
        {
            case Signum.SIGINT:
            case Signum.SIGTERM or Signum.SIGQUIT when state == State.GracefulStop:
                // INT, or a second stop signal during a graceful stop: quick shutdown.
                if (state == State.QuickStop) return; // Ctrl+C twice: nothing more to do
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
        // New workers run the program on disk: one that is gone or cannot be run (a deployment
        // under way) would only make them fail, one after the other.
        if (CannotRun() is string problem)
        {
            Log.Info($"HUP: refused, keeping the running configuration and workers: {problem}");
            return;
        }
        foreach (string name in settings.Differences(reloaded).Intersect(Settings.FixedOnReload))
            Log.Info($"HUP: --{name} cannot change while running (it needs a restart); keeping it");
        // What to go back to if the new workers cannot start (RollBack). A HUP during a HUP
        // replaces what the first one started: the settings of the workers still serving count.
        if (previousSettings is null || generationReady)
            (previousSettings, previousGeneration, previousTarget) = (settings, generation, target);
        generationFailures = 0;
        generationReady = false;
        settings = settings.KeepFixed(reloaded);
        target = settings.Workers;
        generation = ++generationsStarted;
        reloading = true;
        systemd.Notify($"RELOADING=1\nMONOTONIC_USEC={Stopwatch.GetTimestamp() / (Stopwatch.Frequency / 1_000_000)}");
        int serving = Serving().Count;
        Log.Info($"HUP: configuration reloaded; replacing {serving} workers one at a time" + (serving == target ? "" : $", {target} from now on"));
    }

    /// <summary>Why the program that starts workers cannot be run now; null if it can.</summary>
    private string? CannotRun()
    {
        if (!File.Exists(program)) return $"{program} does not exist";
        if (Posix.CannotExecute(program) is string why) return $"{program} is not executable ({why})";
        // Under `dotnet MyServer.dll` the program is the dotnet host, and the .dll must be there too.
        if (programArgs is [string dll, ..] && !File.Exists(dll)) return $"{dll} does not exist";
        return null;
    }

    /// <summary>
    /// The workers of a HUP's configuration keep failing to start (and none has become ready):
    /// go back to the settings and generation before it. The workers that serve are of that
    /// generation again, so they are kept; the new ones still starting are stopped.
    /// </summary>
    private void RollBack()
    {
        Log.Info($"HUP: {generationFailures} workers of the new configuration failed to start in a row; " +
                 "back to the previous configuration, the running workers keep serving");
        (settings, generation, target) = (previousSettings!, previousGeneration, previousTarget);
        previousSettings = null;
        generationFailures = 0;
        reloading = false;
        foreach (WorkerProcess w in workers.Where(w => w.Generation > generation && !w.Stopping)) StopWorker(w);
        failures.Clear();
        startAt.Clear();
        failedStartsInARow = 0;
        systemd.Notify("READY=1");
    }

    private void LogStatistics()
    {
        long now = Environment.TickCount64;
        Log.Info($"USR1: {workers.Count} workers (target {target}), generation {generation}");
        foreach (WorkerProcess w in workers.OrderBy(w => w.Index))
        {
            Log.Info($"worker {w.Index} pid {w.Pid}: age {(now - w.StartedAt) / 1000.0:0.0}s, " +
                     $"accepted {w.Counts.Accepted}, in flight {w.Counts.InFlight}, garbage collections {w.Counts.Collections}, " +
                     $"last heartbeat {(now - w.LastHeartbeat) / 1000.0:0.0}s ago" +
                     (w.CountsSlot is int slot && counts is not null ? $", {counts.Describe(slot)}" : "") +
                     (w.Stopping ? ", stopping" : w.Ready ? "" : ", starting"));
        }
    }
}
