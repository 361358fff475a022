using System.Diagnostics;
using System.Globalization;

namespace PreforkTemplates.Tests.Infrastructure;

/// <summary>What /proc says about processes.</summary>
public static class Proc
{
    public static bool IsAlive(int pid) => Stat(pid) is { } stat && stat.State != 'Z';

    public static int? GroupOf(int pid) => Stat(pid)?.Group;

    public static int? ParentOf(int pid) => Stat(pid)?.Parent;

    public static IReadOnlyList<int> ChildrenOf(int parent) => Matching(s => s.Parent == parent && s.State != 'Z');

    /// <summary>The live processes of a process group.</summary>
    public static IReadOnlyList<int> InGroup(int group) => Matching(s => s.Group == group && s.State != 'Z');

    /// <summary>Exited children of <paramref name="parent"/> that it has not reaped yet.</summary>
    public static IReadOnlyList<int> ZombiesOf(int parent) => Matching(s => s.Parent == parent && s.State == 'Z');

    /// <summary>The pids in /proc whose stat matches.</summary>
    private static IReadOnlyList<int> Matching(Func<(char State, int Parent, int Group), bool> match) =>
        [.. Directory.EnumerateDirectories("/proc")
            .Select(d => int.TryParse(Path.GetFileName(d), out int pid) ? pid : 0)
            .Where(pid => pid > 0 && Stat(pid) is { } s && match(s))];

    /// <summary>What the process's open descriptors point to ("3 -> pipe:[1234]"), one each.</summary>
    public static IReadOnlyList<string> OpenFiles(int pid) =>
        [.. Directory.GetFiles($"/proc/{pid}/fd").Select(fd =>
        {
            try { return $"{Path.GetFileName(fd)} -> {new FileInfo(fd).LinkTarget}"; }
            catch (IOException) { return $"{Path.GetFileName(fd)} -> (closed)"; }
        })];

    /// <summary>Polls until <paramref name="condition"/> holds or the timeout passes.</summary>
    public static bool WaitUntil(Func<bool> condition, TimeSpan timeout)
    {
        var limit = Stopwatch.StartNew();
        while (!condition())
        {
            if (limit.Elapsed > timeout) return false;
            Thread.Sleep(20);
        }
        return true;
    }

    private static (char State, int Parent, int Group)? Stat(int pid)
    {
        try
        {
            string text = File.ReadAllText($"/proc/{pid}/stat");
            string[] fields = text[(text.LastIndexOf(')') + 2)..].Split(' ');
            return (fields[0][0], int.Parse(fields[1], CultureInfo.InvariantCulture), int.Parse(fields[2], CultureInfo.InvariantCulture));
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return null;
        }
    }
}
