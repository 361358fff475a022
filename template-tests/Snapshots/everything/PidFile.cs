namespace My.Server_2;

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

    /// <summary>
    /// Writes this process's pid, atomically: readers never see half a file. The pid goes to a
    /// temporary file of this process's own (FILE.PID.tmp), created new: a file or a symbolic
    /// link already there (left by a crash, or planted) is removed, never written through. Then
    /// it is renamed over FILE. Throws IOException, UnauthorizedAccessException.
    /// </summary>
    public void Write()
    {
        if (path.Length == 0) return;
        string temporary = $"{path}.{Pid}.tmp";
        try
        {
            WriteNew(temporary);
        }
        catch (IOException) when (Posix.NameExists(temporary))
        {
            File.Delete(temporary); // the link itself, not what it points to
            WriteNew(temporary);
        }
        try
        {
            File.Move(temporary, path, overwrite: true);
        }
        catch
        {
            File.Delete(temporary);
            throw;
        }
    }

    /// <summary>
    /// Once the server runs, a pid file that cannot be written (its directory removed, a full
    /// disk) is logged: the workers go on serving.
    /// </summary>
    public void TryWrite()
    {
        try
        {
            Write();
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            Log.Info($"--pid-file: cannot write '{path}': {e.Message}");
        }
    }

    public void RemoveIfOurs()
    {
        if (path.Length == 0) return;
        try
        {
            if (File.ReadAllText(path).Trim() == Pid) File.Delete(path);
        }
        catch (Exception e) when (e is FileNotFoundException or DirectoryNotFoundException) { } // gone already
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            Log.Info($"--pid-file: cannot remove '{path}': {e.Message}");
        }
    }

    // FileMode.CreateNew is open(2) with O_CREAT | O_EXCL: it fails on any name that exists,
    // a symbolic link included, instead of following it.
    private static void WriteNew(string file)
    {
        using var stream = new FileStream(file, FileMode.CreateNew, FileAccess.Write);
        stream.Write(System.Text.Encoding.ASCII.GetBytes(Pid + "\n"));
    }

}
