namespace MyServer;

using System;
using System.Globalization;
using System.IO;

/// <summary>
/// The --pid-file (empty: none). The master writes its pid at start, a new master (USR2) when
/// it is ready, and an old master again when an upgrade fails; a master that exits removes the
/// file only if it still holds its own pid.
/// </summary>
internal sealed class PidFile(string path)
{
    private static readonly string Pid = Environment.ProcessId.ToString(CultureInfo.InvariantCulture);

    /// <summary>Writes this process's pid, atomically: readers never see half a file. Throws IOException, UnauthorizedAccessException.</summary>
    public void Write()
    {
        if (path.Length == 0) return;
        string temporary = path + ".tmp";
        File.WriteAllText(temporary, Pid + "\n");
        File.Move(temporary, path, overwrite: true);
    }

    public void RemoveIfOurs()
    {
        try
        {
            if (path.Length > 0 && File.ReadAllText(path).Trim() == Pid) File.Delete(path);
        }
        catch (IOException) { }
    }
}
