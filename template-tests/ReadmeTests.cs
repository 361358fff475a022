using System.Text.RegularExpressions;
using PreforkTemplates.Tests.Infrastructure;
using Xunit;
using Xunit.Abstractions;

namespace PreforkTemplates.Tests;

/// <summary>
/// Every ```sh block of README.md, CONTRIBUTING.md and the Markdown files of the generated
/// project (its README.md and docs/*.md), run from the file's own text, twice, as a new user pastes it: first with bash in a pseudo-terminal, then
/// with sh (Debian's dash) as a script; each with `-e`, so a line that fails fails the test. A block
/// "in a second shell" runs while the block before it serves. `dotnet new` installs go to a
/// template store of the test's own (DOTNET_CLI_HOME). The blocks use port 8080, as the
/// READMEs do; no other test uses it. The blocks that are not run are named in
/// <see cref="NotRunHere"/> with the reason, and a test checks that no other block is left out.
/// Another checks that the repository's Markdown files link only to what exists (TemplateTests
/// does the same for every generated project's).
/// </summary>
[Collection("template")]
public sealed class ReadmeTests(TemplateFixture fixture, ITestOutputHelper output)
{
    private static readonly TimeSpan Build = TimeSpan.FromMinutes(4);
    private static readonly TimeSpan Hang = TimeSpan.FromSeconds(60);
    private static readonly bool[] BothWays = [true, false]; // a terminal with bash, then a script with sh

    /// <summary>Blocks no test runs, by their first line, and why.</summary>
    public static readonly IReadOnlyDictionary<string, string> NotRunHere = new Dictionary<string, string>
    {
        ["bash test.sh"] = "it runs this test suite, or part of it (CI runs all of it)",
        ["docker build -t "] = "no container engine runs here; DeployTests carries out the Dockerfile's steps without one",
        ["docker buildx build "] = "no container engine runs here; DeployTests checks the Dockerfile's platforms and carries out its build steps without one",
        ["dpkg --add-architecture arm64"] = "it installs Debian packages and registers qemu with binfmt_misc, as root: test.sh does the same before the tests run, and the arm64 tests fail naming what is missing",
        ["dotnet publish -c Release -r linux-arm64 "] = "Arm64Tests publishes the generated projects with these options (self-contained, and NativeAOT) and runs them under emulation",
        ["dotnet publish -c Release -r linux-x64 -o /opt/"] = "it installs units into /etc/systemd/system and starts them with systemctl: systemd is not the init system here",
    };

    private static Dictionary<string, string> CliHome() => new()
    {
        // A template store of our own: `dotnet new install` never touches the user's.
        ["DOTNET_CLI_HOME"] = Directory.CreateTempSubdirectory("readme-cli-home-").FullName,
        ["DOTNET_NOLOGO"] = "1",
        ["DOTNET_CLI_TELEMETRY_OPTOUT"] = "1",
    };

    /// <summary>The repository's Markdown files whose blocks are run: the package's page, then the contributors'.</summary>
    private static readonly string[] RunnableDocs = ["README.md", "CONTRIBUTING.md"];

    /// <summary>The repository's Markdown files whose links must lead somewhere.</summary>
    private static readonly string[] LinkedDocs = [.. RunnableDocs, "bench/README.md"];

    private string RootReadme => File.ReadAllText(Path.Combine(fixture.RepoRoot, "README.md"));

    private static bool Exempt(Readme.Block block) => NotRunHere.Keys.Any(k => block.Text.StartsWith(k, StringComparison.Ordinal));

    private void Show(string what, Terminal terminal)
    {
        output.WriteLine($"---- {what}\n{terminal.Screen}");
    }

