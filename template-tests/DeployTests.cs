using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Runtime.InteropServices;
using System.Text.Json;
using System.Text.RegularExpressions;
using Mono.Unix.Native;
using PreforkTemplates.Tests.Infrastructure;
using Xunit;
using Xunit.Abstractions;
using YamlDotNet.RepresentationModel;

namespace PreforkTemplates.Tests;

/// <summary>
/// --docker and --deploy. No container engine runs here, so the Dockerfile is checked against
/// the generated project, and its build stage is carried out without one: the build context is
/// copied as .dockerignore filters it, the COPY and RUN steps are done in a scratch directory
/// that stands for the image's file system, and the program that ENTRYPOINT names is started.
/// The load balancer files are checked and run with the real haproxy and nginx.
/// </summary>
[Collection("template")]
public sealed class DeployTests(TemplateFixture fixture, ITestOutputHelper output)
{
    public static TheoryData<string> DockerScenarios() => ["docker", "docker-aot", "docker-http", "deploy", "everything"];
    public static TheoryData<string> DeployScenarios() => ["deploy", "everything"];

    private static Scenario Get(string id) => TemplateFixture.Get(id);

    // ---- Dockerfile, statically ----

    [Theory]
    [MemberData(nameof(DockerScenarios))]
    public async Task Dockerfile_stages_fit_the_project(string id)
    {
        string dir = await fixture.GeneratedAsync(Get(id));
        var project = GeneratedProject.Read(dir);
        List<Stage> stages = Dockerfile.Parse(File.ReadAllText(Path.Combine(dir, "Dockerfile")));
        output.WriteLine(string.Join("\n", stages.Select(s => $"FROM {s.Image} AS {s.Name}: {s.Instructions.Count} instructions")));

        Assert.Equal(2, stages.Count);
        Stage build = stages[0], run = stages[1];
        string version = project.FrameworkVersion; // net10.0 -> 10.0
        Assert.Equal($"mcr.microsoft.com/dotnet/sdk:{version}-noble{(project.Aot ? "-aot" : "")}", build.Image);
        Assert.Equal(project.Aot ? $"mcr.microsoft.com/dotnet/runtime-deps:{version}-noble-chiseled"
            : project.AspNetCore ? $"mcr.microsoft.com/dotnet/aspnet:{version}-noble-chiseled"
            : $"mcr.microsoft.com/dotnet/runtime:{version}-noble-chiseled", run.Image);
        Assert.NotNull(build.Name);
        // One Dockerfile for every platform (docker buildx --platform linux/amd64,linux/arm64): the
        // SDK runs on the build machine's platform and publishes for the image's (TARGETARCH), and
        // only the run stage is of the image's platform, so nothing runs under emulation.
        Assert.Equal("$BUILDPLATFORM", build.Platform);
        Assert.Null(run.Platform);

        // The build stage: restore from the project file alone (a cached layer), then copy the rest
        // and publish; for NativeAOT, first a cross toolchain if the image's architecture is not the
        // build machine's.
        var copies = build.All("COPY").ToList();
        var runs = build.All("RUN").Where(r => !Dockerfile.IsCrossToolchain(r)).ToList();
        Instruction[] cross = [.. build.All("RUN").Where(Dockerfile.IsCrossToolchain)];
        Assert.Equal(project.Aot ? 1 : 0, cross.Length);
        Assert.All(cross, c => Assert.True(c.Line < copies[0].Line, $"line {c.Line}: the cross toolchain after the first COPY (reinstalled at every project change)"));
        Assert.Equal(project.Aot, build.All("ARG").Any(a => a.Arguments == "BUILDARCH"));
        Assert.Equal(2, copies.Count);
        Assert.Equal(2, runs.Count);
        Assert.Equal(new[] { project.ProjectFile, "./" }, Dockerfile.CopyArguments(copies[0]).Items);
        Assert.Equal(new[] { ".", "./" }, Dockerfile.CopyArguments(copies[1]).Items);
        Assert.True(copies[0].Line < runs[0].Line && runs[0].Line < copies[1].Line && copies[1].Line < runs[1].Line,
            "expected COPY project file, RUN restore, COPY ., RUN publish, in this order");
        string[] restore = Dockerfile.Words(runs[0]), publish = Dockerfile.Words(runs[1]);
        Assert.Equal(new[] { "dotnet", "restore", project.ProjectFile }, restore[..3]);
        Assert.Equal(new[] { "dotnet", "publish", project.ProjectFile }, publish[..3]);
        Assert.Equal("Release", Dockerfile.Option(publish, "-c"));
        Assert.Contains("--no-restore", publish);
        // --no-restore only works if the restore was for the same runtime identifier.
        Assert.Equal(Dockerfile.Option(restore, "-a"), Dockerfile.Option(publish, "-a"));
        Assert.Equal("$TARGETARCH", Dockerfile.Option(publish, "-a"));
        Assert.Contains(build.All("ARG"), a => a.Arguments == "TARGETARCH");
        string publishDir = Dockerfile.Option(publish, "-o") ?? throw new Xunit.Sdk.XunitException("the publish has no -o");

        // Every COPY source exists in the build context, that is: in the project and not ignored.
        var ignore = new DockerIgnore(File.ReadAllText(Path.Combine(dir, ".dockerignore")));
        foreach (Instruction copy in copies)
        {
            foreach (string source in Dockerfile.CopyArguments(copy).Items[..^1])
            {
                Assert.True(source == "." || File.Exists(Path.Combine(dir, source)) || Directory.Exists(Path.Combine(dir, source)),
                    $"line {copy.Line}: COPY source '{source}' is not in {dir}");
                Assert.False(source != "." && ignore.Excludes(source), $"line {copy.Line}: COPY source '{source}' is excluded by .dockerignore");
            }
        }

        // The run stage takes the publish output and runs the program named like the assembly.
        Instruction fromBuild = Assert.Single(run.All("COPY"));
        var (from, items) = Dockerfile.CopyArguments(fromBuild);
        Assert.Equal(build.Name, from);
        Assert.Equal(new[] { publishDir, "./" }, items);
        string workdir = Assert.Single(run.All("WORKDIR")).Arguments;
        string[] entrypoint = Dockerfile.ExecForm(Assert.Single(run.All("ENTRYPOINT")));
        Assert.Equal(workdir + "/" + project.AssemblyName, entrypoint[0]);
        Assert.Equal(Get(id).Binary, project.AssemblyName);

        string user = Assert.Single(run.All("USER")).Arguments;
        Assert.True(user is "$APP_UID" or "${APP_UID}" || (int.TryParse(user, out int uid) && uid > 0),
            $"USER {user}: expected $APP_UID (the chiseled images' non-root user) or a non-zero uid");

        Assert.Equal(project.DefaultPort.ToString(CultureInfo.InvariantCulture), Assert.Single(run.All("EXPOSE")).Arguments);

        string stop = Assert.Single(run.All("STOPSIGNAL")).Arguments;
        Assert.Equal("SIG" + ExpectedStopSignal(project.Signals), stop);
        Assert.Contains(stop[3..], project.Signals);
    }

