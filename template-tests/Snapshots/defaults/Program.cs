// The server uses Linux's process and socket calls (accept4, fcntl, kill, signals).
[assembly: System.Runtime.Versioning.SupportedOSPlatform("linux")]

namespace MyServer;

using System;
using System.IO;

/// <summary>
/// The entry point of both kinds of process. Started by you, this program is the master;
/// the master starts it again with --worker N for each worker (see Master.cs, Worker.cs).
/// To change what the server answers, edit Handler.cs.
/// </summary>
public static class Program
{
    /// <summary>
    /// The fewest open files a process of this server can run with: what the runtime opens
    /// (about 30), the spare that a worker keeps (Worker.SpareFiles) and a few connections.
    /// </summary>
    public const int MinimumFileLimit = 128;

    public static int Main(string[] args)
    {
        string name = Path.GetFileName(Environment.ProcessPath) ?? "server"; // My.Server_2 has no extension

        // Before anything else opens a file: below this the runtime itself fails in odd places
        // (an assembly that cannot be loaded, a thread that cannot start).
        long fileLimit = Posix.RaiseFileLimit();
        if (fileLimit < MinimumFileLimit)
        {
            Say(StandardError, $"{name}: the limit of open files (ulimit -n) is {fileLimit}; the server needs at least {MinimumFileLimit}\n");
            return ExitCodes.Usage;
        }
        bool isWorker = args is ["--worker", _] && Environment.GetEnvironmentVariable(Worker.ListenFdVariable) is not null;
        bool isStatus = args is ["status", ..];

        Settings settings;
        try
        {
            settings = Settings.Parse(isWorker ? [] : isStatus ? args[1..] : args, Environment.GetEnvironmentVariables());
        }
        catch (UsageException e)
        {
            Say(StandardError, $"{name}: {e.Message}\n");
            return ExitCodes.Usage;
        }

        if (settings.ShowHelp)
        {
            Say(StandardOutput, Settings.Help(name));
            return ExitCodes.Ok;
        }
        if (settings.ShowVersion)
        {
            Say(StandardOutput, $"{name} {Settings.Version()}\n");
            return ExitCodes.Ok;
        }

        if (isStatus)
            return StatusCommand.Run(settings, name, text => Say(StandardOutput, text), text => Say(StandardError, text));

        try
        {
            return isWorker
                ? Worker.Run(settings, Environment.GetEnvironmentVariable(Worker.ListenFdVariable)!, args[1], fileLimit)
                : Master.Run(settings, args, fileLimit);
        }
        catch (Exception e)
        {
            Log.Info($"unexpected error: {e}");
            return ExitCodes.Failure;
        }
    }

    private const int StandardOutput = 1, StandardError = 2;

    /// <summary>
    /// Writes to standard output or error before the log is set up. A full disk or a reader that
    /// is gone loses the text, but never turns a clear exit code into a crash.
    /// </summary>
    private static void Say(int fd, string text) => Posix.WriteAll(fd, System.Text.Encoding.UTF8.GetBytes(text));
}
