namespace My.Server_2;

using System;
using System.Text;
using System.Threading;
using Microsoft.Extensions.Logging;

/// <summary>
/// One line per event on standard error, saying who speaks:
/// <c>[master 1234] pool ready</c> or <c>[worker 2 1240] accepting</c>.
/// Each line is one write(2) to descriptor 2, so the lines of the master and its workers never
/// mix, and a log that cannot be written (a full disk, a reader gone) never ends a process:
/// the line is dropped and counted, and the count is logged once writing works again.
/// </summary>
internal static class Log
{
    private static string who = $"[master {Environment.ProcessId}]";

    public static void AsWorker(int index) => who = $"[worker {index} {Environment.ProcessId}]";

    private static readonly Lock gate = new();
    private static long dropped;        // lines lost since the last one written
    private static long droppedInAll;

    /// <summary>How many log lines this process could not write, in all.</summary>
    public static long Dropped => Interlocked.Read(ref droppedInAll);

    public static void Info(string message)
    {
        lock (gate)
        {
            if (!Write($"{who} {message}\n"))
            {
                dropped++;
                Interlocked.Increment(ref droppedInAll);
                return;
            }
            if (dropped > 0 && Write($"{who} {dropped} log line(s) dropped: the log could not be written\n")) dropped = 0;
        }
    }

    /// <summary>Writes the whole line to standard error (descriptor 2); false if it could not (it is then lost).</summary>
    private static bool Write(string line) => Posix.WriteAll(2, Encoding.UTF8.GetBytes(line));

    /// <summary>
    /// ASP.NET Core's log in the same lines, e.g.
    /// <c>[worker 2 1240] Error Microsoft.AspNetCore.Server.Kestrel: ...</c> (an exception's
    /// lines joined with " | ").
    /// </summary>
    public sealed class Provider : ILoggerProvider
    {
        public ILogger CreateLogger(string categoryName) => new Logger(categoryName);

        public void Dispose() { }
    }

    private sealed class Logger(string category) : ILogger
    {
        public IDisposable? BeginScope<TState>(TState state) where TState : notnull => null;

        public bool IsEnabled(LogLevel logLevel) => logLevel != LogLevel.None;

        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
        {
            if (!IsEnabled(logLevel)) return;
            string text = formatter(state, exception);
            if (exception is not null) text += " " + exception;
            Info($"{logLevel} {category}: {text}".ReplaceLineEndings(" | "));
        }
    }
}
