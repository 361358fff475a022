namespace MyServer;

using System;
using System.ComponentModel;
using System.Diagnostics;
using System.Globalization;
using System.IO;
using System.Linq;
using Mono.Unix.Native;

/// <summary>
/// USR2, the zero-downtime upgrade, in one place. The old master starts a new master from
/// the program on disk and hands it the listening socket (PREFORK_UPGRADE_FD); both pools
/// accept meanwhile. Once all its workers accept, the new master rewrites the pid file and
/// says "ready" on its standard output; the old master then stops its own workers and
/// retires. A new master that exits first, or is not ready within --upgrade-timeout, is
/// given up and the old master keeps serving.
/// </summary>
internal sealed partial class Master
{
    /// <summary>The fd of a listening socket handed over by an old master (USR2).</summary>
    public const string UpgradeFdVariable = "PREFORK_UPGRADE_FD";

    /// <summary>Set, with the fd, when systemd holds that socket too (socket activation).</summary>
    public const string UpgradeSystemdVariable = "PREFORK_UPGRADE_SYSTEMD_SOCKET";

    private Process? newMaster;                      // the new master, until it is ready
    private long newMasterDeadline = long.MaxValue;
    private bool retiring;                           // a new master took over: stop and leave
    private readonly int oldMaster = Posix.ParentPid(); // in a new master: the old one, our parent while it lives

    /// <summary>
    /// True while two masters share the socket: in the old master until it has retired, in a new
    /// one until the old one has gone (it is our parent until then). Whichever of them stops, the
    /// other serves on: the stopping one must not hold new connections back (no last holder).
    /// </summary>
    private bool UpgradeUnderWay => newMaster is not null || retiring || (upgraded && Posix.ParentPid() == oldMaster);

    /// <summary>USR2: start a new master from the program on disk, on the same socket.</summary>
    private void Upgrade()
    {
        if (newMaster is not null)
        {
            Log.Info($"USR2: an upgrade to master {newMaster.Id} is already under way");
            return;
        }
        // Its standard output is where it says "ready"; its standard input, unused, reaches
        // end-of-file when this master exits.
        var start = new ProcessStartInfo(program);
        foreach (string arg in programArgs.Concat(args)) start.ArgumentList.Add(arg);
        start.Environment[UpgradeFdVariable] = listenFd;
        if (systemdSocket) start.Environment[UpgradeSystemdVariable] = "1";
        if (systemd.Path is not null) start.Environment["NOTIFY_SOCKET"] = systemd.Path; // it reports READY=1 and MAINPID
        try
        {
            newMaster = StartChild(start);
        }
        catch (Exception e) when (e is Win32Exception or IOException or InvalidOperationException)
        {
            Log.Info($"USR2: cannot start a new master from {program}: {e.Message}");
            return;
        }
        newMasterDeadline = Environment.TickCount64 + (long)settings.UpgradeTimeout.TotalMilliseconds;
        Log.Info($"USR2: started new master {newMaster.Id} from {program}; waiting up to {settings.UpgradeTimeout.TotalSeconds:0}s for its workers");
    }

    private void CheckNewMaster()
    {
        if (newMaster is null || Environment.TickCount64 < newMasterDeadline) return;
        Log.Info($"USR2: new master {newMaster.Id} was not ready within the upgrade timeout; killing it, this master keeps serving");
        Posix.Kill(newMaster.Id, (int)Signum.SIGKILL); // its workers see their pipe close and leave
        // NewMasterExited then restores the pid file and tells systemd who the main process is.
        newMasterDeadline = long.MaxValue;
    }

    /// <summary>A line from the new master: "ready" once all its workers accept.</summary>
    private void NewMasterSaid(string line)
    {
        if (line != ControlPipe.Ready || newMaster is null) return;
        Log.Info($"USR2: new master {newMaster.Id} is ready; stopping this master's workers");
        successor = newMaster; // it takes over this master's totals when this one leaves (Master.Metrics.cs)
        newMaster = null;
        retiring = true;
        BeginStop(graceful: true);
    }

    /// <summary>The new master exited before it was ready: keep serving, and say who the main process is.</summary>
    private void NewMasterExited()
    {
        if (newMaster is null) return;
        Log.Info($"USR2: new master {newMaster.Id} exited with code {newMaster.ExitCode} before it was ready; this master keeps serving");
        newMaster.StandardInput.Dispose(); // Dispose alone would leave this pipe open
        newMaster.Dispose();
        newMaster = null;
        newMasterDeadline = long.MaxValue;
        // A new master (of another build, perhaps) may have had its last worker hold new
        // connections back on the shared socket: this master serves on, so let them in again.
        if (!listenerReleased) Posix.AllowNewConnections(int.Parse(listenFd, CultureInfo.InvariantCulture));
        systemd.Notify($"READY=1\nMAINPID={Environment.ProcessId}");
        pidFile.TryWrite();
    }

    /// <summary>
    /// In a new master: the listening socket's number handed over by the old master, and
    /// whether systemd holds that socket too; null when this master was not started by USR2.
    /// </summary>
    internal static (int Fd, bool SystemdSocket)? FromOldMaster()
    {
        string? fd = Environment.GetEnvironmentVariable(UpgradeFdVariable);
        if (fd is null) return null;
        bool systemdSocket = Environment.GetEnvironmentVariable(UpgradeSystemdVariable) is not null;
        Environment.SetEnvironmentVariable(UpgradeFdVariable, null); // not for our workers
        Environment.SetEnvironmentVariable(UpgradeSystemdVariable, null);
        return (int.Parse(fd, CultureInfo.InvariantCulture), systemdSocket);
    }

    /// <summary>In a new master whose workers all accept: take over the pid file, and tell the old master.</summary>
    private void TellOldMasterReady()
    {
        pidFile.TryWrite();
        using Stream toOld = Console.OpenStandardOutput();
        ControlPipe.WriteLine(toOld, ControlPipe.Ready);
    }
}