    /// <summary>TERM is graceful; without it QUIT (graceful too); without both INT (quick); else none is handled.</summary>
    private static string ExpectedStopSignal(IReadOnlyList<string> signals) =>
        signals.Contains("TERM") ? "TERM" : signals.Contains("QUIT") ? "QUIT" : signals.Contains("INT") ? "INT" : "KILL";

    [Theory]
    [InlineData(new[] { "TERM" }, "SIGTERM")]
    [InlineData(new[] { "INT", "QUIT" }, "SIGQUIT")]
    [InlineData(new[] { "QUIT", "TERM", "HUP" }, "SIGTERM")]
    [InlineData(new[] { "INT", "HUP" }, "SIGINT")]
    [InlineData(new[] { "HUP", "USR1" }, "SIGKILL")]
    public async Task Stop_signal_follows_the_signals_the_server_handles(string[] signals, string expected)
    {
        string dir = Path.Combine(fixture.WorkDir, "stopsignal-" + string.Join("-", signals));
        CliResult result = await fixture.DotnetNewAsync(["prefork-server", "-n", "Sig", "-o", dir, "--no-restore", "--docker",
            .. signals.SelectMany(s => new[] { "--signals", s })]);
        Assert.True(result.ExitCode == 0, Cli.Describe(result));
        var project = GeneratedProject.Read(dir);
        Assert.Equal(signals.Order(), project.Signals.Order());
        Stage run = Dockerfile.Parse(File.ReadAllText(Path.Combine(dir, "Dockerfile")))[^1];
        Assert.Equal(expected, Assert.Single(run.All("STOPSIGNAL")).Arguments);
        Assert.Equal(expected, "SIG" + ExpectedStopSignal(project.Signals));
    }

