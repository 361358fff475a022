using System.Text.RegularExpressions;

namespace PreforkTemplates.Tests.Infrastructure;

/// <summary>The fenced command blocks of a Markdown file (```sh), as written there, and its headings' anchors.</summary>
public static partial class Readme
{
    /// <summary>A block, from its line on; <see cref="File"/> names the file when blocks of several are listed.</summary>
    public sealed record Block(int Line, string Text, string? File = null)
    {
        public override string ToString() => $"{(File is null ? "" : File + " ")}line {Line}: {Text.Split('\n')[0]}";
    }

    public static IReadOnlyList<Block> ShellBlocks(string markdown)
    {
        var blocks = new List<Block>();
        string[] lines = markdown.Split('\n');
        for (int i = 0; i < lines.Length; i++)
        {
            if (lines[i].TrimEnd() != "```sh") continue;
            int start = i + 1;
            int end = Array.FindIndex(lines, start, l => l.TrimEnd() == "```");
            if (end < 0) throw new Xunit.Sdk.XunitException($"line {i + 1}: a block that never ends");
            blocks.Add(new Block(i + 1, string.Join('\n', lines[start..end]) + "\n"));
            i = end;
        }
        return blocks;
    }

    /// <summary>
    /// The #fragments that lead to the headings outside code blocks, as GitHub makes them: lower
    /// case, punctuation dropped, spaces made hyphens; a repeated one gets -1, -2, ...
    /// </summary>
    public static ISet<string> HeadingAnchors(string markdown)
    {
        var anchors = new HashSet<string>();
        bool inCode = false;
        foreach (string line in markdown.Split('\n'))
        {
            if (line.TrimStart().StartsWith("```", StringComparison.Ordinal)) inCode = !inCode;
            Match heading = Heading().Match(line);
            if (inCode || !heading.Success) continue;
            string anchor = NotInAnchor().Replace(heading.Groups[1].Value.Trim().ToLowerInvariant(), "").Replace(' ', '-');
            string unique = anchor;
            for (int n = 1; !anchors.Add(unique); n++) unique = $"{anchor}-{n}";
        }
        return anchors;
    }

    [GeneratedRegex(@"^#{1,6} +(.+?) *#*\r?$")]
    private static partial Regex Heading();

    [GeneratedRegex(@"[^\p{L}\p{Nd}\p{Mn} _-]")]
    private static partial Regex NotInAnchor();
}
