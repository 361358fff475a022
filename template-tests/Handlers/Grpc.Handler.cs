// The gRPC project's Handler.cs (TemplateFixture.GrpcProjectAsync copies it over the generated
// one, adds Grpc.AspNetCore and Protos/greet.proto to the project, as a user would): the
// generated endpoint, and the Greeter service of greet.proto.
namespace GrpcServer;

using System;
using System.Threading.Tasks;
using Greet;
using Grpc.Core;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;

public static class Handler
{
    public static void AddServices(WebApplicationBuilder builder)
    {
        builder.Services.AddGrpc();
    }

    public static void Map(WebApplication app, Settings settings, int workerIndex)
    {
        string greeting = settings.GreetingFor(workerIndex) + "\n";
        app.MapGet("/", () => Results.Text(greeting));
        app.MapGrpcService<GreeterService>();
    }
}

/// <summary>greet.proto's Greeter: says hello, and which worker answered.</summary>
public sealed class GreeterService : Greeter.GreeterBase
{
    public override Task<HelloReply> SayHello(HelloRequest request, ServerCallContext context) =>
        Task.FromResult(new HelloReply { Message = $"Hello, {request.Name}", Pid = Environment.ProcessId });
}
