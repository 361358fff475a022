using System.IO.Compression;
using System.Text.Json;
using System.Text.RegularExpressions;
using System.Xml.Linq;
using PreforkTemplates.Tests.Infrastructure;
using Xunit;
using Xunit.Abstractions;

namespace PreforkTemplates.Tests;

/// <summary>The .nupkg as NuGet, `dotnet new` and the IDEs see it.</summary>
[Collection("template")]
public sealed class PackageTests(TemplateFixture fixture, ITestOutputHelper output)
{
    private string TemplateConfig => Path.Combine(fixture.RepoRoot, "templates", "prefork-server", ".template.config");

    /// <summary>The package version, from its one place: &lt;Version&gt; in PreforkTemplates.csproj.</summary>
    private string Version => XDocument.Load(Path.Combine(fixture.RepoRoot, "PreforkTemplates.csproj"))
        .Descendants("Version").Single().Value;

    [Fact]
    public void Package_carries_the_metadata_nuget_shows()
    {
        Assert.Equal($"PreforkTemplates.{Version}.nupkg", Path.GetFileName(fixture.PackagePath));
        using ZipArchive zip = ZipFile.OpenRead(fixture.PackagePath);
        XDocument nuspec;
        using (Stream stream = zip.Entries.Single(e => e.FullName.EndsWith(".nuspec", StringComparison.Ordinal)).Open())
            nuspec = XDocument.Load(stream);
        XElement metadata = nuspec.Root!.Elements().Single(e => e.Name.LocalName == "metadata");
        string Get(string name) => metadata.Elements().SingleOrDefault(e => e.Name.LocalName == name)?.Value
            ?? throw new Xunit.Sdk.XunitException($"the nuspec has no <{name}>:\n{nuspec}");
        XElement Element(string name) => metadata.Elements().Single(e => e.Name.LocalName == name);

        Assert.Equal("PreforkTemplates", Get("id"));
        Assert.Equal(Version, Get("version"));
        Assert.Equal("expression", Element("license").Attribute("type")?.Value);
        Assert.Equal("MIT", Get("license"));
        Assert.StartsWith("https://", Get("projectUrl"));
        Assert.StartsWith("https://", Element("repository").Attribute("url")?.Value);
        Assert.Equal(["dotnet-new", "templates", "prefork", "server", "sockets"], Get("tags").Split(' '));
        Assert.Equal("Template", Element("packageTypes").Elements().Single().Attribute("name")?.Value);

        // The readme and the icon the nuspec names are in the package; the icon is a real PNG.
        Assert.NotNull(zip.GetEntry(Get("readme")));
        ZipArchiveEntry icon = zip.GetEntry(Get("icon")) ?? throw new Xunit.Sdk.XunitException("icon missing from the package");
        using (Stream stream = icon.Open()) AssertPng(stream, 128);

        // Release notes: this version's section of CHANGELOG.md, and nothing from another version.
        string notes = Get("releaseNotes");
        Assert.StartsWith($"## {Version}", notes);
        Assert.Single(Regex.Matches(notes, "^## ", RegexOptions.Multiline));
        Assert.Contains(notes, File.ReadAllText(Path.Combine(fixture.RepoRoot, "CHANGELOG.md")).ReplaceLineEndings("\n"));

        // Only the template's sources are packed: no build output of the template project.
        Assert.DoesNotContain(zip.Entries, e => e.FullName.Split('/').Any(part => part is "bin" or "obj"));
        Assert.Contains(zip.Entries, e => e.FullName == "content/templates/prefork-server/.template.config/template.json");
    }

    [Fact]
    public async Task Pack_refuses_a_version_the_changelog_does_not_describe()
    {
        CliResult pack = await Cli.DotnetAsync(["pack", Path.Combine(fixture.RepoRoot, "PreforkTemplates.csproj"), "-c", "Release",
            "-p:Version=0.0.1-nochangelog", "-o", Path.Combine(fixture.WorkDir, "pack-bad"), "--disable-build-servers", "-nologo"]);
        Assert.NotEqual(0, pack.ExitCode);
        Assert.Contains("CHANGELOG.md has no section '## 0.0.1-nochangelog'", pack.Output);
    }

    [Fact]
    public async Task Package_installs_lists_instantiates_and_uninstalls_in_its_own_store()
    {
        string hive = Path.Combine(fixture.WorkDir, "hive-uninstall");
        CliResult install = await Cli.DotnetAsync(["new", "install", fixture.PackagePath, "--debug:custom-hive", hive]);
        Assert.True(install.ExitCode == 0, Cli.Describe(install));
        Assert.Contains($"PreforkTemplates@{Version}", install.StdOut);

        CliResult list = await Cli.DotnetAsync(["new", "list", "prefork", "--debug:custom-hive", hive]);
        Assert.Contains("prefork-server", list.StdOut);

        string dir = Path.Combine(fixture.WorkDir, "from-installed-package");
        CliResult create = await Cli.DotnetAsync(["new", "prefork-server", "-n", "Installed", "-o", dir, "--no-restore", "--debug:custom-hive", hive]);
        Assert.True(create.ExitCode == 0, Cli.Describe(create));
        Assert.True(File.Exists(Path.Combine(dir, "Installed.csproj")), "no project written");

        CliResult uninstall = await Cli.DotnetAsync(["new", "uninstall", "PreforkTemplates", "--debug:custom-hive", hive]);
        Assert.True(uninstall.ExitCode == 0, Cli.Describe(uninstall));
        CliResult after = await Cli.DotnetAsync(["new", "list", "prefork", "--debug:custom-hive", hive]);
        Assert.DoesNotContain("prefork-server", after.StdOut);
    }

