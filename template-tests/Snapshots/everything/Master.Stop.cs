namespace My.Server_2;

using System;
using System.Globalization;
using System.Linq;
using Mono.Unix.Native;

/// <summary>
/// Stopping the whole server: graceful (TERM, QUIT, a USR2 retirement), quick (INT, a second
/// stop signal), or for good when no worker can start. Every way releases the master's
/// descriptor of the listening socket first: it will start no more workers.
/// </summary>
internal sealed partial class Master
{
    /// <summary>
    /// Begins a stop: graceful, the workers finish what they hold (up to --shutdown-timeout,
    /// then SIGKILL); quick, they leave at once. The loop exits once every worker has exited.
    /// </summary>
    private void BeginStop(bool graceful, Signum relay = Signum.SIGTERM)
    {
        state = graceful ? State.GracefulStop : State.QuickStop;
        killAt = Environment.TickCount64 + (long)settings.ShutdownTimeout.TotalMilliseconds;
        ReleaseListener(); // no more workers will start: the workers' own descriptors are the last
        if (!retiring) systemd.Notify("STOPPING=1");
        if (graceful)
        {
            // When the whole server stops (not while an upgrade is under way, whichever master
            // stops: the other one serves on; not a socket that systemd keeps listening on), one
            // worker keeps accepting while the others serve their share of the queue and release
            // the socket; then it is told it is the last holder (TellLastHolderIfAlone). It must be one
            // that still accepts: not one already stopping (replaced by a HUP, say).
            lastHolder = UpgradeUnderWay || systemdSocket ? null : workers
                .Where(w => w.Ready && !w.Stopping).OrderByDescending(w => w.Generation).FirstOrDefault();
            // Relay the signal; a worker that does not handle it (--signals) is asked over its pipe.
            bool handled = settings.Signals.Contains(relay.ToString()[3..]);
            foreach (WorkerProcess worker in workers)
            {
                if (worker == lastHolder) continue;
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
            lastHolder = null;
            KillAll(QuickStopSignal, null);
        }
        TellLastHolderIfAlone();
    }

    /// <summary>
    /// A graceful stop of the whole server: once every other worker has released the listening
    /// socket, the worker kept accepting is its last holder. It holds back new connections, serves the queue to
    /// its end and releases the socket, so nothing is left in the queue to reset, and the
    /// clients that come after are refused at once.
    /// </summary>
    private void TellLastHolderIfAlone()
    {
        if (lastHolder is null || workers.Any(w => w != lastHolder && !w.Released)) return;
        if (!lastHolder.Reaped)
        {
            lastHolder.Stopping = true;
            lastHolder.Tell(ControlPipe.LastHolder);
        }
        lastHolder = null;
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
}
