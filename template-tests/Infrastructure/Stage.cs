namespace PreforkTemplates.Tests.Infrastructure;

/// <summary>A stage: its image, its name (AS), the platform it runs on (FROM --platform=; null: the image's own) and its instructions.</summary>
public sealed record Stage(string Image, string? Name, string? Platform, List<Instruction> Instructions)
{
    public IEnumerable<Instruction> All(string keyword) => Instructions.Where(i => i.Keyword == keyword);
}
