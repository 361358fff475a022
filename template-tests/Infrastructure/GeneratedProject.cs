using System.Globalization;
using System.Xml.Linq;
using Xunit;
using System.Text.RegularExpressions;

namespace PreforkTemplates.Tests.Infrastructure;

/// <summary>
/// What the generated project says about itself: its project file (AspNetCore: it references
/// the ASP.NET Core shared framework) and the defaults in Settings.cs.
/// </summary>
public sealed partial record GeneratedProject(string ProjectFile, string AssemblyName, string FrameworkVersion, bool Aot,
    bool AspNetCore, int DefaultPort, int Workers, IReadOnlyList<string> Signals, int ShutdownTimeoutSeconds)
{
    public static GeneratedProject Read(string dir)
    {
        string csproj = Directory.GetFiles(dir, "*.csproj").Single();
        XElement properties = XDocument.Load(csproj).Root!;
        string Property(string name) => properties.Descendants(name).Single().Value;
        string settings = File.ReadAllText(Path.Combine(dir, "Settings.cs"));
        string Setting(Regex pattern) => pattern.Match(settings) is { Success: true } m ? m.Groups[1].Value
            : throw new Xunit.Sdk.XunitException($"Settings.cs no longer matches {pattern}");
        string framework = Property("TargetFramework");
        Assert.Matches(@"^net\d+\.\d+$", framework);
        return new GeneratedProject(
            Path.GetFileName(csproj),
            Property("AssemblyName"),
            framework[3..],
            bool.Parse(Property("PublishAot")),
            properties.Descendants("FrameworkReference").Any(r => (string?)r.Attribute("Include") == "Microsoft.AspNetCore.App"),
            int.Parse(Setting(PortPattern()), CultureInfo.InvariantCulture),
            int.Parse(Setting(WorkersPattern()), CultureInfo.InvariantCulture),
            Setting(SignalsPattern()).Split(',', StringSplitOptions.RemoveEmptyEntries),
            int.Parse(Setting(ShutdownPattern()), CultureInfo.InvariantCulture));
    }

    [GeneratedRegex(@"const int DefaultPort = (\d+);")]
    private static partial Regex PortPattern();

    [GeneratedRegex(@"const int DefaultWorkers = (\d+);")]
    private static partial Regex WorkersPattern();

    [GeneratedRegex(@"const string DefaultSignals = ""([A-Z0-9,]*)"";")]
    private static partial Regex SignalsPattern();

    [GeneratedRegex(@"ShutdownTimeout \{ get; private set; \} = TimeSpan\.FromSeconds\((\d+)\);")]
    private static partial Regex ShutdownPattern();
}
