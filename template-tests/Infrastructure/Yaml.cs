using System.Globalization;
using YamlDotNet.RepresentationModel;

namespace PreforkTemplates.Tests.Infrastructure;

/// <summary>Paths into a YAML document; a missing one fails the test with the path.</summary>
public static class Yaml
{
    public static YamlNode Node(YamlNode node, params string[] path)
    {
        foreach (string key in path)
        {
            if (node is not YamlMappingNode map || !map.Children.TryGetValue(new YamlScalarNode(key), out YamlNode? child))
                throw new Xunit.Sdk.XunitException($"no '{string.Join('.', path)}' (missing '{key}')");
            node = child;
        }
        return node;
    }

    public static string Text(YamlNode node, params string[] path) =>
        Node(node, path) is YamlScalarNode { Value: string value } ? value : throw new Xunit.Sdk.XunitException($"'{string.Join('.', path)}' is not a value");

    public static int Int(YamlNode node, params string[] path) =>
        int.TryParse(Text(node, path), NumberStyles.None, CultureInfo.InvariantCulture, out int value) ? value
            : throw new Xunit.Sdk.XunitException($"'{string.Join('.', path)}' is not a whole number: {Text(node, path)}");

    public static YamlMappingNode Map(YamlNode node, params string[] path) =>
        Node(node, path) as YamlMappingNode ?? throw new Xunit.Sdk.XunitException($"'{string.Join('.', path)}' is not a mapping");

    public static YamlSequenceNode Seq(YamlNode node, params string[] path) =>
        Node(node, path) as YamlSequenceNode ?? throw new Xunit.Sdk.XunitException($"'{string.Join('.', path)}' is not a list");
}
