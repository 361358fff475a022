// bench/http/aspnet's minimal API with TLS, for bench/http/tls.sh: one process on 127.0.0.1,
// a port the kernel picks, the PEM certificate and key named by CERT and KEY, TLS 1.2/1.3 with
// HTTP/1.1 and HTTP/2 by ALPN (Kestrel's ListenOptions.UseHttps, as the generated server's
// Https.cs). It answers GET / with "Hello from <pid>\n" and prints
// "listening on https://127.0.0.1:PORT" once it is bound. SIGTERM stops it.
using System.Net;
using System.Security.Cryptography.X509Certificates;
using Microsoft.AspNetCore.Server.Kestrel.Core;

var certificate = X509Certificate2.CreateFromPemFile(
    Environment.GetEnvironmentVariable("CERT") ?? throw new InvalidOperationException("CERT is not set"),
    Environment.GetEnvironmentVariable("KEY") ?? throw new InvalidOperationException("KEY is not set"));
var builder = WebApplication.CreateSlimBuilder(args);
builder.Logging.SetMinimumLevel(LogLevel.Warning);
builder.WebHost.ConfigureKestrel(kestrel => kestrel.Listen(IPAddress.Loopback, 0, listen =>
{
    listen.Protocols = HttpProtocols.Http1AndHttp2;
    listen.UseHttps(certificate);
}));

var app = builder.Build();
var greeting = $"Hello from {Environment.ProcessId}\n";
app.MapGet("/", () => Results.Text(greeting));

await app.StartAsync();
foreach (var url in app.Urls)
{
    Console.WriteLine($"listening on {url}");
}
await app.WaitForShutdownAsync();
