using Xunit;
using System.Text.Json;
using System.Text.RegularExpressions;

namespace PreforkTemplates.Tests.Infrastructure;

/// <summary>A Dockerfile reader for what ours uses: line continuations, comments, stages, plain and exec forms.</summary>
public static class Dockerfile
{
    public static List<Stage> Parse(string text)
    {
        var stages = new List<Stage>();
        string[] lines = text.Split('\n');
        for (int i = 0; i < lines.Length; i++)
        {
            int first = i + 1;
            string line = lines[i].Trim();
            if (line.Length == 0 || line.StartsWith('#')) continue;
            while (line.EndsWith('\\') && i + 1 < lines.Length)
            {
                string next = lines[++i].Trim();
                if (next.StartsWith('#')) continue;
                line = line[..^1].TrimEnd() + " " + next;
            }
            int space = line.IndexOf(' ');
            string keyword = (space < 0 ? line : line[..space]).ToUpperInvariant();
            string arguments = space < 0 ? "" : line[(space + 1)..].Trim();
            if (keyword == "FROM")
            {
                string[] all = arguments.Split(' ', StringSplitOptions.RemoveEmptyEntries);
                string[] words = [.. all.Where(w => !w.StartsWith("--", StringComparison.Ordinal))];
                string? name = words.Length == 3 && words[1].Equals("AS", StringComparison.OrdinalIgnoreCase) ? words[2] : null;
                Assert.True(words.Length == 1 || name is not null, $"line {first}: FROM {arguments}");
                string? platform = all.Where(w => w.StartsWith("--platform=", StringComparison.Ordinal)).Select(w => w["--platform=".Length..]).SingleOrDefault();
                stages.Add(new Stage(words[0], name, platform, []));
            }
            else
            {
                Assert.True(stages.Count > 0, $"line {first}: {keyword} before the first FROM");
                stages[^1].Instructions.Add(new Instruction(keyword, arguments, first));
            }
        }
        return stages;
    }

    public static string[] Words(Instruction instruction)
    {
        Assert.DoesNotMatch(@"[&|;<>`""']|\$\(", instruction.Arguments); // one plain command, no shell syntax
        return instruction.Arguments.Split(' ', StringSplitOptions.RemoveEmptyEntries);
    }

    /// <summary>The value after an option (<c>-o /app</c>), or null.</summary>
    public static string? Option(string[] words, string option)
    {
        int at = Array.IndexOf(words, option);
        return at >= 0 && at + 1 < words.Length ? words[at + 1] : null;
    }

    /// <summary>COPY's --from stage (null for the build context) and its sources and destination.</summary>
    public static (string? From, string[] Items) CopyArguments(Instruction copy)
    {
        string[] words = copy.Arguments.Split(' ', StringSplitOptions.RemoveEmptyEntries);
        string? from = words.Where(w => w.StartsWith("--from=", StringComparison.Ordinal)).Select(w => w["--from=".Length..]).SingleOrDefault();
        string[] items = [.. words.Where(w => !w.StartsWith("--", StringComparison.Ordinal))];
        Assert.True(items.Length >= 2 && !items.Any(i => i.Contains('*') || i.StartsWith('[')), $"line {copy.Line}: COPY {copy.Arguments}");
        return (from, items);
    }

    /// <summary>The exec (JSON array) form of ENTRYPOINT or CMD; the shell form would put a shell, not the master, at PID 1.</summary>
    public static string[] ExecForm(Instruction instruction)
    {
        Assert.StartsWith("[", instruction.Arguments);
        return JsonSerializer.Deserialize<string[]>(instruction.Arguments)!;
    }

    /// <summary>The NativeAOT build stage's shell step that installs a cross toolchain when the image's architecture is not the build machine's.</summary>
    public static bool IsCrossToolchain(Instruction run) =>
        run.Keyword == "RUN" && run.Arguments.StartsWith("if [ \"$TARGETARCH\" != \"$BUILDARCH\" ]; then ", StringComparison.Ordinal);

    /// <summary>
    /// Runs a shell RUN step as Docker does (<c>sh -c</c>, the stage's ARGs in its environment),
    /// with a stand-in apt-get first on PATH that only records its arguments; returns them, one
    /// line per call.
    /// </summary>
    public static async Task<string[]> AptGetCalls(Instruction run, IReadOnlyDictionary<string, string> args, string scratch)
    {
        string bin = Directory.CreateDirectory(Path.Combine(scratch, "bin")).FullName;
        string calls = Path.Combine(scratch, "apt-get.calls");
        File.Delete(calls);
        string aptGet = Path.Combine(bin, "apt-get");
        File.WriteAllText(aptGet, $"#!/bin/sh\necho \"$*\" >> '{calls}'\n");
        File.SetUnixFileMode(aptGet, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
        var environment = args.ToDictionary(a => a.Key, a => (string?)a.Value);
        environment["PATH"] = bin + ":" + Environment.GetEnvironmentVariable("PATH");
        CliResult result = await Cli.RunAsync("sh", ["-c", run.Arguments], scratch, TimeSpan.FromMinutes(1), environment);
        Assert.True(result.ExitCode == 0, $"line {run.Line} with {string.Join(", ", args.Select(a => $"{a.Key}={a.Value}"))}: {run.Arguments}\n{Cli.Describe(result)}");
        return File.Exists(calls) ? File.ReadAllLines(calls) : [];
    }

    public static string Expand(string word, IReadOnlyDictionary<string, string> args, Instruction step) =>
        Regex.Replace(word, @"\$\{?(\w+)\}?", m => args.TryGetValue(m.Groups[1].Value, out string? value) ? value
            : throw new Xunit.Sdk.XunitException($"line {step.Line}: ${m.Groups[1].Value} is not an ARG of this stage"));
}
