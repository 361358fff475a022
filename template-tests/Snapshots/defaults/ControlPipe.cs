namespace MyServer;

using System;
using System.Globalization;
using System.IO;
using System.Text;

/// <summary>
/// The lines that travel on the pipes between the master and a worker, for both ends. A worker
/// starts with them as its standard input and output, and moves them away first thing
/// (Worker.cs). Master to worker: <see cref="Stop"/>, <see cref="LastHolder"/>; end-of-file
/// means the master is gone. Worker to master: <see cref="Ready"/>, a heartbeat,
/// <see cref="Retire"/>, <see cref="Released"/>. A new master
/// started by USR2 says <see cref="Ready"/> to the old one the same way.
/// </summary>
internal static class ControlPipe
{
    /// <summary>Master to worker: stop accepting, serve what is queued, release the socket, finish, exit.</summary>
    public const string Stop = "stop";

    /// <summary>Master to worker: as <see cref="Stop"/>, but no other process holds the listening socket: you are its last holder.</summary>
    public const string LastHolder = "last-holder";

    /// <summary>Worker (or new master) to master: accepting now.</summary>
    public const string Ready = "ready";

    /// <summary>Worker to master: --max-connections-per-worker reached; start my replacement.</summary>
    public const string Retire = "retire";

    /// <summary>Worker to master: my descriptor of the listening socket is closed.</summary>
    public const string Released = "released";

    private const string HeartbeatWord = "hb";

    /// <summary>A heartbeat: the connections accepted so far, those in flight, the garbage collections so far.</summary>
    public readonly record struct Heartbeat(long Accepted, int InFlight, int Collections)
    {
        public override string ToString() => FormattableString.Invariant($"{HeartbeatWord} {Accepted} {InFlight} {Collections}");

        public static bool TryParse(string line, out Heartbeat heartbeat)
        {
            heartbeat = default;
            string[] words = line.Split(' ');
            if (words is not [HeartbeatWord, var accepted, var inFlight, var collections]) return false;
            if (!long.TryParse(accepted, NumberStyles.None, CultureInfo.InvariantCulture, out long a)
                || !int.TryParse(inFlight, NumberStyles.None, CultureInfo.InvariantCulture, out int i)
                || !int.TryParse(collections, NumberStyles.None, CultureInfo.InvariantCulture, out int c)) return false;
            heartbeat = new Heartbeat(a, i, c);
            return true;
        }
    }

    /// <summary>Writes one line and flushes it. A reader that is gone is not an error: its end is on the way.</summary>
    public static void WriteLine(Stream pipe, string line)
    {
        try
        {
            pipe.Write(Encoding.ASCII.GetBytes(line + "\n"));
            pipe.Flush();
        }
        catch (IOException) { }
    }
}
