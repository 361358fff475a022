using System.Text;
using Xunit.Sdk;

namespace PreforkTemplates.Tests.Infrastructure;

/// <summary>
/// Compares a generated tree, file by file, with a stored copy under template-tests/Snapshots/.
/// UPDATE_SNAPSHOTS=1 rewrites the stored copy on purpose. A missing snapshot is written and
/// reported outside CI, and fails under CI=true. (Verify is not available here: this is the
/// small part of it we need.)
/// </summary>
public static class Snapshot
{
    private static readonly string[] Ignored = ["bin", "obj"];

    public static void Match(string generatedDir, string snapshotDir)
    {
        bool update = Environment.GetEnvironmentVariable("UPDATE_SNAPSHOTS") == "1";
        bool ci = string.Equals(Environment.GetEnvironmentVariable("CI"), "true", StringComparison.OrdinalIgnoreCase);

        if (!Directory.Exists(snapshotDir) && !update)
        {
            if (ci) throw new XunitException($"snapshot {snapshotDir} is missing; run the tests with UPDATE_SNAPSHOTS=1 and commit it");
            Write(generatedDir, snapshotDir);
            Console.Error.WriteLine($"snapshot written: {snapshotDir}");
            return;
        }
        if (update)
        {
            if (Directory.Exists(snapshotDir)) Directory.Delete(snapshotDir, recursive: true);
            Write(generatedDir, snapshotDir);
            return;
        }

        var actual = Files(generatedDir);
        var expected = Files(snapshotDir);
        var report = new StringBuilder();
        foreach (string file in expected.Except(actual)) report.AppendLine($"missing from the generated tree: {file}");
        foreach (string file in actual.Except(expected)) report.AppendLine($"not in the snapshot: {file}");
        foreach (string file in actual.Intersect(expected))
        {
            string a = File.ReadAllText(Path.Combine(generatedDir, file));
            string e = File.ReadAllText(Path.Combine(snapshotDir, file));
            if (a != e) report.AppendLine($"--- snapshot/{file}\n+++ generated/{file}").Append(LineDiff.Unified(e, a));
        }
        if (report.Length > 0)
            throw new XunitException($"generated tree differs from {snapshotDir} (UPDATE_SNAPSHOTS=1 rewrites it):\n{report}");
    }

    private static SortedSet<string> Files(string root) => new(
        Directory.EnumerateFiles(root, "*", SearchOption.AllDirectories)
            .Select(f => Path.GetRelativePath(root, f).Replace('\\', '/'))
            .Where(f => !f.Split('/').Any(Ignored.Contains)),
        StringComparer.Ordinal);

    private static void Write(string from, string to)
    {
        foreach (string file in Files(from))
        {
            string target = Path.Combine(to, file);
            Directory.CreateDirectory(Path.GetDirectoryName(target)!);
            File.Copy(Path.Combine(from, file), target, overwrite: true);
        }
    }
}

/// <summary>A minimal line diff (longest common subsequence), printed like `diff -u` with 2 lines of context.</summary>
public static class LineDiff
{
    public static string Unified(string expected, string actual)
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

        var text = new StringBuilder();
        for (int i = 0; i < lines.Count; i++)
        {
            bool near = false;
            for (int k = Math.Max(0, i - 2); k <= Math.Min(lines.Count - 1, i + 2); k++) near |= lines[k].Kind != ' ';
            if (near) text.Append(lines[i].Kind).AppendLine(lines[i].Text);
            else if (i > 0 && text.Length > 0 && !text.ToString().EndsWith("...\n", StringComparison.Ordinal)) text.AppendLine("...");
        }
        return text.ToString();
    }
}
