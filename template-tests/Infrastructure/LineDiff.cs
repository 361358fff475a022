using System.Text;

namespace PreforkTemplates.Tests.Infrastructure;

/// <summary>A minimal line diff (longest common subsequence), printed like `diff -u` with 2 lines of context.</summary>
public static class LineDiff
{
    /// <summary>Every line of both texts in order: ' ' in both, '-' only in the first, '+' only in the second.</summary>
    public static List<(char Kind, string Text)> Lines(string expected, string actual)
    {
        string[] a = expected.Split('\n'), b = actual.Split('\n');
        var lcs = new int[a.Length + 1, b.Length + 1];
        for (int i = a.Length - 1; i >= 0; i--)
            for (int j = b.Length - 1; j >= 0; j--)
                lcs[i, j] = a[i] == b[j] ? lcs[i + 1, j + 1] + 1 : Math.Max(lcs[i + 1, j], lcs[i, j + 1]);

        var lines = new List<(char Kind, string Text)>();
        int x = 0, y = 0;
        while (x < a.Length || y < b.Length)
        {
            if (x < a.Length && y < b.Length && a[x] == b[y]) { lines.Add((' ', a[x])); x++; y++; }
            else if (y < b.Length && (x == a.Length || lcs[x, y + 1] >= lcs[x + 1, y])) lines.Add(('+', b[y++]));
            else lines.Add(('-', a[x++]));
        }
        return lines;
    }

    public static string Unified(string expected, string actual)
    {
        List<(char Kind, string Text)> lines = Lines(expected, actual);
        var text = new StringBuilder();
        for (int i = 0; i < lines.Count; i++)
        {
            if (Near(lines, i)) text.Append(lines[i].Kind).AppendLine(lines[i].Text);
            else if (i > 0 && text.Length > 0 && !text.ToString().EndsWith("...\n", StringComparison.Ordinal)) text.AppendLine("...");
        }
        return text.ToString();
    }

    /// <summary>True if line <paramref name="i"/> is a change or within 2 lines of one.</summary>
    internal static bool Near(List<(char Kind, string Text)> lines, int i)
    {
        for (int k = Math.Max(0, i - 2); k <= Math.Min(lines.Count - 1, i + 2); k++)
            if (lines[k].Kind != ' ') return true;
        return false;
    }
}
