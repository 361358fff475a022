namespace PreforkTemplates.Tests.Infrastructure;

/// <summary>An HTTP response as <see cref="RawClient.ReadResponse"/> read it.</summary>
public sealed record RawResponse(int Status, IReadOnlyList<(string Name, string Value)> Headers, string Body)
{
    public string? Header(string name) =>
        Headers.Where(h => h.Name.Equals(name, StringComparison.OrdinalIgnoreCase)).Select(h => h.Value).SingleOrDefault();
}
