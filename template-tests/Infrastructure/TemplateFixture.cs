using System.Collections.Concurrent;
using Xunit;

namespace PreforkTemplates.Tests.Infrastructure;

/// <summary>
/// Packs the template package once, installs the .nupkg into an isolated template store
/// (<c>--debug:custom-hive</c>) in a temporary directory outside the repository, generates
/// and builds the scenarios' projects (two at a time, as soon as the run starts), and
/// uninstalls and deletes everything at the end.
/// </summary>
public sealed class TemplateFixture : IAsyncLifetime
{
    /// <summary>Every character that can break generated C#: quotes, backslash, braces, newline, tab, non-ASCII, an emoji.</summary>
    public const string NastyGreeting = "Say \"hi\" \\ {brace} {pid}\n\tnäive 日本 😀 \u2028 end";

    public static readonly Scenario[] Scenarios =
    [
        new("defaults", "MyServer", []),
        new("workers-port-signals", "MyServer", ["--workers", "2", "--port", "9000", "--signals", "INT", "--signals", "QUIT"]),
        new("nasty-greeting", "MyServer", ["--greeting", NastyGreeting]),
        new("name-My.Server-2", "My.Server-2", []),
        new("name-Worker", "Worker", []),
        new("name-Socket", "Socket", []),
        new("name-Connection", "Connection", []),
        new("name-Program", "Program", []),
        new("name-class", "class", []),
        new("aot", "MyAotServer", ["--aot"]),
        new("systemd", "MyServer", ["--systemd", "--port", "9100"]),
        new("handler-echo", "MyServer", ["--handler", "echo"]),
        new("handler-http", "MyServer", ["--handler", "http"]),
        new("include-tests", "MyServer", ["--include-tests"]),
        new("docker", "MyServer", ["--docker", "--port", "9200"]),
        new("docker-aot", "MyAotServer", ["--docker", "--aot"]),
        new("docker-http", "MyServer", ["--docker", "--handler", "http"]),
        new("deploy", "MyServer", ["--deploy", "--port", "9300"]),
        new("everything", "My.Server-2", ["--handler", "http", "--include-tests", "--docker", "--deploy", "--systemd", "--aot", "--workers", "3"]),
    ];

    /// <summary>The scenario of that id.</summary>
    public static Scenario Get(string id) => Scenarios.Single(s => s.Id == id);

    public string RepoRoot { get; } = FindRepoRoot();
    public string WorkDir { get; } = Path.Combine(Path.GetTempPath(), "prefork-tests-" + Guid.NewGuid().ToString("N")[..8]);
    public string Hive => Path.Combine(WorkDir, "hive");
    public string PackagePath { get; private set; } = "";

    private readonly ConcurrentDictionary<string, Lazy<Task<string>>> generated = new();
    private readonly ConcurrentDictionary<string, Lazy<Task<string>>> built = new();
    private readonly SemaphoreSlim buildSlots = new(2);
    private readonly SemaphoreSlim hiveGate = new(1);

    public async Task InitializeAsync()
    {
        Directory.CreateDirectory(WorkDir);
        CliResult pack = await Cli.DotnetAsync(["pack", Path.Combine(RepoRoot, "PreforkTemplates.csproj"), "-c", "Release",
            "-o", Path.Combine(WorkDir, "pack"), "--disable-build-servers"]);
        if (pack.ExitCode != 0) throw new InvalidOperationException("dotnet pack failed:\n" + Cli.Describe(pack));
        PackagePath = Directory.GetFiles(Path.Combine(WorkDir, "pack"), "PreforkTemplates.*.nupkg").Single();

        CliResult install = await Cli.DotnetAsync(["new", "install", PackagePath, "--debug:custom-hive", Hive]);
        if (install.ExitCode != 0) throw new InvalidOperationException("dotnet new install failed:\n" + Cli.Describe(install));

        // Start every build now; tests wait for the ones they need. PREFORK_TESTS_LAZY=1
        // builds only what the tests that run ask for (for a filtered run while developing).
        if (Environment.GetEnvironmentVariable("PREFORK_TESTS_LAZY") == "1") return;
        foreach (Scenario scenario in Scenarios) _ = BuiltAsync(scenario);
        _ = BehaviourProjectAsync();
        _ = HttpBehaviourProjectAsync();
        _ = GrpcProjectAsync();
        _ = PublishedAotAsync();
        _ = PublishedHttpAotAsync();
        _ = PublishedArm64Async(aot: false);
        _ = PublishedArm64Async(aot: true);
    }