    [Fact]
    public async Task NativeAOT_Dockerfile_installs_a_cross_toolchain_only_for_another_architecture()
    {
        string dir = await fixture.GeneratedAsync(Get("docker-aot"));
        Instruction cross = Assert.Single(Dockerfile.Parse(File.ReadAllText(Path.Combine(dir, "Dockerfile")))[0].All("RUN"), Dockerfile.IsCrossToolchain);
        string scratch = Path.Combine(fixture.WorkDir, "docker-cross-" + Guid.NewGuid().ToString("N")[..6]);
        (string Build, string Target, string? Packages)[] cases =
        [
            ("amd64", "amd64", null),
            ("arm64", "arm64", null),
            ("amd64", "arm64", "gcc-aarch64-linux-gnu libc6-dev-arm64-cross"),
            ("arm64", "amd64", "gcc-x86-64-linux-gnu libc6-dev-amd64-cross"),
        ];
        foreach (var (build, target, packages) in cases)
        {
            string[] calls = await Dockerfile.AptGetCalls(cross, new Dictionary<string, string> { ["BUILDARCH"] = build, ["TARGETARCH"] = target }, scratch);
            output.WriteLine($"{build} -> {target}: {string.Join("; ", calls.Select(c => "apt-get " + c))}");
            Assert.Equal(packages is null ? [] : ["update", "install -y --no-install-recommends " + packages], calls);
        }
        // The arm64 ones are what the NativeAOT arm64 test links with on this x64 machine (test.sh
        // installs Debian's packages of the same names).
        if (RuntimeInformation.OSArchitecture == Architecture.X64)
            foreach (string package in new[] { "gcc-aarch64-linux-gnu", "libc6-dev-arm64-cross" })
            {
                CliResult installed = await Cli.RunAsync("dpkg-query", ["-W", "-f=${Status}", package]);
                Assert.True(installed.StdOut.EndsWith("ok installed", StringComparison.Ordinal), $"{package} is not installed here: {installed.Output}");
            }
    }

    [Theory]
    [MemberData(nameof(DockerScenarios))]
    public async Task Dockerignore_leaves_out_build_output_and_tests(string id)
    {
        string dir = await fixture.GeneratedAsync(Get(id));
        var ignore = new DockerIgnore(File.ReadAllText(Path.Combine(dir, ".dockerignore")));
        string tests = Get(id).Name + ".Tests"; // the folder --include-tests writes (identity form of the name)
        foreach (string path in new[] { "bin/Debug/net10.0/x.dll", "obj/project.assets.json", $"{tests}/UnitTest1.cs",
                     $"{tests}/bin/Debug/x.dll", ".git/HEAD" })
            Assert.True(ignore.Excludes(path), $".dockerignore does not exclude {path}");
        foreach (string path in new[] { GeneratedProject.Read(dir).ProjectFile, "Program.cs", "Handler.cs", "Settings.cs" })
            Assert.False(ignore.Excludes(path), $".dockerignore excludes {path}");
    }

    // ---- Dockerfile, its build stage carried out without an engine ----

