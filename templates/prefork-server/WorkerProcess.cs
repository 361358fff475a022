namespace PreforkServer;

using System;
using System.Diagnostics;
using System.IO;
using System.Threading;

/// <summary>
/// A worker as the master sees it. It owns both ends of the worker's pipes: once the
/// worker has exited and been reaped, <see cref="Close"/> frees them, and telling it
/// anything is a no-op (its process object is gone).
/// </summary>
internal sealed class WorkerProcess(int index, int generation, Process process)
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
    public ControlPipe.Heartbeat Counts { get; set; } // from its last heartbeat
    public ControlPipe.Figures Figures { get; set; } = ControlPipe.Figures.None; // with --metrics, from its last figures
    public bool KilledAsHung { get; set; }
    public WorkerProcess? Replaces { get; set; }   // the worker this one takes over from, until it exits
    public bool Reaped { get; private set; }        // exited, and its exit handled
    public bool Released { get; set; }              // has closed its descriptor of the listening socket
    public int? CountsSlot { get; init; }           // its slot in the connection counts (SharedCounts.cs)

    /// <summary>True if this is the worker that <paramref name="child"/> runs.</summary>
    public bool Is(Process child) => child == process;

    /// <summary>Writes a line to the worker's pipe (ControlPipe.cs); one that has exited no longer reads it.</summary>
    public void Tell(string line)
    {
        if (!Reaped) ControlPipe.WriteLine(control.BaseStream, line);
    }

    /// <summary>The worker has exited: its exit status, after which every descriptor for it is closed.</summary>
    /// <param name="waitForLastLines">
    /// Wait (1 s at most) until its last lines (its final counts) have been read and queued for
    /// the master's loop: the exit is noticed before them.
    /// </param>
    public int Close(bool waitForLastLines)
    {
        if (waitForLastLines)
        {
            using var limit = new CancellationTokenSource(TimeSpan.FromSeconds(1));
            try { process.WaitForExitAsync(limit.Token).GetAwaiter().GetResult(); }
            catch (OperationCanceledException) { }
        }
        int status = process.ExitCode;
        Reaped = true;
        // Process.Dispose leaves a redirected standard input open once it has been used:
        // close it here, or every replaced worker leaks a pipe.
        try { control.Dispose(); } catch (IOException) { }
        process.Dispose();
        return status;
    }
}