    public async Task DisposeAsync()
    {
        await AllBuiltAsync(); // a filtered run may not need every build: leave none running
        await Cli.DotnetAsync(["new", "uninstall", "PreforkTemplates", "--debug:custom-hive", Hive]);
        try { Directory.Delete(WorkDir, recursive: true); } catch (IOException) { }
    }

    /// <summary>Waits for every build the fixture started (whether it succeeded or not).</summary>
    public async Task AllBuiltAsync()
    {
        foreach (var build in built.Values.ToList())
        {
            try { await build.Value; } catch (InvalidOperationException) { }
        }
    }

    /// <summary>
    /// Runs <c>dotnet new</c> with this fixture's template store, one at a time: two at once may
    /// both open the store's packages.json, and one then fails ("being used by another process",
    /// exit code 70; seen in CI when every scenario is generated at the start).
    /// </summary>
    public async Task<CliResult> DotnetNewAsync(IEnumerable<string> args)
    {
        await hiveGate.WaitAsync();
        try
        {
            return await Cli.DotnetAsync(["new", .. args, "--debug:custom-hive", Hive]);
        }
        finally
        {
            hiveGate.Release();
        }
    }

    /// <summary>The directory a scenario was generated into (without restore, so the tree is only the template's output).</summary>
    public Task<string> GeneratedAsync(Scenario scenario) =>
        generated.GetOrAdd(scenario.Id, _ => new Lazy<Task<string>>(() => GenerateAsync(scenario))).Value;

    /// <summary>The scenario's project, built with warnings as errors.</summary>
    public Task<string> BuiltAsync(Scenario scenario) =>
        built.GetOrAdd(scenario.Id, _ => new Lazy<Task<string>>(async () =>
        {
            string dir = await GeneratedAsync(scenario);
            await BuildAsync(dir);
            return dir;
        })).Value;

    /// <summary>
    /// The default project, with its Handler.cs replaced as a user would change it, by
    /// template-tests/Handlers/Behave.Handler.cs: it waits SLOW_MS milliseconds before answering
    /// (only the client whose port is SLOW_PORT, if that is set), fails to start when FAIL_START
    /// is set, and blocks its thread forever on the first connection that manages to rename the
    /// file HANG_FILE. Built in Release, as servers run in production: a Debug build keeps every
    /// local alive to the end of its method, which hides what a garbage collection takes away.
    /// </summary>
    public Task<string> BehaviourProjectAsync() =>
        built.GetOrAdd("behaviour", _ => new Lazy<Task<string>>(async () =>
        {
            string dir = await GenerateAsync(new Scenario("behaviour", "Behave", []));
            UseHandler(dir, "Behave.Handler.cs");
            await BuildAsync(dir, "Release");
            return dir;
        })).Value;

    /// <summary>Copies a test-owned Handler.cs (template-tests/Handlers/<paramref name="name"/>) over a generated project's.</summary>
    /// <summary>
    /// A --handler http project with the test's own endpoints (Handlers/Http.Handler.cs): slow,
    /// blocking, failing, body-reading. Built in Release, as it would be deployed.
    /// </summary>
    public Task<string> HttpBehaviourProjectAsync() =>
        built.GetOrAdd("http-behaviour", _ => new Lazy<Task<string>>(async () =>
        {
            string dir = await GenerateAsync(new Scenario("http-behaviour", "HttpBehave", ["--handler", "http"]));
            UseHandler(dir, "Http.Handler.cs");
            await BuildAsync(dir, "Release");
            return dir;
        })).Value;

    /// <summary>
    /// A --handler http project with a gRPC service, added as a user would: Grpc.AspNetCore in
    /// the project file, Protos/greet.proto (template-tests/Handlers/greet.proto) compiled as a
    /// server, and Handlers/Grpc.Handler.cs as Handler.cs. Built in Release.
    /// </summary>
    public Task<string> GrpcProjectAsync() =>
        built.GetOrAdd("grpc", _ => new Lazy<Task<string>>(async () =>
        {
            string dir = await GenerateAsync(new Scenario("grpc", "GrpcServer", ["--handler", "http"]));
            UseHandler(dir, "Grpc.Handler.cs");
            Directory.CreateDirectory(Path.Combine(dir, "Protos"));
            File.Copy(Path.Combine(RepoRoot, "template-tests", "Handlers", "greet.proto"), Path.Combine(dir, "Protos", "greet.proto"));
            string project = Path.Combine(dir, "GrpcServer.csproj");
            File.WriteAllText(project, File.ReadAllText(project).Replace("</Project>", """
                  <ItemGroup>
                    <PackageReference Include="Grpc.AspNetCore" Version="2.85.0" />
                    <Protobuf Include="Protos/greet.proto" GrpcServices="Server" />
                  </ItemGroup>

                </Project>
                """, StringComparison.Ordinal));
            await BuildAsync(dir, "Release");
            return dir;
        })).Value;

