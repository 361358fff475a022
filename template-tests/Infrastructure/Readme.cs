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

    /// <summary>
    /// The Markdown files a generated project ships, relative to it: README.md, then docs/*.md.
    /// The template's own folder ships them under the same paths.
    /// </summary>
    public static IReadOnlyList<string> ProjectDocs(string projectDir)
    {
        string docs = Path.Combine(projectDir, "docs");
        return ["README.md", .. (Directory.Exists(docs) ? Directory.GetFiles(docs, "*.md") : [])
            .Select(f => Path.GetRelativePath(projectDir, f)).Order(StringComparer.Ordinal)];
    }

    /// <summary>The ```sh blocks of every Markdown file a generated project ships, each with its file.</summary>
    public static IReadOnlyList<Block> ProjectShellBlocks(string projectDir) =>
        [.. ProjectDocs(projectDir).SelectMany(doc => ShellBlocks(File.ReadAllText(Path.Combine(projectDir, doc))).Select(b => b with { File = doc }))];

    /// <summary>
    /// The relative links (and images) of a Markdown file that lead nowhere: to no file or folder
    /// under <paramref name="root"/>, or to a #fragment that is no heading of its file. Links
    /// with a scheme (https:, mailto:) lead elsewhere and are not checked.
    /// </summary>
    public static IReadOnlyList<string> BrokenLinks(string file, string root, out int links)
    {
        root = Path.GetFullPath(root);
        var broken = new List<string>();
        links = 0;
        foreach (Match link in Link().Matches(File.ReadAllText(file)))
        {
            string target = link.Groups[1].Value;
            if (Regex.IsMatch(target, "^[a-z]+:")) continue;
            links++;
            string[] parts = target.Split('#', 2);
            string path = parts[0].Length == 0 ? file : Path.GetFullPath(Path.Combine(Path.GetDirectoryName(file)!, parts[0]));
            if (!path.StartsWith(root + Path.DirectorySeparatorChar, StringComparison.Ordinal) || !Path.Exists(path))
                broken.Add($"{target} (no such file or folder in {root})");
            else if (parts.Length == 2 && !HeadingAnchors(File.ReadAllText(path)).Contains(parts[1]))
                broken.Add($"{target} (no such heading in {Path.GetRelativePath(root, path)})");
        }
        return broken;
    }

    /// <summary>The relative links of a Markdown file, as written (no scheme, no #fragment), for the files they name.</summary>
    public static IEnumerable<string> LinkedFiles(string markdown) =>
        Link().Matches(markdown).Select(m => m.Groups[1].Value.Split('#')[0]).Where(t => t.Length > 0 && !Regex.IsMatch(t, "^[a-z]+:"));

    [GeneratedRegex(@"\]\(([^)\s]+)\)")]
    private static partial Regex Link();

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
