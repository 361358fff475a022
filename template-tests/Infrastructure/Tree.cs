namespace PreforkTemplates.Tests.Infrastructure;

/// <summary>Copies of folders for tests that change a copy (a broken build, a changed handler).</summary>
public static class Tree
{
    /// <summary>Copies every file below <paramref name="from"/> that <paramref name="include"/> takes (its path relative to <paramref name="from"/>), keeping Unix file modes.</summary>
    public static void Copy(string from, string to, Func<string, bool>? include = null)
    {
        foreach (string file in Directory.EnumerateFiles(from, "*", SearchOption.AllDirectories))
        {
            string relative = Path.GetRelativePath(from, file);
            if (include is not null && !include(relative)) continue;
            string target = Path.Combine(to, relative);
            Directory.CreateDirectory(Path.GetDirectoryName(target)!);
            File.Copy(file, target, overwrite: true);
            File.SetUnixFileMode(target, File.GetUnixFileMode(file));
        }
    }

    /// <summary>For <see cref="Copy"/>: all but what a build writes (bin/, obj/).</summary>
    public static bool NotBuildOutput(string relative) =>
        !relative.Split(Path.DirectorySeparatorChar).Any(part => part is "bin" or "obj");
}