    /// <summary>Runs a block to its end; fails unless it exits with 0.</summary>
    private string RunToEnd(Readme.Block block, bool pty, string directory, Dictionary<string, string> environment, TimeSpan timeout)
    {
        using var terminal = new Terminal(block.Text, pty, directory, environment);
        int? code = terminal.WaitForExit(timeout);
        Show($"{block} ({(pty ? "bash, terminal" : "sh, script")}): exit {code?.ToString() ?? "none, still running"}", terminal);
        Assert.True(code == 0, $"{block} ({(pty ? "bash in a terminal" : "sh")}) ended with {code?.ToString() ?? "nothing (still running)"}:\n{terminal.Screen}");
        return terminal.Screen;
    }

    /// <summary>
    /// A server block (one that runs the server in the foreground), then what the README says to
    /// do in a second shell, then Ctrl+C; the server must say it stopped and leave the port free.
    /// </summary>
    private void Serve(Readme.Block server, bool pty, string directory, Dictionary<string, string> environment, Action<bool> secondShell)
    {
        Assert.True(Client.PortIsFree(8080), "port 8080 is in use: the READMEs' blocks need it");
        using var terminal = new Terminal(server.Text, pty, directory, environment);
        try
        {
            terminal.WaitFor("pool ready", Build);
            secondShell(pty);
            terminal.Interrupt();
            Assert.True(terminal.WaitForExit(Hang) is not null, "Ctrl+C did not end the server:\n" + terminal.Screen);
            Assert.Contains("all workers have exited; stopped", terminal.Screen);
            Assert.True(Proc.WaitUntil(() => Client.PortIsFree(8080), Hang), "port 8080 is still taken after Ctrl+C");
        }
        finally
        {
            Show($"{server} ({(pty ? "bash, terminal" : "sh, script")})", terminal);
        }
    }

    /// <summary>
    /// The READMEs' nc loop: ten greetings from the workers in turn. Not always all five: an idle
    /// worker's accept() wakes every 500 ms for its heartbeat and goes to the back of the kernel's
    /// line (seen in CI under load: 4 of 5, one worker twice in a row), as the READMEs say.
    /// ServerTests measures the spread itself over 100 connections.
    /// </summary>
    private static void TenGreetingsFromWorkersInTurn(string screen)
    {
        var pids = Regex.Matches(screen, @"Hello from (\d+)").Select(m => m.Groups[1].Value).ToList();
        Assert.Equal(10, pids.Count);
        Assert.True(pids.Distinct().Count() >= 3, $"ten greetings came from only {pids.Distinct().Count()} workers: {string.Join(' ', pids)}");
    }

    // ---- README.md --------------------------------------------------------------------------

    [Fact]
    public void Every_block_is_run_or_named_with_the_reason_it_is_not()
    {
        // The template's folder holds every Markdown file a generated project may ship, under the same paths.
        const string template = "templates/prefork-server";
        var generated = Readme.ProjectShellBlocks(Path.Combine(fixture.RepoRoot, template)).Select(b => b with { File = $"{template}/{b.File}" });
        var blocks = RunnableDocs
            .SelectMany(doc => Readme.ShellBlocks(File.ReadAllText(Path.Combine(fixture.RepoRoot, doc))).Select(b => b with { File = doc }))
            .Concat(generated)
            .ToList();
        Assert.Contains(blocks, b => b.File!.StartsWith($"{template}/docs/", StringComparison.Ordinal)); // the docs are read
        // The blocks the tests below pick, by their file (or, for the generated project's, any of
        // its Markdown files) and what they hold; every other block must be exempt.
        var run = new Dictionary<string, string[]>
        {
            ["README.md"] = ["dotnet new install . --force", "for i in $(seq 10); do nc", "dotnet pack -c Release -o out", "dotnet new prefork-server -n MyServer --workers 8"],
            [template] = ["dotnet run\n", "for i in $(seq 10); do nc", "nc 127.0.0.1 8080\n", "curl -i http://127.0.0.1:8080/", "dotnet build\nsystemd-socket-activate", "dotnet test PreforkServer.Tests/"],
        };
        string[] Picked(Readme.Block b) => run.GetValueOrDefault(b.File!.StartsWith(template + "/", StringComparison.Ordinal) ? template : b.File!, []);
        var left = blocks.Where(b => !Exempt(b) && !Picked(b).Any(r => b.Text.StartsWith(r, StringComparison.Ordinal))).ToList();
        Assert.True(left.Count == 0, "blocks no test runs: " + string.Join("; ", left));
        foreach (string exempt in NotRunHere.Keys)
            Assert.Contains(blocks, b => b.Text.StartsWith(exempt, StringComparison.Ordinal)); // no stale exemption
    }

