using System.Text;

namespace PreforkTemplates.Tests.Infrastructure;

/// <summary>
/// The changed lines of a text against another, with 2 lines of context, in hunks headed
/// "@@ LINE" (the line of the base where the hunk starts, from 1): a snapshot stores this for a
/// file that differs from the base scenario's in a few lines. <see cref="Apply"/> checks every
/// context and removed line against the base, so a patch that no longer fits is never applied.
/// </summary>
public static class LinePatch
{
    public static string Create(string from, string to)
    {
        List<(char Kind, string Text)> lines = LineDiff.Lines(from, to);
        var patch = new StringBuilder();
        int baseLine = 1;
        bool inHunk = false;
        for (int i = 0; i < lines.Count; i++)
        {
            bool near = LineDiff.Near(lines, i);
            if (near && !inHunk) patch.Append("@@ ").Append(baseLine).Append('\n');
            inHunk = near;
            if (near) patch.Append(lines[i].Kind).Append(lines[i].Text).Append('\n');
            if (lines[i].Kind != '+') baseLine++;
        }
        return patch.ToString();
    }

    /// <summary>The patched text, or null if the patch does not fit <paramref name="from"/>.</summary>
    public static string? Apply(string from, string patch)
    {
        string[] source = from.Split('\n');
        var result = new List<string>();
        int next = 0; // the next line of source not yet taken
        foreach (string line in patch.Split('\n').SkipLast(1))
        {
            if (line.StartsWith("@@ ", StringComparison.Ordinal))
            {
                if (!int.TryParse(line[3..], out int start) || start - 1 < next || start - 1 > source.Length) return null;
                result.AddRange(source[next..(start - 1)]);
                next = start - 1;
                continue;
            }
            if (line.Length == 0) return null;
            string text = line[1..];
            switch (line[0])
            {
                case '+':
                    result.Add(text);
                    break;
                case ' ' or '-' when next < source.Length && source[next] == text:
                    if (line[0] == ' ') result.Add(text);
                    next++;
                    break;
                default:
                    return null;
            }
        }
        result.AddRange(source[next..]);
        return string.Join('\n', result);
    }
}