    /// <summary>
    /// The README's upgrade: an older build installed from its .nupkg, then the newer one installed
    /// by id from its folder, which replaces it (installing the newer file by path would keep both).
    /// </summary>
    [Fact]
    public async Task Newer_build_replaces_an_older_one_as_the_readme_says()
    {
        // The README's own command, the part after its `dotnet pack ... &&` (the package is packed already).
        string line = File.ReadAllLines(Path.Combine(fixture.RepoRoot, "README.md"))
            .Where(l => l.Contains("dotnet new install PreforkTemplates@", StringComparison.Ordinal)).Distinct().Single();
        Assert.Contains($"PreforkTemplates@{Version} ", line); // the README names the version it packs
        string command = line[(line.IndexOf("&& ", StringComparison.Ordinal) + 3)..];

        string older = Path.Combine(fixture.WorkDir, "pack-older");
        CliResult pack = await Cli.DotnetAsync(["pack", Path.Combine(fixture.RepoRoot, "PreforkTemplates.csproj"), "-c", "Release",
            "-p:Version=1.0.0", "-o", older, "--disable-build-servers", "-nologo"]);
        Assert.True(pack.ExitCode == 0, Cli.Describe(pack));
        Assert.NotEqual("1.0.0", Version);

        string hive = Path.Combine(fixture.WorkDir, "hive-upgrade");
        CliResult first = await Cli.DotnetAsync(["new", "install", Path.Combine(older, "PreforkTemplates.1.0.0.nupkg"), "--debug:custom-hive", hive]);
        Assert.True(first.ExitCode == 0, Cli.Describe(first));

        // Run as pasted, in bash, from a folder whose out/ holds the newer package.
        string folder = Path.Combine(fixture.WorkDir, "upgrade-as-pasted");
        Directory.CreateDirectory(Path.Combine(folder, "out"));
        File.Copy(fixture.PackagePath, Path.Combine(folder, "out", Path.GetFileName(fixture.PackagePath)), overwrite: true);
        CliResult upgrade = await Cli.RunAsync("bash", ["-c", command + " --debug:custom-hive \"$0\"", hive],
            workingDirectory: folder);
        output.WriteLine(upgrade.Output);
        Assert.True(upgrade.ExitCode == 0, Cli.Describe(upgrade));
        Assert.Contains($"PreforkTemplates (version 1.0.0) is already installed, it will be replaced with version {Version}", upgrade.StdOut);

        // `dotnet new uninstall` with no argument lists what is installed: the newer version only.
        CliResult installed = await Cli.DotnetAsync(["new", "uninstall", "--debug:custom-hive", hive]);
        Assert.Contains($"Version: {Version}", installed.StdOut);
        Assert.DoesNotContain("Version: 1.0.0", installed.StdOut);
        Assert.DoesNotContain("same identity", upgrade.Output);
    }

    [Fact]
    public void Ide_host_shows_every_parameter_with_the_names_and_descriptions_of_template_json()
    {
        using JsonDocument template = JsonDocument.Parse(File.ReadAllText(Path.Combine(TemplateConfig, "template.json")));
        using JsonDocument ide = JsonDocument.Parse(File.ReadAllText(Path.Combine(TemplateConfig, "ide.host.json")));

        string icon = ide.RootElement.GetProperty("icon").GetString()!;
        using (Stream stream = File.OpenRead(Path.Combine(TemplateConfig, icon))) AssertPng(stream, 128);

        var shown = ide.RootElement.GetProperty("symbolInfo").EnumerateArray()
            .ToDictionary(s => s.GetProperty("id").GetString()!);
        var parameters = template.RootElement.GetProperty("symbols").EnumerateObject()
            .Where(s => s.Value.GetProperty("type").GetString() == "parameter").ToList();
        Assert.Equal(parameters.Select(p => p.Name).Order(), shown.Keys.Order());

        foreach (JsonProperty parameter in parameters)
        {
            JsonElement info = shown[parameter.Name];
            string name = info.GetProperty("name").GetProperty("text").GetString()!;
            string description = info.GetProperty("description").GetProperty("text").GetString()!;
            // One text for the CLI and the IDEs: ide.host.json repeats template.json's, word for word.
            Assert.Equal(parameter.Value.GetProperty("displayName").GetString(), name);
            Assert.Equal(parameter.Value.GetProperty("description").GetString(), description);
            // The IDE restores by itself: only "Skip restore" is hidden.
            Assert.Equal(parameter.Name != "skipRestore", info.GetProperty("isVisible").GetBoolean());
            // Numbers say their range, so a dialog user knows what the server will accept.
            if (parameter.Value.TryGetProperty("datatype", out JsonElement type) && type.GetString() == "int")
                Assert.Matches(@"\b\d+ to \d+\b", description);
        }
    }

    private static void AssertPng(Stream stream, int size)
    {
        var header = new byte[24];
        stream.ReadExactly(header);
        Assert.Equal(new byte[] { 0x89, (byte)'P', (byte)'N', (byte)'G', 0x0D, 0x0A, 0x1A, 0x0A }, header[..8]);
        int width = (header[16] << 24) | (header[17] << 16) | (header[18] << 8) | header[19];
        int height = (header[20] << 24) | (header[21] << 16) | (header[22] << 8) | header[23];
        Assert.Equal((size, size), (width, height));
    }
}
