using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Net.Sockets;

namespace PreforkTemplates.Tests.Infrastructure;

/// <summary>A client of the greeting protocol, on loopback only.</summary>
public static class Client
{
    /// <summary>Connects, reads until the server closes, returns the bytes.</summary>
    public static byte[] Fetch(int port, TimeSpan? timeout = null)
    {
        using var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        socket.ReceiveTimeout = (int)(timeout ?? TimeSpan.FromSeconds(10)).TotalMilliseconds;
        socket.Connect(IPAddress.Loopback, port);
        return ReadToEnd(socket);
    }

    /// <summary>Reads until the server closes the connection.</summary>
    public static byte[] ReadToEnd(Socket socket)
    {
        using var buffer = new MemoryStream();
        var chunk = new byte[4096];
        int n;
        while ((n = socket.Receive(chunk)) > 0) buffer.Write(chunk, 0, n);
        return buffer.ToArray();
    }

    /// <summary>
    /// Connects again and again (for 10 s at most) until <paramref name="count"/> different pids
    /// have answered; a worker that has just started may take a moment before it accepts.
    /// </summary>
    public static IReadOnlySet<int> PidsUntil(int port, int count)
    {
        var pids = new HashSet<int>();
        var limit = Stopwatch.StartNew();
        while (pids.Count < count && limit.Elapsed < TimeSpan.FromSeconds(10))
            pids.Add(PidOf(Greet(port)));
        return pids;
    }

    public static string Greet(int port) => System.Text.Encoding.UTF8.GetString(Fetch(port));

    /// <summary>The pid at the end of a default greeting ("Hello from 1234\n").</summary>
    public static int PidOf(string greeting) =>
        int.Parse(greeting.TrimEnd('\n').Split(' ')[^1], CultureInfo.InvariantCulture);

    /// <summary>Jain's fairness index: 1 when every worker served the same number, 1/n when one served all.</summary>
    public static double Jain(IEnumerable<int> counts)
    {
        double[] x = [.. counts.Select(c => (double)c)];
        return x.Sum() * x.Sum() / (x.Length * x.Sum(v => v * v));
    }

    /// <summary>
    /// A new client every 10 ms, each giving up after 200 ms (a connect whose SYN the server
    /// holds back would wait for the kernel's retry a second later): returns when the first
    /// one is refused, on <paramref name="clock"/>, or null if none is within <paramref name="timeout"/>.
    /// A connect that succeeds is closed at once.
    /// </summary>
    public static async Task<TimeSpan?> FirstRefusalAsync(int port, Stopwatch clock, TimeSpan timeout)
    {
        while (clock.Elapsed < timeout)
        {
            using var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
            using var patience = new CancellationTokenSource(TimeSpan.FromMilliseconds(200));
            try
            {
                await socket.ConnectAsync(new IPEndPoint(IPAddress.Loopback, port), patience.Token);
            }
            catch (SocketException e) when (e.SocketErrorCode == SocketError.ConnectionRefused)
            {
                return clock.Elapsed;
            }
            catch (OperationCanceledException) { }
            await Task.Delay(10);
        }
        return null;
    }

    /// <summary>A port that was free a moment ago, on 127.0.0.1 (for a program that must be told its port).</summary>
    public static int FreePort()
    {
        using var probe = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        probe.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        return ((IPEndPoint)probe.LocalEndPoint!).Port;
    }

    public static bool PortIsFree(int port)
    {
        try
        {
            using var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
            socket.Bind(new IPEndPoint(IPAddress.Loopback, port));
            socket.Listen();
            return true;
        }
        catch (SocketException)
        {
            return false;
        }
    }
}
