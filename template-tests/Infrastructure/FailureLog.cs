using System.Collections.Concurrent;
using System.Diagnostics;

namespace PreforkTemplates.Tests.Infrastructure;

/// <summary>
/// The failures of a load, each with its time on the load's clock, its kind and its detail, and
/// the summary line that counts them by kind. The kinds every load names, 0 included:
/// <c>refused</c> (the connect was refused), <c>reset</c> (connected, then reset before the
/// answer), <c>empty</c> (connected, then closed with no answer), <c>short</c> (closed in the
/// middle of the answer), <c>timeout</c> (no answer in time); any other kind a load records (a
/// socket error, HTTP's <c>status N</c>, ...) is named from its first failure on. Safe to record
/// from many threads at once.
/// </summary>
public sealed class FailureLog(Stopwatch clock)
{
    public const string Refused = "refused", Reset = "reset", Empty = "empty", Short = "short", Timeout = "timeout";

    private static readonly string[] Kinds = [Refused, Reset, Empty, Short, Timeout];

    private readonly ConcurrentQueue<Failure> failures = new();

    /// <summary>Records a failure now, on the load's clock.</summary>
    public void Add(string kind, string detail) => failures.Enqueue(new Failure(clock.Elapsed, kind, detail));

    public bool IsEmpty => failures.IsEmpty;

    public IReadOnlyList<Failure> All => [.. failures];

    /// <summary>The failures of one kind.</summary>
    public IReadOnlyList<Failure> Of(string kind) => [.. failures.Where(f => f.Kind == kind)];

    /// <inheritdoc cref="Summary(IReadOnlyList{Failure}, string, string, Func{Failure, bool}?)"/>
    public string Summary(string before, string after = "", Func<Failure, bool>? shown = null) => Summary(All, before, after, shown);

    /// <summary>
    /// "<paramref name="before"/>: refused 0, reset 0, empty 0, short 0, timeout 0<paramref name="after"/>; first: ...":
    /// every kind with its count, then the first five failures (of those <paramref name="shown"/>, if given)
    /// with their time and detail.
    /// </summary>
    public static string Summary(IReadOnlyList<Failure> failures, string before, string after = "", Func<Failure, bool>? shown = null)
    {
        var kinds = Kinds.Concat(failures.Select(f => f.Kind)).Distinct();
        Failure[] first = [.. failures.Where(shown ?? (_ => true)).Take(5)];
        return $"{before}: " + string.Join(", ", kinds.Select(k => $"{k} {failures.Count(f => f.Kind == k)}")) + after +
            (first.Length == 0 ? "" : "; first: " + string.Join("; ", first.Select(f => $"{f.At.TotalMilliseconds:0}ms {f.Kind} {f.Detail}")));
    }
}
