using System.Collections.Concurrent;

namespace PreforkTemplates.Tests.Infrastructure;

/// <summary>
/// A load of calls made by a client library that keeps its connections and follows the
/// server's GOAWAY (HttpClient over HTTP/2, a gRPC channel): <c>clients</c> threads, each with a
/// caller of its own (its own connection), calling over and over; a call returns the pid of the
/// worker that answered. A call that throws is a failure of the kind its exception says:
/// <c>status N</c> (EnsureSuccessStatusCode), <c>http ERROR</c> (HttpRequestException's HttpRequestError), <c>timeout</c>, or the exception's
/// type (RpcException, with the gRPC status in the detail). It stops when disposed, or after
/// <c>limit</c> at the latest.
/// </summary>
public sealed class CallLoad : LoadBase
{
    private readonly Func<int, Func<Task<int>>> callers;
    private readonly TimeSpan limit;
    private readonly ConcurrentDictionary<int, int> perPid = new();
    private long succeeded;

    /// <param name="callers">Makes client N's caller, used by that client alone.</param>
    public CallLoad(int clients, Func<int, Func<Task<int>>> callers, TimeSpan? limit = null)
    {
        this.callers = callers;
        this.limit = limit ?? TimeSpan.FromSeconds(60);
        Start(clients, "call load");
    }

    public long Succeeded => Interlocked.Read(ref succeeded);
    public IReadOnlyDictionary<int, int> PerPid => perPid;

    public void WaitForSuccesses(int count, TimeSpan? timeout = null)
    {
        long target = Succeeded + count;
        if (!Proc.WaitUntil(() => Succeeded >= target, timeout ?? TimeSpan.FromSeconds(30)))
            throw new TimeoutException($"the load did not reach {count} more answers: {Summary()}");
    }

    public string Summary() => failures.Summary($"{Succeeded} calls answered by {perPid.Count} workers; failed");

    protected override void Run(int client)
    {
        Func<Task<int>> call = callers(client);
        while (!Stopping && clock.Elapsed < limit)
        {
            try
            {
                int pid = call().GetAwaiter().GetResult();
                perPid.AddOrUpdate(pid, 1, (_, n) => n + 1);
                Interlocked.Increment(ref succeeded);
            }
            catch (Exception e)
            {
                string kind = e switch
                {
                    HttpRequestException { StatusCode: System.Net.HttpStatusCode status } => $"status {(int)status}",
                    HttpRequestException http => $"http {http.HttpRequestError}",
                    TaskCanceledException => Timeout,
                    _ => e.GetType().Name,
                };
                failures.Add(kind, e.Message);
            }
        }
    }
}