    [Theory]
    [MemberData(nameof(DockerScenarios))]
    public async Task Dockerfile_build_stage_publishes_the_program_its_entrypoint_runs(string id)
    {
        Scenario scenario = Get(id);
        string dir = await fixture.BuiltAsync(scenario); // with bin/ and obj/, as on a developer's machine
        var project = GeneratedProject.Read(dir);
        List<Stage> stages = Dockerfile.Parse(File.ReadAllText(Path.Combine(dir, "Dockerfile")));
        string scratch = Path.Combine(fixture.WorkDir, "docker-" + id + "-" + Guid.NewGuid().ToString("N")[..6]);

        // The build context: the project as .dockerignore filters it.
        string context = Path.Combine(scratch, "context");
        var ignore = new DockerIgnore(File.ReadAllText(Path.Combine(dir, ".dockerignore")));
        CopyContext(dir, context, ignore, "");
        Assert.True(Directory.Exists(Path.Combine(dir, "obj")), "the built project has no obj/: nothing for .dockerignore to leave out");
        Assert.False(Directory.Exists(Path.Combine(context, "bin")) || Directory.Exists(Path.Combine(context, "obj")),
            "bin/ or obj/ went into the build context");
        Assert.Empty(Directory.GetDirectories(context, "*.Tests"));

        string hostArch = RuntimeInformation.OSArchitecture switch
        {
            Architecture.X64 => "amd64",
            Architecture.Arm64 => "arm64",
            var other => throw new Xunit.Sdk.XunitException($"no Docker TARGETARCH for {other}"),
        };
        var roots = new Dictionary<string, string>(); // stage name -> the directory that stands for its file system
        string image = "";
        var watch = Stopwatch.StartNew();
        foreach (Stage stage in stages)
        {
            string root = image = Path.Combine(scratch, "stage-" + stages.IndexOf(stage));
            Directory.CreateDirectory(root);
            if (stage.Name is not null) roots[stage.Name] = root;
            string workdir = "/";
            var args = new Dictionary<string, string>();
            foreach (Instruction step in stage.Instructions)
            {
                switch (step.Keyword)
                {
                    case "WORKDIR":
                        workdir = step.Arguments;
                        Directory.CreateDirectory(Under(root, workdir));
                        break;
                    case "ARG":
                        // BuildKit gives TARGETARCH the architecture the image is built for and
                        // BUILDARCH the build machine's: here both are this machine's.
                        Assert.Contains(step.Arguments, new[] { "TARGETARCH", "BUILDARCH" });
                        args[step.Arguments] = hostArch;
                        break;
                    case "RUN" when Dockerfile.IsCrossToolchain(step):
                        Assert.Empty(await Dockerfile.AptGetCalls(step, args, Path.Combine(scratch, "cross"))); // the same architecture: nothing to install
                        break;
                    case "COPY":
                        var (from, items) = Dockerfile.CopyArguments(step);
                        string sourceRoot = from is null ? context
                            : roots.TryGetValue(from, out string? other) ? other
                            : throw new Xunit.Sdk.XunitException($"line {step.Line}: COPY --from={from}: no such stage");
                        string destination = items[^1].StartsWith('/') ? Under(root, items[^1]) : Path.Combine(Under(root, workdir), items[^1]);
                        foreach (string source in items[..^1])
                            Copy(Under(sourceRoot, source), destination, step);
                        break;
                    case "RUN":
                        string[] command = Dockerfile.Words(step)
                            .Select(w => Dockerfile.Expand(w, args, step))
                            .Select(w => w.StartsWith('/') ? Under(root, w) : w)
                            .ToArray();
                        Assert.True(command[0] == "dotnet", $"line {step.Line}: only dotnet commands can be run here: {step.Arguments}");
                        // Warnings would pass unnoticed in an image build: here they fail.
                        if (command[1] == "publish") command = [.. command, "-warnaserror"];
                        output.WriteLine($"RUN {string.Join(' ', command[1..])}");
                        CliResult result = await Cli.RunAsync("dotnet", command[1..], Under(root, workdir), TimeSpan.FromMinutes(10));
                        Assert.True(result.ExitCode == 0, $"line {step.Line}: {step.Arguments}\n{Cli.Describe(result)}");
                        break;
                }
            }
        }
        output.WriteLine($"build stage carried out in {watch.Elapsed.TotalSeconds:0.0} s");

        // The image's file system: the program that ENTRYPOINT names, and what it needs beside it.
        string[] entrypoint = Dockerfile.ExecForm(Assert.Single(stages[^1].All("ENTRYPOINT")));
        string program = Under(image, entrypoint[0]);
        string appDir = Path.GetDirectoryName(program)!;
        output.WriteLine($"{appDir}: {string.Join(" ", Directory.GetFiles(appDir).Select(Path.GetFileName))}");
        Assert.True(File.Exists(program), $"ENTRYPOINT {entrypoint[0]}: no such file in the image");
        Assert.True(File.GetUnixFileMode(program).HasFlag(UnixFileMode.OtherExecute), $"{entrypoint[0]} is not executable by the non-root user");
        Assert.True(File.Exists(Path.Combine(appDir, "libMonoPosixHelper.so")), "libMonoPosixHelper.so is not beside the program");
        // COPY keeps root as the owner: the non-root user reads the files as "other".
        Assert.All(Directory.GetFiles(appDir), f => Assert.True(File.GetUnixFileMode(f).HasFlag(UnixFileMode.OtherRead), $"{f} is not readable by the non-root user"));
        if (project.Aot)
        {
            // runtime-deps has no .NET: the program must be native.
            Assert.False(File.Exists(program + ".dll"), "a managed .dll in a NativeAOT image");
            Assert.False(File.Exists(program + ".dbg"), "the debug symbols went into the image");
        }
        else
        {
            // runtime:X.Y has .NET X.Y, aspnet:X.Y also ASP.NET Core X.Y: the program must ask
            // for those frameworks and no other.
            using JsonDocument config = JsonDocument.Parse(File.ReadAllText(program + ".runtimeconfig.json"));
            JsonElement options = config.RootElement.GetProperty("runtimeOptions");
            JsonElement[] frameworks = options.TryGetProperty("frameworks", out JsonElement list)
                ? [.. list.EnumerateArray()] : [options.GetProperty("framework")];
            string[] expected = project.AspNetCore ? ["Microsoft.AspNetCore.App", "Microsoft.NETCore.App"] : ["Microsoft.NETCore.App"];
            Assert.Equal(expected, frameworks.Select(f => f.GetProperty("name").GetString()).Order());
            Assert.All(frameworks, f => Assert.StartsWith(project.FrameworkVersion + ".", f.GetProperty("version").GetString()));
        }

        // It serves, and the image's STOPSIGNAL stops it cleanly (in the container it listens on
        // 0.0.0.0; here on loopback only).
        using var server = ServerProcess.StartCommand([program, .. entrypoint[1..], "--host", "127.0.0.1", "--port", "0"]).WaitUntilReady();
        Assert.Equal(project.Workers, server.Children().Count);
        if (project.AspNetCore)
        {
            // ASP.NET Core in the workers, from the image's own files (NativeAOT too, in "everything").
            using var http = new HttpClient(new SocketsHttpHandler { UseProxy = false }) { Timeout = TimeSpan.FromSeconds(30) };
            Assert.StartsWith("Hello from ", await http.GetStringAsync($"http://127.0.0.1:{server.Port}/"));
        }
        else if (!scenario.Arguments.Contains("--handler"))
            Assert.StartsWith("Hello from ", Client.Greet(server.Port));
        string stop = Assert.Single(stages[^1].All("STOPSIGNAL")).Arguments;
        server.Signal(Enum.Parse<Signum>(stop));
        Assert.Equal(0, server.WaitForExit(TimeSpan.FromSeconds(60)));
        Directory.Delete(scratch, recursive: true);
    }

