namespace PreforkTemplates.Tests.Infrastructure;

/// <summary>A failed connection or request of a load: when (on the load's clock), its kind (<see cref="FailureLog"/>), and what was seen.</summary>
public sealed record Failure(TimeSpan At, string Kind, string Detail);
