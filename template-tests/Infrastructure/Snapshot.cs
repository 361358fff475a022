using System.Text;
using Xunit.Sdk;

namespace PreforkTemplates.Tests.Infrastructure;

/// <summary>
/// Compares a generated tree with its snapshot under template-tests/Snapshots/. UPDATE_SNAPSHOTS=1
/// rewrites the snapshot on purpose. A missing snapshot is written and reported outside CI, and
/// fails under CI=true. (Verify is not available here: this is the small part of it we need.)
/// <para>
/// A whole snapshot (<see cref="Match"/>) keeps every file. A snapshot against a base scenario
/// (<see cref="MatchAgainst"/>) keeps <see cref="FileList"/>, the name of every file the scenario
/// generates, and only what differs from the base's file: the whole file, or, where that is
/// much shorter, a <see cref="PatchSuffix"/> file of the changed lines (<see cref="LinePatch"/>).
/// Every file is still compared whole: the expected text is the stored file, the patched base
/// file, or the base file.
/// </para>
/// </summary>
public static class Snapshot
{
    public const string FileList = "files.txt";
    public const string PatchSuffix = ".patch";

    private static readonly string[] Ignored = ["bin", "obj"];

    /// <summary>UPDATE_SNAPSHOTS=1: the snapshots are being rewritten, not compared.</summary>
    public static bool Updating => Environment.GetEnvironmentVariable("UPDATE_SNAPSHOTS") == "1";

    private static bool Ci => string.Equals(Environment.GetEnvironmentVariable("CI"), "true", StringComparison.OrdinalIgnoreCase);

    /// <summary>The whole tree, file by file.</summary>
    public static void Match(string generatedDir, string snapshotDir)
    {
        if (WroteInstead(snapshotDir, () => Write(generatedDir, snapshotDir, Files(generatedDir)))) return;

        var report = new StringBuilder();
        SortedSet<string> actual = Files(generatedDir);
        CompareNames(actual, Files(snapshotDir), report);
        foreach (string file in actual.Where(f => File.Exists(Path.Combine(snapshotDir, f))))
            CompareText(file, File.ReadAllText(Path.Combine(snapshotDir, file)), File.ReadAllText(Path.Combine(generatedDir, file)), report);
        Fail(snapshotDir, report);
    }

    /// <summary>
    /// The tree against a base scenario's: <paramref name="baseDir"/> is the base's snapshot
    /// (when comparing) or its generated tree (when writing); <paramref name="basePath"/> names
    /// the base file that a file of this scenario corresponds to, and <paramref name="derive"/>
    /// turns the base's text into what this scenario would write if only its name differed.
    /// </summary>
    public static void MatchAgainst(string generatedDir, string snapshotDir, string baseDir,
        Func<string, string> basePath, Func<string, string> derive)
    {
        SortedSet<string> actual = Files(generatedDir);
        string? Base(string file) =>
            File.Exists(Path.Combine(baseDir, basePath(file))) ? derive(File.ReadAllText(Path.Combine(baseDir, basePath(file)))) : null;

        if (WroteInstead(snapshotDir, () =>
            {
                Directory.CreateDirectory(snapshotDir);
                File.WriteAllLines(Path.Combine(snapshotDir, FileList), actual);
                foreach (string file in actual)
                {
                    string text = File.ReadAllText(Path.Combine(generatedDir, file));
                    string? from = Base(file);
                    if (from == text) continue;
                    string? patch = from is null ? null : LinePatch.Create(from, text);
                    string stored = Path.Combine(snapshotDir, patch is not null && patch.Length * 2 < text.Length ? file + PatchSuffix : file);
                    Directory.CreateDirectory(Path.GetDirectoryName(stored)!);
                    File.WriteAllText(stored, stored.EndsWith(PatchSuffix, StringComparison.Ordinal) ? patch : text);
                }
            })) return;

        var report = new StringBuilder();
        string list = Path.Combine(snapshotDir, FileList);
        SortedSet<string> expected = File.Exists(list) ? new(File.ReadAllLines(list), StringComparer.Ordinal) : [];
        CompareNames(actual, expected, report);
        foreach (string stored in Files(snapshotDir).Where(f => f != FileList))
        {
            string file = stored.EndsWith(PatchSuffix, StringComparison.Ordinal) ? stored[..^PatchSuffix.Length] : stored;
            if (!expected.Contains(file)) report.AppendLine($"stored but not in {FileList}: {stored}");
        }
        foreach (string file in actual.Where(expected.Contains))
        {
            string text = File.ReadAllText(Path.Combine(generatedDir, file));
            string whole = Path.Combine(snapshotDir, file), patch = whole + PatchSuffix;
            string? from = Base(file);
            if (File.Exists(whole))
                CompareText(file, File.ReadAllText(whole), text, report);
            else if (File.Exists(patch) && from is not null)
            {
                if (LinePatch.Apply(from, File.ReadAllText(patch)) is string patched) CompareText(file, patched, text, report);
                else report.AppendLine($"{file}{PatchSuffix} no longer applies to {basePath(file)} of the base; the base against this scenario:")
                    .AppendLine($"--- base/{basePath(file)}\n+++ generated/{file}").Append(LineDiff.Unified(from, text));
            }
            else if (from is not null)
                CompareText(file, from, text, report);
            else
                report.AppendLine($"{file}: neither stored in the snapshot nor in the base");
        }
        Fail(snapshotDir, report);
    }

    /// <summary>Writes the snapshot instead of comparing when asked to, or when it is missing outside CI.</summary>
    private static bool WroteInstead(string snapshotDir, Action write)
    {
        if (Updating)
        {
            if (Directory.Exists(snapshotDir)) Directory.Delete(snapshotDir, recursive: true);
            write();
            return true;
        }
        if (Directory.Exists(snapshotDir)) return false;
        if (Ci) throw new XunitException($"snapshot {snapshotDir} is missing; run the tests with UPDATE_SNAPSHOTS=1 and commit it");
        write();
        Console.Error.WriteLine($"snapshot written: {snapshotDir}");
        return true;
    }

    private static void CompareNames(SortedSet<string> actual, SortedSet<string> expected, StringBuilder report)
    {
        foreach (string file in expected.Except(actual)) report.AppendLine($"missing from the generated tree: {file}");
        foreach (string file in actual.Except(expected)) report.AppendLine($"not in the snapshot: {file}");
    }

    private static void CompareText(string file, string expected, string actual, StringBuilder report)
    {
        if (expected != actual) report.AppendLine($"--- snapshot/{file}\n+++ generated/{file}").Append(LineDiff.Unified(expected, actual));
    }

    private static void Fail(string snapshotDir, StringBuilder report)
    {
        if (report.Length > 0)
            throw new XunitException($"generated tree differs from {snapshotDir} (UPDATE_SNAPSHOTS=1 rewrites it):\n{report}");
    }

    private static SortedSet<string> Files(string root) => new(
        Directory.EnumerateFiles(root, "*", SearchOption.AllDirectories)
            .Select(f => Path.GetRelativePath(root, f).Replace('\\', '/'))
            .Where(f => !f.Split('/').Any(Ignored.Contains)),
        StringComparer.Ordinal);

    private static void Write(string from, string to, IEnumerable<string> files)
    {
        foreach (string file in files)
        {
            string target = Path.Combine(to, file);
            Directory.CreateDirectory(Path.GetDirectoryName(target)!);
            File.Copy(Path.Combine(from, file), target, overwrite: true);
        }
    }
}