    /// <summary>An absolute path of the image, inside the directory that stands for its file system.</summary>
    private static string Under(string root, string path) => Path.Combine(root, path.TrimStart('/'));

    private static void CopyContext(string from, string to, DockerIgnore ignore, string relative)
    {
        Directory.CreateDirectory(to);
        foreach (string file in Directory.GetFiles(from))
        {
            string name = relative + Path.GetFileName(file);
            if (!ignore.Excludes(name)) File.Copy(file, Path.Combine(to, Path.GetFileName(file)));
        }
        foreach (string sub in Directory.GetDirectories(from))
        {
            string name = relative + Path.GetFileName(sub);
            if (!ignore.Excludes(name)) CopyContext(sub, Path.Combine(to, Path.GetFileName(sub)), ignore, name + "/");
        }
    }

    /// <summary>COPY: a directory's contents go into the destination; a file goes into it if it ends with '/'.</summary>
    private static void Copy(string source, string destination, Instruction step)
    {
        if (Directory.Exists(source))
        {
            Directory.CreateDirectory(destination);
            foreach (string file in Directory.GetFiles(source)) File.Copy(file, Path.Combine(destination, Path.GetFileName(file)), overwrite: true);
            foreach (string sub in Directory.GetDirectories(source)) Copy(sub, Path.Combine(destination, Path.GetFileName(sub)), step);
        }
        else if (File.Exists(source))
        {
            bool intoDirectory = destination.EndsWith('/') || destination.EndsWith("/.", StringComparison.Ordinal) || Directory.Exists(destination);
            string target = intoDirectory ? Path.Combine(destination, Path.GetFileName(source)) : destination;
            Directory.CreateDirectory(Path.GetDirectoryName(target)!);
            File.Copy(source, target, overwrite: true);
        }
        else
        {
            throw new Xunit.Sdk.XunitException($"line {step.Line}: COPY source {source} does not exist (missing, or left out by .dockerignore)");
        }
    }

    // ---- Kubernetes ----

