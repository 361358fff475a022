namespace PreforkTemplates.Tests.Infrastructure;

/// <summary>A project that a test scenario generates with <c>dotnet new prefork-server</c>.</summary>
public sealed record Scenario(string Id, string Name, string[] Arguments)
{
    /// <summary>
    /// The binary's name: the project sets AssemblyName to its namespace, which the template
    /// engine makes from the name by turning what C# does not allow ('-', ' ') into '_'.
    /// </summary>
    public string Binary => string.Concat(Name.Select(c => char.IsLetterOrDigit(c) || c is '.' or '_' ? c : '_'));
}
