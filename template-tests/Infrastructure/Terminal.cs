using System.Diagnostics;
using System.Text;
using Mono.Unix.Native;

namespace PreforkTemplates.Tests.Infrastructure;

/// <summary>
/// A block of shell commands run as a user runs it: in a pseudo-terminal (util-linux's
/// <c>script</c>, with bash, as pasted into a terminal) or as a script without one (with sh,
/// Debian's dash), in a session of its own. What it prints is collected as the screen;
/// <see cref="Interrupt"/> is Ctrl+C (typed into the terminal, or SIGINT to the script's
/// process group, as a terminal sends it). Disposing ends whatever of it is still running, by pid.
/// </summary>
public sealed class Terminal : IDisposable
{
    private readonly Process process;
    private readonly StringBuilder screen = new();
    private readonly bool pty;
    private readonly Task[] readers;

    public Terminal(string block, bool pty, string workingDirectory, IDictionary<string, string> environment)
    {
        this.pty = pty;
        string file = Path.Combine(Path.GetTempPath(), $"readme-block-{Guid.NewGuid():N}.sh");
        File.WriteAllText(file, block);
        var start = new ProcessStartInfo("setsid")
        {
            RedirectStandardInput = true,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
            WorkingDirectory = workingDirectory,
        };
        // -e: a line that fails stops the block and fails the test, as a user would stop.
        if (pty) foreach (string arg in new[] { "script", "--quiet", "--flush", "--return", "--command", $"bash -e {file}", "/dev/null" }) start.ArgumentList.Add(arg);
        else foreach (string arg in new[] { "sh", "-e", file }) start.ArgumentList.Add(arg);
        foreach (string key in start.Environment.Keys.Where(k => k.StartsWith("PREFORK_", StringComparison.Ordinal)).ToList())
            start.Environment.Remove(key);
        start.Environment["TERM"] = "xterm";
        foreach (var (key, value) in environment) start.Environment[key] = value;
        process = Process.Start(start)!;
        if (!pty) process.StandardInput.Close(); // a script reads no terminal
        readers = [Collect(process.StandardOutput), Collect(process.StandardError)];
    }

    private async Task Collect(StreamReader stream)
    {
        var buffer = new char[4096];
        int n;
        while ((n = await stream.ReadAsync(buffer)) > 0)
            lock (screen) screen.Append(buffer, 0, n);
    }

    public string Screen
    {
        get { lock (screen) return screen.ToString(); }
    }

    /// <summary>Waits until the screen shows <paramref name="text"/>; fails with the screen if it does not.</summary>
    public void WaitFor(string text, TimeSpan timeout)
    {
        if (!Proc.WaitUntil(() => Screen.Contains(text, StringComparison.Ordinal) || process.HasExited, timeout) ||
            !Screen.Contains(text, StringComparison.Ordinal))
            throw new Xunit.Sdk.XunitException($"'{text}' did not appear within {timeout.TotalSeconds:0} s" +
                (process.HasExited ? $" (the block ended with {process.ExitCode})" : "") + $"; the screen:\n{Screen}");
    }

    /// <summary>Types into the terminal ("\r" is Enter).</summary>
    public void Type(string keys)
    {
        if (!pty) throw new InvalidOperationException("a script has no terminal to type into");
        process.StandardInput.Write(keys);
        process.StandardInput.Flush();
    }

    /// <summary>Ctrl+C.</summary>
    public void Interrupt()
    {
        if (pty)
        {
            process.StandardInput.Write('\x03');
            process.StandardInput.Flush();
        }
        else Syscall.kill(-process.Id, Signum.SIGINT);
    }

    /// <summary>Waits for the block to end; its exit code, or null if it is still running.</summary>
    public int? WaitForExit(TimeSpan timeout)
    {
        if (!process.WaitForExit(timeout)) return null;
        // The screen is complete once both streams have ended (Process.WaitForExit() waits
        // only for its own event readers, not for these). A child the block left running may
        // hold them open: Dispose ends it.
        Task.WaitAll(readers, TimeSpan.FromSeconds(10));
        return process.ExitCode;
    }

    public void Dispose()
    {
        // Whatever the block started and left running: its process tree, found from our child.
        var tree = new List<int>();
        void Walk(int pid)
        {
            tree.Add(pid);
            foreach (int child in Proc.ChildrenOf(pid)) Walk(child);
        }
        Walk(process.Id);
        foreach (int pid in tree.Where(Proc.IsAlive)) Syscall.kill(pid, Signum.SIGINT);
        Proc.WaitUntil(() => !tree.Any(Proc.IsAlive), TimeSpan.FromSeconds(5));
        foreach (int pid in tree.Where(Proc.IsAlive)) Syscall.kill(pid, Signum.SIGKILL);
        process.Dispose();
    }
}
