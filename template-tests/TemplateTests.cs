using PreforkTemplates.Tests.Infrastructure;
using Xunit;
using Xunit.Abstractions;

// The server and these tests are for Linux (signals, /proc, Unix file modes).
[assembly: System.Runtime.Versioning.SupportedOSPlatform("linux")]

namespace PreforkTemplates.Tests;

/// <summary>What `dotnet new prefork-server` writes, and what it refuses.</summary>
[Collection("template")]
public sealed partial class TemplateTests(TemplateFixture fixture, ITestOutputHelper output)
{
    public static TheoryData<string> ScenarioIds() => [.. TemplateFixture.Scenarios.Select(s => s.Id)];

    private static Scenario Get(string id) => TemplateFixture.Get(id);

    /// <remarks>
    /// defaults and everything are kept whole; every other scenario keeps the list of its files
    /// and what differs from defaults once the name is accounted for (MyServer becomes the
    /// scenario's name in the names of files defaults does not have, and in text), so a change to a file touches only the
    /// snapshots whose file really differs.
    /// </remarks>
    [Theory]
    [MemberData(nameof(ScenarioIds))]
    public async Task Generated_tree_matches_its_snapshot(string id)
    {
        Scenario scenario = Get(id);
        string dir = await fixture.GeneratedAsync(scenario);
        string snapshots = Path.Combine(fixture.RepoRoot, "template-tests", "Snapshots");
        if (id is "defaults" or "everything")
        {
            Snapshot.Match(dir, Path.Combine(snapshots, id));
            return;
        }
        Scenario defaults = Get("defaults");
        string baseDir = Snapshot.Updating
            ? await fixture.GeneratedAsync(defaults) // written from the tree itself, whatever the order of the cases
            : Path.Combine(snapshots, defaults.Id);
        Snapshot.MatchAgainst(dir, Path.Combine(snapshots, id), baseDir,
            file => File.Exists(Path.Combine(baseDir, file)) ? file : file.Replace(scenario.Name, defaults.Name, StringComparison.Ordinal),
            text => text.Replace(defaults.Name, scenario.Binary, StringComparison.Ordinal)
                .Replace(defaults.Name.ToLowerInvariant(), scenario.Binary.ToLowerInvariant(), StringComparison.Ordinal));
    }

    [Theory]
    [MemberData(nameof(ScenarioIds))]
    public async Task Generated_project_builds_with_warnings_as_errors(string id)
    {
        string dir = await fixture.BuiltAsync(Get(id));
        string name = Get(id).Binary;
        Assert.True(File.Exists(Path.Combine(dir, "bin", "Debug", "net10.0", name + ".dll")), $"no {name}.dll in {dir}");
    }

    [Theory]
    [InlineData("--workers", "abc")]
    [InlineData("--port", "eighty")]
    [InlineData("--signals", "KILL")]
    [InlineData("--framework", "net4.8")]
    [InlineData("--handler", "grpc")]
    public async Task Bad_template_value_fails_and_writes_nothing(string option, string value)
    {
        string dir = Path.Combine(fixture.WorkDir, "bad-" + option.Trim('-') + "-" + value);
        CliResult result = await fixture.DotnetNewAsync(["prefork-server", "-n", "Bad", "-o", dir, option, value]);
        output.WriteLine(result.Output);
        Assert.NotEqual(0, result.ExitCode);
        Assert.Contains(value, result.Output);
        Assert.False(Directory.Exists(dir), $"{dir} was written");
    }

    /// <summary>
    /// Project, unit and test-folder names written into the generated text name files that
    /// exist. File names take the name as given (My.Server-2.csproj) while code takes its
    /// namespace form (My.Server_2): text that names a file must use the first.
    /// </summary>
    [Fact]
    public async Task Every_project_unit_and_test_folder_the_generated_text_names_exists()
    {
        string dir = await fixture.GeneratedAsync(Get("everything"));
        var named = new SortedSet<string>(StringComparer.Ordinal);
        foreach (string file in Directory.EnumerateFiles(dir, "*", SearchOption.AllDirectories))
            foreach (System.Text.RegularExpressions.Match m in System.Text.RegularExpressions.Regex.Matches(
                         File.ReadAllText(file), @"[\w.-]+\.(csproj|service|socket|Tests/)"))
                named.Add(m.Value);
        output.WriteLine(string.Join(", ", named));
        Assert.Contains("My.Server-2.csproj", named);
        Assert.Contains("My.Server-2.service", named);
        Assert.Contains("My.Server-2.Tests/", named);
        Assert.All(named, name => Assert.True(
            File.Exists(Path.Combine(dir, name)) || File.Exists(Path.Combine(dir, "My.Server-2.Tests", name)) || Directory.Exists(Path.Combine(dir, name)),
            $"{name} is named in the generated text but is not in the generated tree"));
    }