    public void UseHandler(string projectDir, string name) =>
        File.Copy(Path.Combine(RepoRoot, "template-tests", "Handlers", name), Path.Combine(projectDir, "Handler.cs"), overwrite: true);

    /// <summary>
    /// A --aot project of its own (the shared one's tree is compared with its snapshot, which has
    /// no publish/), published as a NativeAOT binary (warnings as errors); returns the binary's path.
    /// </summary>
    public Task<string> PublishedAotAsync()
    {
        Scenario scenario = new("aot-published", "MyAotServer", ["--aot"]);
        return PublishedAsync(scenario, () => GenerateAsync(scenario), "linux-x64");
    }

    /// <summary>A --handler http --aot project of its own, published as a NativeAOT binary (warnings as errors); returns the binary's path.</summary>
    public Task<string> PublishedHttpAotAsync()
    {
        Scenario scenario = new("http-aot", "MyAotServer", ["--handler", "http", "--aot"]);
        return PublishedAsync(scenario, () => GenerateAsync(scenario), "linux-x64");
    }

    /// <summary>
    /// A default project of its own published for linux-arm64 (warnings as errors), self-contained
    /// or, with <paramref name="aot"/>, as a NativeAOT binary; returns the binary's path.
    /// </summary>
    public Task<string> PublishedArm64Async(bool aot)
    {
        Scenario scenario = aot ? new("arm64-aot", "MyAotServer", ["--aot"]) : new("arm64-jit", "MyServer", []);
        return PublishedAsync(scenario, () => GenerateAsync(scenario), "linux-arm64", aot ? [] : ["--self-contained"]);
    }

    private Task<string> PublishedAsync(Scenario scenario, Func<Task<string>> project, string runtime, params string[] options) =>
        built.GetOrAdd(scenario.Id + "-published-" + runtime, _ => new Lazy<Task<string>>(async () =>
        {
            string dir = await project();
            string publish = Path.Combine(dir, "publish");
            await buildSlots.WaitAsync();
            try
            {
                CliResult result = await Cli.DotnetAsync(["publish", dir, "-c", "Release", "-r", runtime, .. options, "-warnaserror",
                    "--disable-build-servers", "-nologo", "-o", publish], dir, TimeSpan.FromMinutes(10));
                if (result.ExitCode != 0) throw new InvalidOperationException($"publish of {scenario.Id} for {runtime} failed:\n" + Cli.Describe(result));
            }
            finally
            {
                buildSlots.Release();
            }
            return Path.Combine(publish, scenario.Binary);
        })).Value;

    /// <summary>A project of its own for the caller (not built, not shared with other tests), in WorkDir/out/ID.</summary>
    public async Task<string> GenerateAsync(Scenario scenario)
    {
        string dir = Path.Combine(WorkDir, "out", scenario.Id);
        CliResult result = await DotnetNewAsync(["prefork-server", "-n", scenario.Name, "-o", dir, "--no-restore", .. scenario.Arguments]);
        if (result.ExitCode != 0) throw new InvalidOperationException($"dotnet new for {scenario.Id} failed:\n" + Cli.Describe(result));
        return dir;
    }

    private async Task BuildAsync(string dir, string configuration = "Debug")
    {
        await buildSlots.WaitAsync();
        try
        {
            CliResult result = await Cli.DotnetAsync(["build", dir, "-c", configuration, "-warnaserror", "--disable-build-servers", "-nologo"], dir);
            if (result.ExitCode != 0) throw new InvalidOperationException($"build of {dir} failed:\n" + Cli.Describe(result));
            if (result.StdOut.Contains("warning", StringComparison.OrdinalIgnoreCase) && !result.StdOut.Contains(" 0 Warning(s)", StringComparison.Ordinal))
                throw new InvalidOperationException($"build of {dir} has warnings:\n" + result.StdOut);
        }
        finally
        {
            buildSlots.Release();
        }
    }

    private static string FindRepoRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
            if (File.Exists(Path.Combine(dir.FullName, "PreforkTemplates.csproj"))) return dir.FullName;
        throw new InvalidOperationException("cannot find the repository root (PreforkTemplates.csproj) above " + AppContext.BaseDirectory);
    }
}
