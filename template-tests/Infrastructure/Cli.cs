using System.Diagnostics;
using System.Text;

namespace PreforkTemplates.Tests.Infrastructure;

/// <summary>Runs a command to completion with a timeout that only catches hangs.</summary>
public static class Cli
{
    public static async Task<CliResult> RunAsync(string file, IEnumerable<string> args, string? workingDirectory = null,
        TimeSpan? timeout = null, IDictionary<string, string?>? environment = null)
    {
        var start = new ProcessStartInfo(file)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            RedirectStandardInput = true,
            UseShellExecute = false,
            WorkingDirectory = workingDirectory ?? Environment.CurrentDirectory,
        };
        foreach (string arg in args) start.ArgumentList.Add(arg);
        // No build servers or MSBuild nodes may outlive the tests.
        start.Environment["DOTNET_CLI_USE_MSBUILD_SERVER"] = "0";
        start.Environment["MSBUILDDISABLENODEREUSE"] = "1";
        start.Environment["UseSharedCompilation"] = "false";
        start.Environment["DOTNET_CLI_TELEMETRY_OPTOUT"] = "1";
        start.Environment["DOTNET_NOLOGO"] = "1";
        start.Environment["DOTNET_SKIP_FIRST_TIME_EXPERIENCE"] = "1";
        if (environment is not null)
            foreach (var (key, value) in environment) start.Environment[key] = value;

        using var process = Process.Start(start)!;
        process.StandardInput.Close();
        Task<string> stdout = process.StandardOutput.ReadToEndAsync();
        Task<string> stderr = process.StandardError.ReadToEndAsync();
        using var cts = new CancellationTokenSource(timeout ?? TimeSpan.FromMinutes(5));
        try
        {
            await process.WaitForExitAsync(cts.Token);
        }
        catch (OperationCanceledException)
        {
            process.Kill(entireProcessTree: true);
            throw new TimeoutException($"{file} {string.Join(' ', args)} did not finish in {timeout ?? TimeSpan.FromMinutes(5)}");
        }
        return new CliResult(process.ExitCode, await stdout, await stderr);
    }

    public static async Task<CliResult> DotnetAsync(IEnumerable<string> args, string? workingDirectory = null, TimeSpan? timeout = null)
        => await RunAsync("dotnet", args, workingDirectory, timeout);

    public static string Describe(CliResult result)
    {
        var text = new StringBuilder();
        text.AppendLine($"exit code {result.ExitCode}");
        text.AppendLine("--- stdout ---").AppendLine(result.StdOut);
        text.AppendLine("--- stderr ---").AppendLine(result.StdErr);
        return text.ToString();
    }
}
