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
    public static int Main(string[] args)
    {
        string name = Path.GetFileNameWithoutExtension(Environment.ProcessPath) ?? "server";
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
                ? Worker.Run(settings, Environment.GetEnvironmentVariable(Worker.ListenFdVariable)!, args[1])
                : Master.Run(settings, args);
        }
        catch (Exception e)
        {
            Log.Info($"unexpected error: {e}");
            return ExitCodes.Failure;
        }
    }
}