    /// <summary>
    /// Nothing points nowhere: every relative link (and image) of the repository's Markdown files
    /// leads to a file or folder of the repository, and every #fragment to a heading of its file.
    /// </summary>
    [Fact]
    public void Every_link_of_the_repository_docs_leads_somewhere()
    {
        var broken = new List<string>();
        int links = 0;
        foreach (string doc in LinkedDocs)
        {
            broken.AddRange(Readme.BrokenLinks(Path.Combine(fixture.RepoRoot, doc), fixture.RepoRoot, out int found).Select(b => $"{doc}: {b}"));
            links += found;
        }
        output.WriteLine($"{links} links checked");
        Assert.True(links > 10, $"only {links} links found: the pattern no longer finds them");
        Assert.True(broken.Count == 0, "links that lead nowhere:\n" + string.Join("\n", broken));
    }

    [Fact]
    public void Quick_start_and_its_second_shell_work_as_pasted_twice()
    {
        var blocks = Readme.ShellBlocks(RootReadme);
        Readme.Block start = Assert.Single(blocks, b => b.Text.StartsWith("dotnet new install . --force", StringComparison.Ordinal));
        Readme.Block loop = Assert.Single(blocks, b => b.Text.StartsWith("for i in $(seq 10); do nc", StringComparison.Ordinal));
        var environment = CliHome();
        foreach (bool pty in BothWays)
            Serve(start, pty, fixture.RepoRoot, environment, secondPty =>
                TenGreetingsFromWorkersInTurn(RunToEnd(loop, secondPty, fixture.RepoRoot, environment, Hang)));
    }

    [Fact]
    public void Package_blocks_work_as_pasted_twice()
    {
        // As a user who installs the package (and has not installed the folder): the blocks in order.
        var blocks = Readme.ShellBlocks(RootReadme)
            .Where(b => b.Text.StartsWith("dotnet pack -c Release -o out", StringComparison.Ordinal) ||
                        b.Text.StartsWith("dotnet new prefork-server -n MyServer --workers 8", StringComparison.Ordinal))
            .ToList();
        Assert.Equal(3, blocks.Count); // install (and upgrade), the HTTP server, the parameters
        var environment = CliHome();
        foreach (bool pty in BothWays)
            foreach (Readme.Block block in blocks)
            {
                string screen = RunToEnd(block, pty, fixture.RepoRoot, environment, TimeSpan.FromMinutes(6));
                if (block.Text.Contains("dotnet new list", StringComparison.Ordinal)) Assert.Contains("prefork-server", screen);
                if (block.Text.Contains("wrk ", StringComparison.Ordinal))
                {
                    Assert.Matches(@"Requests/sec:\s+\d", screen);
                    Assert.DoesNotContain("Socket errors", screen);
                    Assert.DoesNotContain("Non-2xx", screen);
                    Assert.Matches(@"Passed!\s+- Failed:\s+0", screen); // dotnet test of the generated tests
                }
            }
    }

    // ---- the generated README -----------------------------------------------------------------

    private async Task<(string Dir, IReadOnlyList<Readme.Block> Blocks)> Generated(string id, params string[] args)
    {
        string dir = await fixture.GenerateAsync(new Scenario("readme-" + id, "MyServer", args));
        return (dir, Readme.ProjectShellBlocks(dir));
    }