    [Theory]
    [MemberData(nameof(DeployScenarios))]
    public async Task Kubernetes_manifest_fits_the_server(string id)
    {
        Scenario scenario = Get(id);
        string dir = await fixture.GeneratedAsync(scenario);
        var project = GeneratedProject.Read(dir);
        var yaml = new YamlStream();
        using (var reader = new StreamReader(Path.Combine(dir, "deploy", "kubernetes.yaml"))) yaml.Load(reader);
        var documents = yaml.Documents.Select(d => (YamlMappingNode)d.RootNode).ToList();
        YamlMappingNode deployment = Assert.Single(documents, d => Yaml.Text(d, "kind") == "Deployment");
        YamlMappingNode service = Assert.Single(documents, d => Yaml.Text(d, "kind") == "Service");
        int port = project.DefaultPort;

        YamlMappingNode pod = Yaml.Map(deployment, "spec", "template");
        var container = (YamlMappingNode)Assert.Single(Yaml.Seq(pod, "spec", "containers"));
        // The image is the one the Dockerfile's comment builds: the project's name in lower case.
        string image = Yaml.Text(container, "image");
        string repository = image.Split('/')[^1].Split(':')[0];
        Assert.Equal(scenario.Binary.ToLowerInvariant(), repository);
        Assert.Contains($"docker build -t {repository} .", File.ReadAllText(Path.Combine(dir, "Dockerfile")));

        // The server's port for the Service; the master's --metrics port for the probes and Prometheus.
        var ports = Yaml.Seq(container, "ports").Cast<YamlMappingNode>().ToDictionary(p => Yaml.Text(p, "name"), p => Yaml.Int(p, "containerPort"));
        Assert.Equal(["metrics", "tcp"], ports.Keys.Order());
        Assert.Equal(port, ports["tcp"]);
        var metricsEnv = (YamlMappingNode)Assert.Single(Yaml.Seq(container, "env"), e => Yaml.Text(e, "name") == "PREFORK_METRICS");
        Assert.Equal($"0.0.0.0:{ports["metrics"]}", Yaml.Text(metricsEnv, "value"));
        Assert.NotEqual(port, ports["metrics"]);
        Assert.Equal("/readyz", Yaml.Text(container, "readinessProbe", "httpGet", "path"));
        Assert.Equal("/healthz", Yaml.Text(container, "livenessProbe", "httpGet", "path"));
        Assert.Equal("metrics", Yaml.Text(container, "readinessProbe", "httpGet", "port"));
        Assert.Equal("metrics", Yaml.Text(container, "livenessProbe", "httpGet", "port"));
        Assert.Equal("true", Yaml.Text(pod, "metadata", "annotations", "prometheus.io/scrape"));
        Assert.Equal(ports["metrics"], Yaml.Int(pod, "metadata", "annotations", "prometheus.io/port"));
        Assert.Equal("/metrics", Yaml.Text(pod, "metadata", "annotations", "prometheus.io/path"));
        var servicePort = (YamlMappingNode)Assert.Single(Yaml.Seq(service, "spec", "ports"));
        Assert.Equal(port, Yaml.Int(servicePort, "targetPort"));

        // The Service and the Deployment select the pods.
        var labels = Yaml.Map(pod, "metadata", "labels").Children.ToDictionary(k => Yaml.Text(k.Key), k => Yaml.Text(k.Value));
        foreach (var selector in new[] { Yaml.Map(service, "spec", "selector"), Yaml.Map(deployment, "spec", "selector", "matchLabels") })
        {
            Assert.NotEmpty(selector.Children);
            foreach (var (key, value) in selector.Children)
                Assert.True(labels.TryGetValue(Yaml.Text(key), out string? label) && label == Yaml.Text(value), $"selector {key}={value} matches no pod label");
        }

        // Stopping: the grace period covers the preStop pause and the server's shutdown timeout.
        // The pause is the kubelet's sleep action: the chiseled image has no shell to run `sleep`.
        int preStop = Yaml.Int(container, "lifecycle", "preStop", "sleep", "seconds");
        int grace = Yaml.Int(pod, "spec", "terminationGracePeriodSeconds");
        output.WriteLine($"preStop {preStop} s + --shutdown-timeout {project.ShutdownTimeoutSeconds} s <= terminationGracePeriodSeconds {grace} s");
        Assert.True(preStop > 0, "no preStop pause");
        Assert.True(grace >= preStop + project.ShutdownTimeoutSeconds,
            $"terminationGracePeriodSeconds {grace} < preStop {preStop} + shutdown timeout {project.ShutdownTimeoutSeconds}");

        // Not root, nothing to escalate to.
        Assert.Equal("true", Yaml.Text(pod, "spec", "securityContext", "runAsNonRoot"));
        Assert.NotEqual(0, Yaml.Int(pod, "spec", "securityContext", "runAsUser"));
        Assert.Equal("false", Yaml.Text(container, "securityContext", "allowPrivilegeEscalation"));
        Assert.Equal("true", Yaml.Text(container, "securityContext", "readOnlyRootFilesystem"));
        Assert.Contains("ALL", Yaml.Seq(container, "securityContext", "capabilities", "drop").Select(n => Yaml.Text(n)));
        Assert.Matches(@"^\d+[MG]i$", Yaml.Text(container, "resources", "limits", "memory"));

        // Names: the project's, as Kubernetes allows them (a DNS label: a-z, 0-9, '-').
        string expectedName = KubernetesName(scenario.Name);
        foreach (YamlMappingNode document in documents)
        {
            string name = Yaml.Text(document, "metadata", "name");
            Assert.Matches("^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$", name);
            Assert.Equal(expectedName, name);
        }
    }

