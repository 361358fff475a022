namespace PreforkTemplates.Tests.Infrastructure;

public sealed record Instruction(string Keyword, string Arguments, int Line);