    /// <summary>
    /// systemd stops the service with KillSignal and reloads it with ExecReload; Docker and
    /// Kubernetes stop it with STOPSIGNAL. Each must be a signal the server handles: a HUP that
    /// the server leaves out of --signals would end the master, so `systemctl reload` would stop it.
    /// </summary>
    [Theory]
    [InlineData("INT,QUIT,USR1", "SIGQUIT", false)]
    [InlineData("INT,HUP", "SIGINT", true)]
    [InlineData("TERM,HUP,USR2", "SIGTERM", true)]
    [InlineData("USR1", "SIGKILL", false)]
    public async Task Units_and_manifests_follow_the_signals(string signals, string stopSignal, bool reload)
    {
        string dir = Path.Combine(fixture.WorkDir, "signals-" + signals.Replace(',', '-'));
        CliResult result = await fixture.DotnetNewAsync(["prefork-server", "-n", "Units", "-o", dir, "--no-restore", "--systemd", "--deploy",
            .. signals.Split(',').SelectMany(s => new[] { "--signals", s })]);
        Assert.True(result.ExitCode == 0, Cli.Describe(result));

        string[] unit = File.ReadAllLines(Path.Combine(dir, "Units.service"));
        Assert.DoesNotContain(unit, l => l.StartsWith('#') && l.Contains("#if", StringComparison.Ordinal));
        Assert.Equal($"KillSignal={stopSignal}", Assert.Single(unit, l => l.StartsWith("KillSignal=", StringComparison.Ordinal)));
        if (reload) Assert.Equal("ExecReload=/bin/kill -HUP $MAINPID", Assert.Single(unit, l => l.StartsWith("ExecReload=", StringComparison.Ordinal)));
        else Assert.DoesNotContain(unit, l => l.StartsWith("ExecReload=", StringComparison.Ordinal));

        Assert.Contains($"STOPSIGNAL {stopSignal}\n", File.ReadAllText(Path.Combine(dir, "Dockerfile")));
        string kubernetes = File.ReadAllText(Path.Combine(dir, "deploy", "kubernetes.yaml"));
        Assert.Contains($"STOPSIGNAL ({stopSignal[3..]}", kubernetes);
        Assert.DoesNotContain("#if", kubernetes);
    }

    /// <summary>
    /// Nothing points nowhere: every file or folder that a README, or a comment in a generated
    /// file, names is in the richest generated tree (relative to the project, to the file that
    /// names it, or by its file name anywhere in the tree). Code and configuration values are
    /// checked by the builds and the deploy tests; these are the words a user reads.
    /// </summary>
    [Fact]
    public async Task Every_file_and_folder_a_readme_or_comment_names_is_in_the_generated_project()
    {
        Scenario scenario = Get("everything");
        string dir = await fixture.GeneratedAsync(scenario);
        var (missing, checkedNames) = NamedButMissing(scenario, dir, Directory.EnumerateFiles(dir, "*", SearchOption.AllDirectories));
        output.WriteLine($"{checkedNames} names checked");
        Assert.True(checkedNames > 50, $"only {checkedNames} names found: the pattern no longer finds them");
        Assert.True(missing.Count == 0, "named but not in the generated project:\n" + string.Join("\n", missing));
    }

