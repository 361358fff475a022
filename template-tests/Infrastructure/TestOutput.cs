using Xunit.Abstractions;

namespace PreforkTemplates.Tests.Infrastructure;

/// <summary>What a test reports (figures of a load, a fairness, a drain): in its own output, and in the CI log too, for the closing note.</summary>
public static class TestOutput
{
    public static void Report(this ITestOutputHelper output, string line)
    {
        output.WriteLine(line);
        Console.WriteLine(line);
    }
}