    /// <summary>The project's name as a Kubernetes object name (a DNS label).</summary>
    private static string KubernetesName(string name) =>
        Regex.Replace(Regex.Replace(name.ToLowerInvariant(), "[^a-z0-9]+", "-"), "^[^a-z]+|-+$", "");

    // ---- Load balancers ----

    [Theory]
    [MemberData(nameof(DeployScenarios))]
    public async Task Balancer_configurations_pass_the_tools_own_checks(string id)
    {
        string dir = await fixture.GeneratedAsync(Get(id));
        int port = GeneratedProject.Read(dir).DefaultPort;
        string haproxyConfig = Path.Combine(dir, "deploy", "haproxy.cfg");
        string nginxConfig = Path.Combine(dir, "deploy", "nginx.conf");
        // The servers behind the balancer listen on the template's port.
        Assert.Equal(3, Regex.Matches(File.ReadAllText(haproxyConfig), $@"^\s*server \w+ [\d.]+:{port} check", RegexOptions.Multiline).Count);
        Assert.Equal(3, Regex.Matches(File.ReadAllText(nginxConfig), $@"^\s*server [\d.]+:{port} ", RegexOptions.Multiline).Count);

        CliResult haproxy = await Cli.RunAsync(Tool("haproxy"), ["-c", "-f", haproxyConfig]);
        output.WriteLine(haproxy.Output);
        Assert.True(haproxy.ExitCode == 0, Cli.Describe(haproxy));

        string scratch = Directory.CreateTempSubdirectory("nginx-check-").FullName;
        try
        {
            CliResult nginx = await Cli.RunAsync(Tool("nginx"), ["-t", "-c", nginxConfig, "-e", "stderr",
                "-g", $"pid {scratch}/nginx.pid;"]);
            output.WriteLine(nginx.Output);
            Assert.True(nginx.ExitCode == 0, "nginx -t failed (on Debian the stream module is libnginx-mod-stream):\n" + Cli.Describe(nginx));
        }
        finally
        {
            Directory.Delete(scratch, recursive: true);
        }
    }

    [Fact]
    public async Task Connections_through_each_balancer_reach_both_servers()
    {
        string dir = await fixture.BuiltAsync(Get("deploy"));
        using var first = ServerProcess.Start(dir, "--host", "127.0.0.1", "--port", "0", "--workers", "2").WaitUntilReady();
        using var second = ServerProcess.Start(dir, "--host", "127.0.0.1", "--port", "0", "--workers", "2").WaitUntilReady();
        string[] backends = [$"127.0.0.1:{first.Port}", $"127.0.0.1:{second.Port}"];
        string scratch = Path.Combine(fixture.WorkDir, "balancers-" + Guid.NewGuid().ToString("N")[..6]);
        Directory.CreateDirectory(scratch);

        // The shipped files, with only the servers' addresses and the balancer's own address changed.
        int haproxyPort = Client.FreePort();
        string haproxyConfig = Path.Combine(scratch, "haproxy.cfg");
        File.WriteAllText(haproxyConfig, Rewrite(File.ReadAllText(Path.Combine(dir, "deploy", "haproxy.cfg")),
            (@"(?m)^(\s*bind )\S+$", m => m.Groups[1].Value + $"127.0.0.1:{haproxyPort}", 1),
            (@"(?m)^(\s*server \w+ )\S+( check)$", Alternate(backends), 3)));
        int nginxPort = Client.FreePort();
        string nginxConfig = Path.Combine(scratch, "nginx.conf");
        File.WriteAllText(nginxConfig, Rewrite(File.ReadAllText(Path.Combine(dir, "deploy", "nginx.conf")),
            (@"(?m)^(\s*listen )\S+;$", m => m.Groups[1].Value + $"127.0.0.1:{nginxPort};", 1),
            (@"(?m)^(\s*server )\S+( max_fails=)", Alternate(backends), 3)));

        using (var haproxy = Daemon.Start(Tool("haproxy"), ["-db", "-f", haproxyConfig]))
        {
            haproxy.WaitForPort(haproxyPort);
            ReachesBoth("haproxy", haproxyPort, first, second);
        }
        using (var nginx = Daemon.Start(Tool("nginx"), ["-c", nginxConfig, "-e", "stderr",
                   "-g", $"daemon off; pid {scratch}/nginx.pid;"]))
        {
            nginx.WaitForPort(nginxPort);
            ReachesBoth("nginx", nginxPort, first, second);
        }
        Directory.Delete(scratch, recursive: true);
    }