    /// <summary>
    /// Nothing points nowhere in any project: its README and docs/ name only files and folders
    /// that project has (a doc says nothing of what a switch the user did not choose would have
    /// written), every relative link among them leads to a file of the project and a heading of
    /// it, and every doc the project ships is linked from its README.
    /// </summary>
    [Theory]
    [MemberData(nameof(ScenarioIds))]
    public async Task Every_file_a_generated_doc_names_or_links_is_in_that_project(string id)
    {
        Scenario scenario = Get(id);
        string dir = await fixture.GeneratedAsync(scenario);
        var docs = Readme.ProjectDocs(dir);
        Assert.Contains("docs/operations.md", docs);
        var (missing, checkedNames) = NamedButMissing(scenario, dir, docs.Select(d => Path.Combine(dir, d)));
        var broken = new List<string>();
        int links = 0;
        foreach (string doc in docs)
        {
            broken.AddRange(Readme.BrokenLinks(Path.Combine(dir, doc), dir, out int found).Select(b => $"{doc}: {b}"));
            links += found;
        }
        string readme = File.ReadAllText(Path.Combine(dir, "README.md"));
        var unlinked = docs.Where(d => d != "README.md" && !Readme.LinkedFiles(readme).Contains(d)).ToList();
        output.WriteLine($"{string.Join(", ", docs)}: {checkedNames} names, {links} links checked");
        Assert.True(links > 10, $"only {links} links found: the pattern no longer finds them");
        Assert.True(missing.Count == 0, $"named in the '{id}' project's docs but not in it:\n" + string.Join("\n", missing));
        Assert.True(broken.Count == 0, $"links of the '{id}' project's docs that lead nowhere:\n" + string.Join("\n", broken));
        Assert.True(unlinked.Count == 0, $"docs of the '{id}' project that its README does not link: " + string.Join(", ", unlinked));
    }

    /// <summary>
    /// The files and folders that the readable text of <paramref name="files"/> names and the
    /// project in <paramref name="dir"/> lacks (relative to the project, to the file that names
    /// it, or by its file name anywhere in the tree), and how many names were checked.
    /// </summary>
    private static (List<string> Missing, int Checked) NamedButMissing(Scenario scenario, string dir, IEnumerable<string> files)
    {
        string[] all = [.. Directory.EnumerateFileSystemEntries(dir, "*", SearchOption.AllDirectories).Select(f => Path.GetRelativePath(dir, f))];
        // Not in a fresh tree, and rightly so: what a build makes, and the configuration file the docs show how to write.
        string[] outside = ["bin/", "obj/", $"{scenario.Binary}.conf"];
        var missing = new List<string>();
        int checkedNames = 0;
        foreach (string file in files)
        {
            string relative = Path.GetRelativePath(dir, file);
            string here = Path.GetDirectoryName(file)!;
            foreach (string text in ReadableText(file))
                foreach (System.Text.RegularExpressions.Match m in FileName().Matches(text))
                {
                    string name = m.Groups[1].Value;
                    checkedNames++;
                    bool found = outside.Contains(name) || Path.Exists(Path.Combine(dir, name)) || Path.Exists(Path.Combine(here, name))
                        || all.Any(f => Path.GetFileName(f.TrimEnd('/')) == name.TrimEnd('/'));
                    if (!found) missing.Add($"{relative} names {name}: \"{text.Trim()}\"");
                }
        }
        return (missing, checkedNames);
    }

    /// <summary>What a user reads of a file: all of a Markdown file, the comments of code and configuration.</summary>
    private static IEnumerable<string> ReadableText(string file)
    {
        string name = Path.GetFileName(file);
        if (name == ".dockerignore") yield break; // patterns of what to leave out, not names of what is there
        foreach (string line in File.ReadLines(file))
        {
            string trimmed = line.TrimStart();
            if (name.EndsWith(".md", StringComparison.Ordinal)) yield return line;
            else if (name.EndsWith(".cs", StringComparison.Ordinal))
            {
                int comment = line.IndexOf("//", StringComparison.Ordinal);
                if (comment >= 0 && !line[..comment].Contains('"')) yield return line[comment..];
            }
            else if (name.EndsWith(".csproj", StringComparison.Ordinal)) { if (trimmed.StartsWith("<!--", StringComparison.Ordinal) || !trimmed.StartsWith('<')) yield return line; }
            else if (trimmed.StartsWith('#')) yield return line;
        }
    }

    [System.Text.RegularExpressions.GeneratedRegex(@"(?<![\w/.:$(){}@-])((?:[\w.-]+/)*(?:[\w.-]+\.(?:cs|csproj|md|json|service|socket|yaml|yml|cfg|conf|sh|slnx|sln|props|targets)|Dockerfile|\.dockerignore)|(?:[\w.-]+/)+)(?![\w/-])")]
    private static partial System.Text.RegularExpressions.Regex FileName();

