namespace PreforkTemplates.Tests.Infrastructure;

public sealed record CliResult(int ExitCode, string StdOut, string StdErr)
{
    public string Output => StdOut + StdErr;
}
