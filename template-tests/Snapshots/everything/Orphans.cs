namespace My.Server_2;

using System;
using System.Collections.Generic;
using System.Globalization;
using System.IO;
using System.Linq;

/// <summary>
/// PID 1 in a container (or a PID namespace) inherits the orphans of every process in it and
/// must wait for them, or they stay zombies. The master handles SIGCHLD as PID 1 and calls
/// <see cref="ReapAllBut"/>.
/// </summary>
internal static class Orphans
{
    /// <summary>Waits for every exited child that is not one of <paramref name="ours"/> (the runtime waits for those).</summary>
    public static void ReapAllBut(ISet<int> ours)
    {
        foreach (int pid in ZombieChildren().Where(pid => !ours.Contains(pid)))
            Posix.Reap(pid);
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
}
