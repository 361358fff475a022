namespace MyServer;

using System;
using Microsoft.Extensions.Logging;

/// <summary>
/// One line per event on standard error, saying who speaks:
/// <c>[master 1234] pool ready</c> or <c>[worker 2 1240] accepting</c>.
/// </summary>
internal static class Log
{
    private static string who = $"[master {Environment.ProcessId}]";

    public static void AsWorker(int index) => who = $"[worker {index} {Environment.ProcessId}]";

    public static void Info(string message) => Console.Error.WriteLine($"{who} {message}");

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