    [Fact]
    public async Task A_keyword_for_a_name_builds_and_serves()
    {
        // `dotnet new console -n class` is accepted; so the namespace is written @class.
        string dir = await fixture.BuiltAsync(TemplateFixture.Get("name-class"));
        Assert.All(Directory.GetFiles(dir, "*.cs"), f => Assert.StartsWith("namespace @class;", File.ReadAllLines(f).First(l => l.StartsWith("namespace", StringComparison.Ordinal))));
        using var server = ServerProcess.Start(dir, "--host", "127.0.0.1", "--port", "0", "--workers", "2").WaitUntilReady();
        Assert.Matches(@"^Hello from \d+\n$", Client.Greet(server.Port));
    }

    /// <summary>
    /// -n System would build a program that cannot start (the runtime loads .NET's System.dll
    /// in its place): the first build says so. A name that only looks like one of .NET's builds.
    /// </summary>
    [Theory]
    [InlineData("System", true)]
    [InlineData("Microsoft.CSharp", true)]
    [InlineData("System.Tools", false)]
    public async Task A_name_of_one_of_the_runtimes_own_assemblies_fails_the_first_build(string name, bool refused)
    {
        string dir = Path.Combine(fixture.WorkDir, "out", "name-" + Guid.NewGuid().ToString("N")[..6]);
        CliResult generated = await fixture.DotnetNewAsync(["prefork-server", "-n", name, "-o", dir]);
        Assert.Equal(0, generated.ExitCode);
        CliResult build = await Cli.DotnetAsync(["build", dir, "--disable-build-servers", "-nologo", "-warnaserror"], dir);
        output.WriteLine(build.StdOut);
        string message = $"The project is named '{name}', as .NET's own {name}.dll: the runtime would load that in place of this program";
        if (refused)
        {
            Assert.NotEqual(0, build.ExitCode);
            Assert.Contains(message, build.StdOut);
            return;
        }
        Assert.Equal(0, build.ExitCode);
        Assert.DoesNotContain(message, build.StdOut);
        using var server = ServerProcess.Start(dir, "--host", "127.0.0.1", "--port", "0", "--workers", "2").WaitUntilReady();
        Assert.Matches(@"^Hello from \d+\n$", Client.Greet(server.Port));
    }

    [Fact]
    public async Task Out_of_range_numbers_fail_the_first_build_naming_the_parameter_and_its_range()
    {
        string dir = Path.Combine(fixture.WorkDir, "out", "out-of-range-" + Guid.NewGuid().ToString("N")[..6]);
        CliResult generated = await fixture.DotnetNewAsync(["prefork-server", "-n", "MyServer", "-o", dir, "--no-restore", "-w", "0", "-p", "70000"]);
        Assert.Equal(0, generated.ExitCode);
        CliResult build = await Cli.DotnetAsync(["build", dir, "--disable-build-servers", "-nologo"], dir);
        output.WriteLine(build.StdOut);
        Assert.NotEqual(0, build.ExitCode);
        Assert.Contains("dotnet new --workers gave DefaultWorkers = 0 in Settings.cs; the server takes 1 to 1024.", build.StdOut);
        Assert.Contains("dotnet new --port gave DefaultPort = 70000 in Settings.cs; the server takes 0 to 65535.", build.StdOut);

        // In range, the project has no such target.
        Assert.DoesNotContain("TemplateValuesOutOfRange", File.ReadAllText(Path.Combine(await fixture.GeneratedAsync(TemplateFixture.Get("workers-port-signals")), "MyServer.csproj")));
    }

    [Fact]
    public async Task Help_lists_every_parameter_with_its_description()
    {
        CliResult result = await fixture.DotnetNewAsync(["prefork-server", "--help"]);
        Assert.Equal(0, result.ExitCode);
        foreach (string option in new[] { "-w, --workers", "-p, --port", "-g, --greeting", "-s, --signals", "-f, --framework",
                     "--handler", "--aot", "--systemd", "--include-tests", "--docker", "--deploy", "--no-restore" })
            Assert.Contains(option, result.StdOut);
        Assert.Contains("Number of worker processes, 1 to 1024", result.StdOut);
        // Each handler choice is listed with what it does.
        Assert.Matches(@"greeting\s+send the greeting", result.StdOut);
        Assert.Matches(@"echo\s+send back every line", result.StdOut);
        Assert.Matches(@"http\s+an\s+ASP\.NET\s+Core\s+minimal\s+API", result.StdOut);
    }
}
