// The HTTP behaviour project's Handler.cs (TemplateFixture.HttpBehaviourProjectAsync copies it
// over the generated one, as a user would change the file): the generated endpoint, and a few
// more that misbehave on demand, as a user's own endpoints might.
namespace HttpBehave;

using System;
using System.IO;
using System.Threading;
using System.Threading.Tasks;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;

public static class Handler
{
    public static void AddServices(WebApplicationBuilder builder)
    {
    }

    public static void Map(WebApplication app, Settings settings, int workerIndex)
    {
        app.Use(async (context, next) =>
        {
            context.Response.Headers["X-Worker"] = $"{workerIndex}";
            await next(context);
        });

        string greeting = settings.GreetingFor(workerIndex) + "\n";
        app.MapGet("/", () => Results.Text(greeting));

        // The greeting after ?ms= milliseconds.
        app.MapGet("/slow", async (int ms) =>
        {
            await Task.Delay(ms);
            return Results.Text(greeting);
        });

        // Blocks its thread for ever, as a request stuck on a lock or on .Result would.
        app.MapGet("/block", () =>
        {
            Thread.Sleep(Timeout.Infinite);
            return Results.Text(greeting);
        });

        // The length of the request body, however it came (Content-Length or chunked).
        app.MapPost("/length", async (HttpRequest request) =>
        {
            using var body = new MemoryStream();
            await request.Body.CopyToAsync(body);
            return Results.Text($"{body.Length}\n");
        });

        app.MapGet("/throw", string () => throw new InvalidOperationException("an endpoint that fails"));
    }
}