    /// <summary>Connects through the balancer (for 20 s at most) until workers of both servers have answered.</summary>
    private void ReachesBoth(string balancer, int port, ServerProcess first, ServerProcess second)
    {
        var answered = new List<int>();
        var limit = Stopwatch.StartNew();
        bool Seen(ServerProcess server) => answered.Intersect(server.StartedWorkers()).Any();
        while (!(Seen(first) && Seen(second)) && limit.Elapsed < TimeSpan.FromSeconds(20))
            answered.Add(Client.PidOf(Client.Greet(port)));
        output.WriteLine($"{balancer}: {answered.Count} connections, answered by {string.Join(" ", answered)}; " +
                         $"workers {string.Join(" ", first.StartedWorkers())} | {string.Join(" ", second.StartedWorkers())}");
        Assert.True(Seen(first) && Seen(second), $"{balancer} did not reach both servers: {string.Join(" ", answered)}");
        Assert.All(answered, pid => Assert.Contains(pid, first.StartedWorkers().Concat(second.StartedWorkers())));
    }

    private static Func<Match, string> Alternate(string[] backends)
    {
        int next = 0;
        return m => m.Groups[1].Value + backends[next++ % backends.Length] + m.Groups[2].Value;
    }

    private static string Rewrite(string text, params (string Pattern, Func<Match, string> Replace, int Count)[] changes)
    {
        foreach (var (pattern, replace, count) in changes)
        {
            Assert.True(Regex.Matches(text, pattern).Count == count, $"expected {count} line(s) matching {pattern} in:\n{text}");
            text = Regex.Replace(text, pattern, m => replace(m));
        }
        return text;
    }

    /// <summary>A tool the tests need: found on PATH or in the sbin directories, or the test fails.</summary>
    private static string Tool(string name)
    {
        var dirs = (Environment.GetEnvironmentVariable("PATH") ?? "").Split(':').Concat(["/usr/sbin", "/sbin", "/usr/local/sbin"]);
        return dirs.Select(d => Path.Combine(d, name)).FirstOrDefault(File.Exists)
            ?? throw new Xunit.Sdk.XunitException($"{name} is not installed (.ci/run installs it: apt-get install {name})");
    }

    /// <summary>A load balancer started in the foreground; disposing it stops it and its children, by pid.</summary>
    private sealed class Daemon : IDisposable
    {
        private readonly Process process;
        private readonly List<string> log = [];
        private readonly HashSet<int> children = [];

        private Daemon(Process process) => this.process = process;

        public static Daemon Start(string file, IEnumerable<string> args)
        {
            var start = new ProcessStartInfo(file) { RedirectStandardError = true, RedirectStandardOutput = true, UseShellExecute = false };
            foreach (string arg in args) start.ArgumentList.Add(arg);
            var daemon = new Daemon(Process.Start(start)!);
            daemon.process.ErrorDataReceived += (_, e) => { if (e.Data is not null) lock (daemon.log) daemon.log.Add(e.Data); };
            daemon.process.OutputDataReceived += (_, e) => { if (e.Data is not null) lock (daemon.log) daemon.log.Add(e.Data); };
            daemon.process.BeginErrorReadLine();
            daemon.process.BeginOutputReadLine();
            return daemon;
        }

        public string Log
        {
            get { lock (log) return string.Join('\n', log); }
        }

        public void WaitForPort(int port)
        {
            var limit = Stopwatch.StartNew();
            while (true)
            {
                if (process.HasExited) throw new Xunit.Sdk.XunitException($"{process.StartInfo.FileName} exited with {process.ExitCode}:\n{Log}");
                try
                {
                    using var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
                    socket.Connect(IPAddress.Loopback, port);
                    break;
                }
                catch (SocketException) when (limit.Elapsed < TimeSpan.FromSeconds(15))
                {
                    Thread.Sleep(50);
                }
            }
            children.UnionWith(Proc.ChildrenOf(process.Id));
        }

        public void Dispose()
        {
            children.UnionWith(Proc.ChildrenOf(process.Id));
            if (!process.HasExited) Syscall.kill(process.Id, Signum.SIGTERM);
            if (!process.WaitForExit(TimeSpan.FromSeconds(10))) process.Kill();
            process.WaitForExit();
            foreach (int child in children.Where(Proc.IsAlive)) Syscall.kill(child, Signum.SIGKILL);
            process.Dispose();
        }
    }
}
