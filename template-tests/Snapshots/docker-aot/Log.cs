namespace MyAotServer;

using System;

/// <summary>
/// One line per event on standard error, saying who speaks:
/// <c>[master 1234] pool ready</c> or <c>[worker 2 1240] accepting</c>.
/// </summary>
internal static class Log
{
    private static string who = $"[master {Environment.ProcessId}]";

    public static void AsWorker(int index) => who = $"[worker {index} {Environment.ProcessId}]";

    public static void Info(string message) => Console.Error.WriteLine($"{who} {message}");
}
