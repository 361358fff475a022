using System.Diagnostics;
using System.Xml.Linq;
using PreforkTemplates.Tests.Infrastructure;
using Xunit;
using Xunit.Abstractions;

namespace PreforkTemplates.Tests;

/// <summary>
/// --include-tests writes &lt;Name&gt;.Tests, an xunit project for the user's own server: it passes
/// as generated (with warnings as errors), and it fails when the server answers differently.
/// </summary>
[Collection("template")]
public sealed class GeneratedTestsTests(TemplateFixture fixture, ITestOutputHelper output)
{
    private static Scenario Get(string id) => TemplateFixture.Get(id);

    /// <summary>The generated tests of the greeting handler (the default).</summary>
    private static readonly string[] GreetingTests =
        ["Greeting_comes_from_a_worker", "Every_worker_answers", "Interrupt_stops_the_master_and_every_worker"];

    /// <summary>The generated tests of the http handler.</summary>
    private static readonly string[] HttpTests =
        ["Get_answers_with_the_greeting_of_a_worker", "Every_worker_answers", "Interrupt_stops_the_master_and_every_worker"];

    /// <summary>The generated tests of the echo handler.</summary>
    private static readonly string[] EchoTests =
        ["Each_line_comes_back_as_sent", "Every_worker_is_a_child_of_the_master_and_accepts", "Interrupt_stops_the_master_and_every_worker"];

    private sealed record TestRun(CliResult Result, IReadOnlyDictionary<string, string> Outcomes, int Total, int Passed, int Failed);

    [Theory]
    [InlineData("include-tests")]
    [InlineData("everything")] // http handler, name My.Server-2: the identity and namespace forms of the name
    public async Task Generated_tests_pass_with_warnings_as_errors(string id)
    {
        Scenario scenario = Get(id);
        string dir = await fixture.BuiltAsync(scenario);
        string[] expected = id == "everything" ? HttpTests : GreetingTests;

        TestRun run = await DotnetTestAsync(Path.Combine(dir, scenario.Name + ".Tests"), id);

        Assert.True(run.Result.ExitCode == 0, "dotnet test failed:\n" + Cli.Describe(run.Result));
        Assert.DoesNotMatch(@"(?i)\bwarning\b", run.Result.StdOut);
        Assert.Equal(expected.Length, run.Total);
        Assert.Equal(expected.Length, run.Passed);
        Assert.Equal(0, run.Failed);
        // The tests live in the namespace form of the name (My.Server_2.Tests).
        Assert.Equal(expected.Select(t => $"{scenario.Binary}.Tests.ServerTests.{t}").Order(), run.Outcomes.Keys.Order());
    }

    [Fact]
    public async Task Generated_tests_of_the_echo_handler_pass()
    {
        // No fixture scenario has both: generate one here; `dotnet test` builds it.
        string dir = Path.Combine(fixture.WorkDir, "out", "echo-with-tests");
        CliResult generate = await fixture.DotnetNewAsync(["prefork-server", "-n", "MyEcho", "-o", dir, "--no-restore", "--handler", "echo", "--include-tests"]);
        Assert.True(generate.ExitCode == 0, Cli.Describe(generate));

        // `dotnet test` at the project's root, as a user types it: the solution file names the tests.
        Assert.True(File.Exists(Path.Combine(dir, "MyEcho.slnx")), "no solution file at the root");
        TestRun run = await DotnetTestAsync(dir, "echo-with-tests");

        Assert.True(run.Result.ExitCode == 0, "dotnet test failed:\n" + Cli.Describe(run.Result));
        Assert.DoesNotMatch(@"(?i)\bwarning\b", run.Result.StdOut);
        Assert.Equal(EchoTests.Length, run.Total);
        Assert.Equal(EchoTests.Length, run.Passed);
        Assert.Equal(EchoTests.Select(t => $"MyEcho.Tests.ServerTests.{t}").Order(), run.Outcomes.Keys.Order());
    }

    [Fact]
    public async Task Generated_tests_fail_when_the_handler_answers_differently()
    {
        Scenario scenario = Get("include-tests");
        string copy = Path.Combine(fixture.WorkDir, "out", "include-tests-changed-handler");
        Tree.Copy(await fixture.GeneratedAsync(scenario), copy, Tree.NotBuildOutput);

        // The handler now sends the greeting in capitals ("HELLO FROM {PID}"), as a user's
        // change to Handler.cs would, while Settings.DefaultGreeting stays as it was.
        fixture.UseHandler(copy, "UppercaseGreeting.Handler.cs");

        TestRun run = await DotnetTestAsync(Path.Combine(copy, scenario.Name + ".Tests"), "include-tests-changed-handler");

        Assert.True(run.Result.ExitCode != 0, "dotnet test passed although the handler answers differently:\n" + Cli.Describe(run.Result));
        Assert.Contains($"Failed {scenario.Binary}.Tests.ServerTests.Greeting_comes_from_a_worker", run.Result.StdOut);
        Assert.Equal("Failed", run.Outcomes[$"{scenario.Binary}.Tests.ServerTests.Greeting_comes_from_a_worker"]);
        // Only the handler changed: the server still starts and stops as it should.
        Assert.Equal("Passed", run.Outcomes[$"{scenario.Binary}.Tests.ServerTests.Interrupt_stops_the_master_and_every_worker"]);
    }

    /// <summary>Runs `dotnet test` with warnings as errors and reads its trx report.</summary>
    private async Task<TestRun> DotnetTestAsync(string testProject, string name)
    {
        string results = Path.Combine(fixture.WorkDir, "results", name);
        var took = Stopwatch.StartNew();
        CliResult result = await Cli.DotnetAsync(["test", testProject, "-warnaserror", "--disable-build-servers", "-nologo",
            "--logger", "trx;LogFileName=results.trx", "--results-directory", results], testProject, TimeSpan.FromMinutes(10));
        output.WriteLine($"dotnet test {Path.GetFileName(testProject)} ({name}): exit code {result.ExitCode}, {took.Elapsed.TotalSeconds:0.0} s");
        output.WriteLine(result.StdOut);

        string trx = Path.Combine(results, "results.trx");
        if (!File.Exists(trx)) throw new InvalidOperationException($"dotnet test wrote no {trx}:\n" + Cli.Describe(result));
        XDocument report = XDocument.Load(trx);
        XNamespace ns = report.Root!.Name.Namespace;
        XElement counters = report.Descendants(ns + "Counters").Single();
        var outcomes = report.Descendants(ns + "UnitTestResult")
            .ToDictionary(r => (string)r.Attribute("testName")!, r => (string)r.Attribute("outcome")!);
        foreach (var (test, outcome) in outcomes) output.WriteLine($"{outcome}: {test}");
        return new TestRun(result, outcomes, (int)counters.Attribute("total")!, (int)counters.Attribute("passed")!, (int)counters.Attribute("failed")!);
    }
}
