// A stock single-process ASP.NET Core minimal API for bench/http/run.sh. It listens on
// 127.0.0.1, on a port the kernel picks (or on --urls, as any ASP.NET Core app), answers
// GET / with "Hello from <pid>\n" as text/plain; charset=utf-8, logs only warnings and
// errors, and prints "listening on http://127.0.0.1:PORT" on stdout once it is bound.
// SIGTERM stops it (the host's default).
var builder = WebApplication.CreateSlimBuilder(args);
builder.Logging.SetMinimumLevel(LogLevel.Warning);
builder.WebHost.UseUrls(builder.Configuration["urls"] ?? "http://127.0.0.1:0");

var app = builder.Build();
var greeting = $"Hello from {Environment.ProcessId}\n";
app.MapGet("/", () => Results.Text(greeting)); // as the template's Handler.cs: with Content-Length

await app.StartAsync();
foreach (var url in app.Urls)
{
    Console.WriteLine($"listening on {url}");
}
await app.WaitForShutdownAsync();
