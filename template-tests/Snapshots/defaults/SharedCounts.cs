namespace MyServer;

using System;
using System.Collections.Generic;
using System.Globalization;
using System.Runtime.InteropServices;

/// <summary>
/// How many connections each worker holds, in a small block of memory that the master creates
/// and every worker maps: what balances long-lived connections (Worker.cs). Linux hands each
/// connection to the worker that has waited longest in accept(), which spreads short
/// connections evenly; but when many arrive at once, the worker that is awake takes most of
/// them (it calls accept() again before the others are scheduled), and kept-alive or idle
/// connections stay where they landed. With these counts, a worker far ahead of the least
/// loaded one steps out of accept() for a moment, and the kernel hands the next connection
/// to another.
///
/// One slot per worker process, given by the master (not by worker index: a replacement runs
/// beside the worker it replaces) and zeroed when that worker has exited. Each slot is written
/// by its worker alone: its open connections plus one while it accepts, 0 while it does not
/// (starting, full, stalled, stopping), and when it last wrote (so a worker whose accepting
/// thread is stuck does not count). The first int of the block says how many slots to read.
/// A new master (USR2) makes a block of its own.
/// </summary>
internal sealed class SharedCounts
{
    /// <summary>The block's descriptor and this worker's slot ("fd,slot"), set by the master.</summary>
    public const string Variable = "PREFORK_COUNTS";

    /// <summary>Slots for worker processes alive at once, those stopping included: 1024 workers and as many on their way out.</summary>
    private const int Slots = 2048;
    private const int SlotBytes = 8;               // int: open connections + 1, or 0; int: when written (ms)
    private const int Header = 8;                  // int: the slots in use (highest + 1)
    private const int Bytes = Header + Slots * SlotBytes;

    /// <summary>
    /// A worker that has not written its slot for this long does not count: its accepting
    /// thread, which writes at least every half second while idle, is stuck or starved.
    /// </summary>
    private const int StaleMs = 2000;

    private readonly IntPtr block;
    private readonly int slot = -1;                // a worker's own; -1 in the master
    private readonly bool[] taken = [];           // in the master: which slots are given

    private SharedCounts(IntPtr block, int fd, int slot)
    {
        this.block = block;
        Fd = fd;
        this.slot = slot;
        if (slot < 0) taken = new bool[Slots];
    }

    /// <summary>The master's descriptor of the block; -1 in a worker (it closes its own once mapped).</summary>
    public int Fd { get; }

    // ---- the master's side ---------------------------------------------------------------

    /// <summary>The master's block, all slots zero; null (and a log line) if this system cannot make one.</summary>
    public static SharedCounts? Create()
    {
        int fd = Posix.CreateSharedMemory("prefork-counts", Bytes, out string? problem);
        IntPtr block = fd < 0 ? IntPtr.Zero : Posix.MapShared(fd, Bytes, out problem);
        if (block != IntPtr.Zero) return new SharedCounts(block, fd, -1);
        if (fd >= 0) Posix.Close(fd);
        Log.Info($"cannot share connection counts between workers ({problem}); long-lived connections are not balanced");
        return null;
    }

    /// <summary>
    /// A free slot for a worker about to start, and the variable that tells it which; null if
    /// every slot is taken (that worker then only accepts, as if it were alone).
    /// </summary>
    public int? Take(IDictionary<string, string?> environment)
    {
        int free = Array.IndexOf(taken, false);
        if (free < 0) return null;
        taken[free] = true;
        WriteHighWater();
        environment[Variable] = FormattableString.Invariant($"{Fd},{free}");
        return free;
    }

    /// <summary>The worker of that slot has exited: the slot is zeroed and free again.</summary>
    public void Free(int freed)
    {
        Marshal.WriteInt64(block, Header + freed * SlotBytes, 0);
        taken[freed] = false;
        WriteHighWater();
    }

    /// <summary>What a slot says now, for USR1.</summary>
    public string Describe(int of)
    {
        int value = Marshal.ReadInt32(block, Header + of * SlotBytes);
        return value > 0 ? $"accepting with {value - 1} open" : "not accepting";
    }

    private void WriteHighWater() => Marshal.WriteInt32(block, 0, Array.LastIndexOf(taken, true) + 1);

    // ---- a worker's side -----------------------------------------------------------------

    /// <summary>
    /// In a worker: maps the master's block from <see cref="Variable"/> and closes the descriptor
    /// (the mapping stays; a child process of the handler gets neither). Null if the master
    /// gave none; a log line if it gave one that cannot be used.
    /// </summary>
    public static SharedCounts? Join(string? variable)
    {
        if (variable is null) return null;
        string[] parts = variable.Split(',');
        if (parts.Length != 2
            || !int.TryParse(parts[0], NumberStyles.None, CultureInfo.InvariantCulture, out int fd)
            || !int.TryParse(parts[1], NumberStyles.None, CultureInfo.InvariantCulture, out int slot) || slot >= Slots)
        {
            Log.Info($"{Variable}='{variable}' is not 'fd,slot'; long-lived connections are not balanced");
            return null;
        }
        IntPtr block = Posix.MapShared(fd, Bytes, out string? problem);
        Posix.Close(fd);
        if (block != IntPtr.Zero) return new SharedCounts(block, -1, slot);
        Log.Info($"cannot map the connection counts ({problem}); long-lived connections are not balanced");
        return null;
    }

    /// <summary>This worker accepts, and holds <paramref name="open"/> connections.</summary>
    public void Accepting(int open, long now)
    {
        Marshal.WriteInt32(block, Header + slot * SlotBytes + 4, unchecked((int)now));
        Marshal.WriteInt32(block, Header + slot * SlotBytes, open + 1);
    }

    /// <summary>This worker does not accept now: it must not count as the least loaded.</summary>
    public void NotAccepting() => Marshal.WriteInt32(block, Header + slot * SlotBytes, 0);

    /// <summary>The fewest connections any other worker that accepts holds; -1 if no other accepts.</summary>
    public int LeastOfOthers(long now)
    {
        int least = int.MaxValue;
        int inUse = Math.Min(Marshal.ReadInt32(block, 0), Slots);
        for (int other = 0; other < inUse; other++)
        {
            if (other == slot) continue;
            int value = Marshal.ReadInt32(block, Header + other * SlotBytes);
            if (value <= 0 || value - 1 >= least) continue;
            int written = Marshal.ReadInt32(block, Header + other * SlotBytes + 4);
            if (unchecked((int)now - written) > StaleMs) continue;
            least = value - 1;
        }
        return least == int.MaxValue ? -1 : least;
    }
}
