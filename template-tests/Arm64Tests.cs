using System.Diagnostics;
using System.Runtime.InteropServices;
using Mono.Unix.Native;
using PreforkTemplates.Tests.Infrastructure;
using Xunit;
using Xunit.Abstractions;

namespace PreforkTemplates.Tests;

/// <summary>
/// The generated server published for linux-arm64, self-contained (JIT) and NativeAOT, and run
/// on an x64 machine under emulation: the kernel hands the arm64 program to qemu-user through
/// binfmt_misc, so the program is started by its own path, re-executes itself as its workers and
/// gets signals as it would on arm64 hardware. This is emulation, not arm64 hardware: it proves
/// the cross-published programs, the re-execution and the signal paths, not arm64's memory
/// model or its speed. On an arm64 machine the same tests run natively.
/// </summary>
[Collection("template")]
public sealed class Arm64Tests(TemplateFixture fixture, ITestOutputHelper output)
{
    private const int Workers = 3;

    /// <summary>How long a start may take: under emulation a JIT worker compiles for many seconds.</summary>
    private static readonly TimeSpan Slow = TimeSpan.FromMinutes(3);

    private static bool Emulated => RuntimeInformation.OSArchitecture != Architecture.Arm64;

    [Fact]
    public async Task Self_contained_arm64_server_serves_replaces_a_killed_worker_and_drains_on_TERM()
    {
        RequireArm64Programs();
        string binary = await fixture.PublishedArm64Async(aot: false);
        DeployDocGives(binary, "dotnet publish -c Release -r linux-arm64 --self-contained -o publish/linux-arm64");
        Assert.True(File.Exists(Path.Combine(Path.GetDirectoryName(binary)!, "libcoreclr.so")), "the publish output has no runtime: not self-contained");
        ServesReplacesAndDrains(binary);
    }

    [Fact]
    public async Task NativeAOT_arm64_server_serves_replaces_a_killed_worker_and_drains_on_TERM()
    {
        RequireArm64Programs();
        // clang links for another architecture with that architecture's binutils, C library and
        // libgcc, which Debian's gcc-aarch64-linux-gnu brings (.NET's own zlib is linked in).
        Assert.True(!Emulated || File.Exists("/usr/bin/aarch64-linux-gnu-ld"),
            "no aarch64-linux-gnu-ld: the NativeAOT link for arm64 needs Debian's gcc-aarch64-linux-gnu (bash test.sh installs it)");
        string binary = await fixture.PublishedArm64Async(aot: true);
        DeployDocGives(binary, "dotnet publish -c Release -r linux-arm64 -o publish/linux-arm64");
        Assert.False(File.Exists(binary + ".dll"), "the publish output has a managed .dll: not NativeAOT");
        ServesReplacesAndDrains(binary);
    }

