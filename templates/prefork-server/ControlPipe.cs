namespace PreforkServer;

using System;
using System.Collections.Generic;
using System.Globalization;
using System.IO;
using System.Linq;
using System.Text;

/// <summary>
/// The lines that travel on the pipes between the master and a worker, for both ends. A worker
/// starts with them as its standard input and output, and moves them away first thing
/// (Worker.cs). Master to worker: <see cref="Stop"/>, <see cref="LastHolder"/>; end-of-file
/// means the master is gone. Worker to master: <see cref="Ready"/>, a heartbeat,
/// <see cref="Retire"/>, <see cref="Released"/>, and with --metrics its <see cref="Figures"/>. A new master
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

    private const string FiguresWord = "figures";

    /// <summary>
    /// With --metrics, about once a second and at exit, alongside a heartbeat: the log lines this
    /// worker could not write, and with the http handler, Kestrel's connections and the requests
    /// it has answered (ASP.NET Core's http.server.request.duration) per method, status and route.
    /// </summary>
    public sealed record Figures(long LogDropped, long HttpActive, long HttpQueued, IReadOnlyList<RequestDurations> Requests)
    {
        public static readonly Figures None = new(0, 0, 0, []);

        // One line: "figures DROPPED ACTIVE QUEUED", then a tab before each kind of request.
        public override string ToString() =>
            FormattableString.Invariant($"{FiguresWord} {LogDropped} {HttpActive} {HttpQueued}") + string.Concat(Requests.Select(r => "\t" + r));

        public static bool TryParse(string line, out Figures figures)
        {
            figures = None;
            string[] parts = line.Split('\t');
            if (parts[0].Split(' ') is not [FiguresWord, var dropped, var active, var queued]
                || !long.TryParse(dropped, CultureInfo.InvariantCulture, out long d)
                || !long.TryParse(active, CultureInfo.InvariantCulture, out long a)
                || !long.TryParse(queued, CultureInfo.InvariantCulture, out long q)) return false;
            var requests = new List<RequestDurations>();
            foreach (string part in parts.Skip(1))
                if (RequestDurations.TryParse(part, out RequestDurations? r)) requests.Add(r);
            figures = new Figures(d, a, q, requests);
            return true;
        }
    }

    /// <summary>
    /// The requests of one method, status and route: how many, their total duration in seconds,
    /// and how many fell in each bucket of <see cref="DurationBounds"/> (and one more, above the last).
    /// </summary>
    public sealed record RequestDurations(string Method, string Status, string Route, long Count, double Sum, long[] Buckets)
    {
        /// <summary>ASP.NET Core's own bucket bounds for http.server.request.duration, in seconds.</summary>
        public static readonly double[] DurationBounds = [0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10];

        // "METHOD STATUS COUNT SUM B0,B1,... ROUTE": the route last, as it may hold spaces.
        public override string ToString() =>
            FormattableString.Invariant($"{Method} {Status} {Count} {Sum:R} {string.Join(',', Buckets)} {Route}");

        public static bool TryParse(string text, [System.Diagnostics.CodeAnalysis.NotNullWhen(true)] out RequestDurations? durations)
        {
            durations = null;
            string[] words = text.Split(' ', 6);
            if (words.Length != 6
                || !long.TryParse(words[2], CultureInfo.InvariantCulture, out long count)
                || !double.TryParse(words[3], CultureInfo.InvariantCulture, out double sum)) return false;
            long[] buckets = new long[DurationBounds.Length + 1];
            string[] counts = words[4].Split(',');
            if (counts.Length != buckets.Length) return false;
            for (int i = 0; i < buckets.Length; i++)
                if (!long.TryParse(counts[i], CultureInfo.InvariantCulture, out buckets[i])) return false;
            durations = new RequestDurations(words[0], words[1], words[5], count, sum, buckets);
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