    [Fact]
    public async Task Generated_greeting_server_runs_as_its_readme_says_twice()
    {
        var (dir, blocks) = await Generated("greeting");
        Readme.Block run = Assert.Single(blocks, b => b.Text == "dotnet run\n");
        Readme.Block loop = Assert.Single(blocks, b => b.Text.StartsWith("for i in $(seq 10); do nc", StringComparison.Ordinal));
        var environment = CliHome();
        foreach (bool pty in BothWays)
            Serve(run, pty, dir, environment, secondPty => TenGreetingsFromWorkersInTurn(RunToEnd(loop, secondPty, dir, environment, Hang)));
    }

    [Fact]
    public async Task Generated_http_server_runs_as_its_readme_says_twice()
    {
        var (dir, blocks) = await Generated("http", "--handler", "http");
        Readme.Block run = Assert.Single(blocks, b => b.Text == "dotnet run\n");
        Readme.Block client = Assert.Single(blocks, b => b.Text.StartsWith("curl -i http://127.0.0.1:8080/", StringComparison.Ordinal));
        var environment = CliHome();
        foreach (bool pty in BothWays)
            Serve(run, pty, dir, environment, secondPty =>
            {
                string screen = RunToEnd(client, secondPty, dir, environment, Hang);
                Assert.Contains("HTTP/1.1 200 OK", screen); // curl colours the headers in a terminal
                Assert.Matches(@"Hello from \d+", screen);
                Assert.Matches(@"Requests/sec:\s+\d", screen);
                Assert.DoesNotContain("Socket errors", screen);
            });
    }

    [Fact]
    public async Task Generated_echo_server_runs_as_its_readme_says_twice()
    {
        var (dir, blocks) = await Generated("echo", "--handler", "echo");
        Readme.Block run = Assert.Single(blocks, b => b.Text == "dotnet run\n");
        Readme.Block nc = Assert.Single(blocks, b => b.Text == "nc 127.0.0.1 8080\n");
        var environment = CliHome();
        foreach (bool pty in BothWays)
            Serve(run, pty, dir, environment, _ =>
            {
                // nc reads what is typed: only a terminal can run it as the README says.
                using var typing = new Terminal(nc.Text, pty: true, dir, environment);
                Thread.Sleep(500); // nc has connected
                typing.Type("one line\r");
                Assert.True(Proc.WaitUntil(() => Regex.Matches(typing.Screen, "one line").Count >= 2, Hang),
                    "the typed line did not come back (the terminal shows it once as typed, once as echoed):\n" + typing.Screen);
                typing.Interrupt(); // "Ctrl+C ends nc"
                Assert.True(typing.WaitForExit(Hang) is not null, "Ctrl+C did not end nc:\n" + typing.Screen);
                Show("nc", typing);
            });
    }

    [Fact]
    public async Task Generated_socket_activation_and_tests_blocks_work_twice()
    {
        var (dir, blocks) = await Generated("systemd-tests", "--systemd", "--include-tests");
        Readme.Block activate = Assert.Single(blocks, b => b.Text.StartsWith("dotnet build\nsystemd-socket-activate", StringComparison.Ordinal));
        Readme.Block tests = Assert.Single(blocks, b => b.Text.StartsWith("dotnet test MyServer.Tests/", StringComparison.Ordinal));
        var environment = CliHome();
        foreach (bool pty in BothWays)
        {
            Assert.True(Client.PortIsFree(8080), "port 8080 is in use: the READMEs' blocks need it");
            using (var terminal = new Terminal(activate.Text, pty, dir, environment))
            {
                terminal.WaitFor("Listening on 127.0.0.1:8080", Build);
                // "starts the server on the first connection, which is then answered"
                Assert.Matches(@"^Hello from \d+\n$", Client.Greet(8080));
                terminal.WaitFor("pool ready", Hang);
                terminal.Interrupt();
                Assert.True(terminal.WaitForExit(Hang) is not null, "Ctrl+C did not end the server:\n" + terminal.Screen);
                Show(activate.ToString(), terminal);
                Assert.Contains("all workers have exited; stopped", terminal.Screen);
            }
            Assert.Matches(@"Passed!\s+- Failed:\s+0", RunToEnd(tests, pty, dir, environment, Build));
        }
    }
}
