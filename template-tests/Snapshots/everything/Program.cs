// The server uses Linux's process and socket calls (accept4, fcntl, kill, signals).
[assembly: System.Runtime.Versioning.SupportedOSPlatform("linux")]

namespace My.Server_2;

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
            Console.Error.WriteLine($"{name}: the limit of open files (ulimit -n) is {fileLimit}; the server needs at least {MinimumFileLimit}");
            return ExitCodes.Usage;
        }
        bool isWorker = args is ["--worker", _] && Environment.GetEnvironmentVariable(Worker.ListenFdVariable) is not null;

        Settings settings;
        try
        {
            settings = Settings.Parse(isWorker ? [] : args, Environment.GetEnvironmentVariables());
        }
        catch (UsageException e)
        {
            Console.Error.WriteLine($"{name}: {e.Message}");
            return ExitCodes.Usage;
        }

        if (settings.ShowHelp)
        {
            Console.Out.Write(Settings.Help(name));
            return ExitCodes.Ok;
        }
        if (settings.ShowVersion)
        {
            Console.Out.WriteLine($"{name} {Settings.Version()}");
            return ExitCodes.Ok;
        }

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
}
