using System.Text.RegularExpressions;
using PreforkTemplates.Tests.Infrastructure;
using Xunit;

namespace PreforkTemplates.Tests;

/// <summary>
/// The template's text as the template engine reads it: a conditional marker
/// (<c>#if</c>, <c>&lt;!--#if --&gt;</c>, ...) makes the engine drop its whole line, so text that
/// shares the line with one never reaches a user; and the lines that the engine drops leave no
/// doubled blank lines behind in what it writes.
/// </summary>
[Collection("template")]
public sealed partial class TemplateTextTests(TemplateFixture fixture)
{
    [Fact]
    public void No_template_line_shares_a_conditional_marker_with_other_text()
    {
        string template = Path.Combine(fixture.RepoRoot, "templates", "prefork-server");
        var offending = new List<string>();
        foreach (string file in Directory.EnumerateFiles(template, "*", SearchOption.AllDirectories))
        {
            string relative = Path.GetRelativePath(template, file);
            if (!Tree.NotBuildOutput(relative) || relative.StartsWith(".template.config", StringComparison.Ordinal)) continue;
            if (!IsText(file)) continue;
            string[] lines = File.ReadAllLines(file);
            for (int i = 0; i < lines.Length; i++)
            {
                if (Marker().IsMatch(lines[i]) && !MarkerLine().IsMatch(lines[i]))
                    offending.Add($"{relative}:{i + 1}: {lines[i]}");
            }
        }
        Assert.True(offending.Count == 0,
            "these template lines hold a conditional marker and other text; the template engine drops the whole line, text included:\n" +
            string.Join('\n', offending));
    }

    [Theory]
    [MemberData(nameof(TemplateTests.ScenarioIds), MemberType = typeof(TemplateTests))]
    public async Task No_generated_file_has_doubled_blank_lines(string id)
    {
        string dir = await fixture.GeneratedAsync(TemplateFixture.Get(id));
        var doubled = new List<string>();
        foreach (string file in Directory.EnumerateFiles(dir, "*", SearchOption.AllDirectories))
        {
            if (!IsText(file)) continue;
            string[] lines = File.ReadAllText(file).ReplaceLineEndings("\n").Split('\n');
            for (int i = 1; i < lines.Length - 1; i++)
            {
                if (lines[i].Trim().Length == 0 && lines[i - 1].Trim().Length == 0)
                    doubled.Add($"{Path.GetRelativePath(dir, file)}:{i + 1}");
            }
        }
        Assert.True(doubled.Count == 0, $"doubled blank lines in the '{id}' project (a conditional block that leaves its blank line behind?):\n" + string.Join('\n', doubled));
    }

    /// <summary>A file the engine treats as text: no NUL byte in it (icon.png is not).</summary>
    private static bool IsText(string file) => !File.ReadAllBytes(file).Contains((byte)0);

    // #if, #elif, #else, #endif: at the start of a line (C#, Dockerfile, units, YAML) or in an
    // HTML/XML comment (Markdown, csproj).
    [GeneratedRegex(@"(<!--\s*#|^\s*#)(if|elif|else|endif)\b")]
    private static partial Regex Marker();

    [GeneratedRegex(@"^\s*(<!--\s*#(if|elif)\b.*-->|<!--\s*#(else|endif)\s*-->|#(if|elif)\b.*|#(else|endif))\s*$")]
    private static partial Regex MarkerLine();
}
