using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Text;
using System.Text.RegularExpressions;
using Xunit;

namespace PreforkTemplates.Tests.Infrastructure;

/// <summary>A TCP connection to the server with a buffer of what it has received (every read gives up after 30 s, only to catch a hang).</summary>
public sealed partial class RawClient : IDisposable
{
    private readonly List<byte> received = [];
    private readonly byte[] chunk = new byte[65536];

    public Socket Socket { get; } = new(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);

    public static RawClient Connect(int port)
    {
        var raw = new RawClient();
        raw.Socket.NoDelay = true;
        raw.Socket.ReceiveTimeout = 30_000; // only to catch a hang
        raw.Socket.Connect(IPAddress.Loopback, port);
        return raw;
    }

    public void Send(string text) => Socket.Send(Encoding.UTF8.GetBytes(text));

    /// <summary>Receives more; false when the server has closed the connection.</summary>
    private bool Receive()
    {
        int n = Socket.Receive(chunk);
        received.AddRange(chunk.AsSpan(0, n));
        return n > 0;
    }

    private byte[] Take(int count)
    {
        byte[] taken = [.. received.Take(count)];
        received.RemoveRange(0, count);
        return taken;
    }

    public string ReadString(int bytes)
    {
        while (received.Count < bytes)
            Assert.True(Receive(), $"the server closed the connection after {received.Count} of {bytes} bytes");
        return Encoding.UTF8.GetString(Take(bytes));
    }

    /// <summary>True once the server has closed the connection and nothing else is left to read.</summary>
    public bool AtEnd()
    {
        try
        {
            while (Receive()) { }
        }
        catch (SocketException e) when (e.SocketErrorCode == SocketError.ConnectionReset)
        {
        }
        return received.Count == 0;
    }

    /// <summary>What arrives until the server closes or resets the connection.</summary>
    public byte[] ReadToEndOrReset()
    {
        try
        {
            while (Receive()) { }
        }
        catch (SocketException e) when (e.SocketErrorCode == SocketError.ConnectionReset)
        {
        }
        return Take(received.Count);
    }

    /// <summary>Reads one HTTP response: status line, headers, and a body of Content-Length bytes (none for HEAD).</summary>
    public RawResponse ReadResponse(bool headOnly = false)
    {
        int end;
        while ((end = IndexOfBlankLine()) < 0)
            Assert.True(Receive(), "the server closed the connection before a whole response head: " + Encoding.ASCII.GetString([.. received]));
        string head = Encoding.ASCII.GetString(Take(end + 4));
        string[] lines = head[..^4].Split("\r\n");
        Match status = StatusLine().Match(lines[0]);
        Assert.True(status.Success, $"not a status line: '{lines[0]}'");
        var headers = lines.Skip(1).Select(l => l.Split(':', 2)).Select(p => (p[0], p[1].Trim())).ToList();
        var response = new RawResponse(int.Parse(status.Groups[1].Value, CultureInfo.InvariantCulture), headers, "");
        string? length = response.Header("Content-Length");
        Assert.NotNull(length);
        return headOnly ? response : response with { Body = ReadString(int.Parse(length, CultureInfo.InvariantCulture)) };
    }

    private int IndexOfBlankLine()
    {
        for (int i = 0; i + 3 < received.Count; i++)
            if (received[i] == '\r' && received[i + 1] == '\n' && received[i + 2] == '\r' && received[i + 3] == '\n') return i;
        return -1;
    }

    [GeneratedRegex(@"^HTTP/1\.1 (\d{3}) ")]
    private static partial Regex StatusLine();

    public void Dispose() => Socket.Dispose();
}
