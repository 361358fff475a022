using System.Text.RegularExpressions;

namespace PreforkTemplates.Tests.Infrastructure;

/// <summary>
/// .dockerignore as Docker reads it: each line a pattern relative to the context ('**' any
/// number of directories, '*' and '?' within one), '!' re-includes; a path is left out when
/// the last pattern that matches it or one of its parent directories is not a '!' one.
/// </summary>
public sealed class DockerIgnore
{
    private readonly List<(Regex Pattern, bool Exclude)> rules = [];

    public DockerIgnore(string text)
    {
        foreach (string raw in text.Split('\n'))
        {
            string line = raw.Trim();
            if (line.Length == 0 || line.StartsWith('#')) continue;
            bool exclude = !line.StartsWith('!');
            string pattern = line.TrimStart('!').Trim().Trim('/');
            var regex = new System.Text.StringBuilder("^");
            for (int i = 0; i < pattern.Length; i++)
            {
                char c = pattern[i];
                if (c == '*' && i + 1 < pattern.Length && pattern[i + 1] == '*')
                {
                    i++;
                    if (i + 1 < pattern.Length && pattern[i + 1] == '/') { i++; regex.Append("(.*/)?"); }
                    else regex.Append(".*");
                }
                else if (c == '*') regex.Append("[^/]*");
                else if (c == '?') regex.Append("[^/]");
                else regex.Append(Regex.Escape(c.ToString()));
            }
            rules.Add((new Regex(regex.Append('$').ToString()), exclude));
        }
    }

    public bool Excludes(string path)
    {
        string[] parts = path.Split('/');
        bool excluded = false;
        foreach (var (pattern, exclude) in rules)
        {
            bool matches = Enumerable.Range(1, parts.Length).Any(n => pattern.IsMatch(string.Join('/', parts[..n])));
            if (matches) excluded = exclude;
        }
        return excluded;
    }
}
