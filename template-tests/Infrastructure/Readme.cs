namespace PreforkTemplates.Tests.Infrastructure;

/// <summary>The fenced command blocks of a Markdown file (```sh), as written there.</summary>
public static class Readme
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
}