    /// <summary>
    /// All workers answer; a worker killed with SIGKILL is replaced and the new one answers; TERM
    /// under load answers every connection the kernel completed and the master exits with 0.
    /// </summary>
    private void ServesReplacesAndDrains(string binary)
    {
        string dir = Path.GetDirectoryName(binary)!;
        Assert.Equal(ElfMachineAarch64, ElfMachine(binary));
        Assert.Equal(ElfMachineAarch64, ElfMachine(Path.Combine(dir, "libMonoPosixHelper.so")));

        var clock = Stopwatch.StartNew();
        // A worker has --worker-timeout from its start to its first heartbeat: the default 30 s is
        // about what an emulated JIT worker takes on a busy machine.
        using var server = ServerProcess.StartCommand([binary, "--host", "127.0.0.1", "--port", "0", "--workers", $"{Workers}", "--worker-timeout", "300"]);
        server.WaitForLog("pool ready", Slow);
        output.WriteLine($"{Path.GetFileName(binary)}: pool of {Workers} ready after {clock.Elapsed.TotalSeconds:0.0} s");

        IReadOnlyList<int> workers = server.Children();
        Assert.Equal(Workers, workers.Count);
        foreach (int worker in workers)
        {
            // Each worker is the arm64 program itself, re-executed; under emulation its kernel
            // image is qemu's, which the kernel started for it.
            Assert.Contains(binary, File.ReadAllText($"/proc/{worker}/cmdline").Split('\0'));
            if (Emulated) Assert.StartsWith("qemu-aarch64", Path.GetFileName(new FileInfo($"/proc/{worker}/exe").LinkTarget));
        }
        Assert.Equal(workers.Order(), Client.PidsUntil(server.Port, Workers).Order());

        int killed = workers[0];
        clock.Restart();
        server.Signal(Signum.SIGKILL, killed);
        server.WaitForLog($"(pid {killed}) was killed by SIGKILL");
        int? newcomer = null;
        Assert.True(Proc.WaitUntil(() => (newcomer = server.Children().Except(workers).Cast<int?>().FirstOrDefault()) is not null, Slow),
            "no worker was started in place of the killed one:\n" + server.LogText);
        server.WaitForLog($"(pid {newcomer}) accepting", Slow);
        output.WriteLine($"killed worker {killed} replaced by {newcomer}, accepting after {clock.Elapsed.TotalSeconds:0.0} s");
        IReadOnlyList<int> pool = server.Children();
        Assert.Equal(Workers, pool.Count);
        Assert.Equal(pool.Order(), Client.PidsUntil(server.Port, Workers).Order());

        using var load = new Load(server.Port, clients: 4, limit: Slow);
        load.WaitForSuccesses(100, Slow);
        server.Signal(Signum.SIGTERM);
        Assert.Equal(0, server.WaitForExit(Slow));
        Thread.Sleep(200);
        load.Dispose();
        output.WriteLine($"TERM under load: {load.Summary()}");
        // Every connection the kernel completed was answered; the clients after the end were refused.
        Assert.All(load.Failures, f => Assert.Equal(Load.Refused, f.Kind));
        Assert.All(pool, w => Assert.False(Proc.IsAlive(w)));
        Assert.DoesNotContain(server.Log, l => l.Contains("silent for", StringComparison.Ordinal));
        Assert.True(Client.PortIsFree(server.Port));
    }

    /// <summary>The generated docs/deploy.md gives the publish line that the fixture's publish follows (ReadmeTests leaves it to this test).</summary>
    private static void DeployDocGives(string binary, string line)
    {
        string project = Path.GetDirectoryName(Path.GetDirectoryName(binary))!;
        Assert.Contains(line + "\n", File.ReadAllText(Path.Combine(project, "docs", "deploy.md")));
    }

    private const int ElfMachineAarch64 = 183; // EM_AARCH64

    /// <summary>The e_machine field of an ELF file's header.</summary>
    private static int ElfMachine(string path)
    {
        byte[] header = new byte[20];
        using (var file = File.OpenRead(path)) file.ReadExactly(header);
        Assert.True(header[0] == 0x7f && header.AsSpan(1, 3).SequenceEqual("ELF"u8), $"{path} is not an ELF file");
        return header[18] | header[19] << 8;
    }

    /// <summary>
    /// Fails, with what is missing, unless this machine can run an arm64 Linux program: natively,
    /// or through qemu-user registered with binfmt_misc and the arm64 C libraries.
    /// </summary>
    private static void RequireArm64Programs()
    {
        if (!Emulated) return;
        const string binfmt = "/proc/sys/fs/binfmt_misc";
        Assert.True(File.Exists($"{binfmt}/status"),
            $"binfmt_misc is not mounted on {binfmt}, so the kernel cannot hand an arm64 program to qemu (as root: " +
            $"mount -t binfmt_misc binfmt_misc {binfmt}; bash test.sh does it, where the machine allows it)");
        Assert.True(File.ReadAllText($"{binfmt}/status").Trim() == "enabled", $"binfmt_misc is disabled ({binfmt}/status)");
        string entry = $"{binfmt}/qemu-aarch64";
        Assert.True(File.Exists(entry) && File.ReadLines(entry).First() == "enabled",
            $"qemu-aarch64 is not registered with binfmt_misc ({entry}): install Debian's qemu-user-static and binfmt-support, " +
            "then update-binfmts --enable qemu-aarch64 (bash test.sh does both)");
        Assert.True(File.Exists("/lib/ld-linux-aarch64.so.1") && File.Exists("/usr/lib/aarch64-linux-gnu/libstdc++.so.6") && File.Exists("/usr/lib/aarch64-linux-gnu/libz.so.1"),
            "the arm64 C libraries are missing: dpkg --add-architecture arm64, then install libc6:arm64 libstdc++6:arm64 zlib1g:arm64 (bash test.sh does)");
    }
}
