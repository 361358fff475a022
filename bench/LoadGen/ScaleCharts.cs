using System.Globalization;
using System.Text;

namespace LoadGen;

/// <summary>
/// Line charts for <c>scale-report</c>: panels side by side that share one x axis (workers or
/// clients, on a log scale, a tick at every measured value) and one legend of the servers.
/// Same look as <see cref="SummaryReport"/>'s bar chart: white background, 13 px sans-serif,
/// the baseline in grey and the C# server in blue.
/// </summary>
internal static class ScaleCharts
{
    public const string BaselineColor = "#7f8c8d";
    public static readonly string[] Colors = ["#2e86de", "#e67e22", "#27ae60", "#8e44ad"];

    private static readonly CultureInfo Ci = CultureInfo.InvariantCulture;
    private const int Width = 820, PanelW = 320, PanelH = 220, Left = 70, PanelGap = 90, Top = 96;

    /// <summary>One line: a value (or none) per x.</summary>
    public sealed record Series(string Label, string Color, IReadOnlyList<double?> Values, bool Dashed = false);

    public sealed record Panel(string Title, bool LogY, IReadOnlyList<Series> Series);

    public static string Chart(string title, string subtitle, string xTitle, IReadOnlyList<int> xs,
        IReadOnlyList<(string Label, string Color)> legend, params Panel[] panels)
    {
        int height = Top + PanelH + 70;
        var sb = new StringBuilder();
        sb.AppendLine(Ci, $"<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{Width}\" height=\"{height}\" viewBox=\"0 0 {Width} {height}\" font-family=\"sans-serif\" font-size=\"13\">");
        sb.AppendLine(Ci, $"  <rect width=\"{Width}\" height=\"{height}\" fill=\"#ffffff\"/>");
        sb.AppendLine(Ci, $"  <text x=\"16\" y=\"24\" font-size=\"16\" font-weight=\"bold\">{SummaryReport.X(title)}</text>");
        sb.AppendLine(Ci, $"  <text x=\"16\" y=\"42\" fill=\"#555555\">{SummaryReport.X(subtitle)}</text>");
        double lx = 16;
        foreach ((string label, string color) in legend)
        {
            sb.AppendLine(Ci, $"  <rect x=\"{lx:F0}\" y=\"52\" width=\"14\" height=\"14\" fill=\"{color}\"/>");
            sb.AppendLine(Ci, $"  <text x=\"{lx + 20:F0}\" y=\"64\">{SummaryReport.X(label)}</text>");
            lx += 40 + (label.Length * 7.5);
        }

        for (int p = 0; p < panels.Length; p++)
        {
            DrawPanel(sb, Left + (p * (PanelW + PanelGap)), panels[p], xs, xTitle);
        }

        sb.AppendLine("</svg>");
        return sb.ToString();
    }

    private static void DrawPanel(StringBuilder sb, double x0, Panel panel, IReadOnlyList<int> xs, string xTitle)
    {
        double y0 = Top, bottom = Top + PanelH;
        sb.AppendLine(Ci, $"  <text x=\"{x0:F0}\" y=\"{y0 - 12:F0}\" font-weight=\"bold\">{SummaryReport.X(panel.Title)}</text>");

        // x: log scale over the measured values, a tick at each.
        double lo = Math.Log(xs.Min()), hi = Math.Log(xs.Max());
        double XPos(int x) => hi > lo ? x0 + 12 + ((Math.Log(x) - lo) / (hi - lo) * (PanelW - 24)) : x0 + (PanelW / 2.0);

        // y: from 0 (linear) or the decade below the smallest value (log) to a round top.
        double[] values = [.. panel.Series.SelectMany(s => s.Values).Where(v => v is > 0).Select(v => v!.Value)];
        double yMin, yMax;
        List<double> ticks;
        if (panel.LogY)
        {
            yMin = values.Length == 0 ? 1 : Math.Pow(10, Math.Floor(Math.Log10(values.Min())));
            yMax = values.Length == 0 ? 10 : Math.Pow(10, Math.Ceiling(Math.Log10(values.Max())));
            if (yMax <= yMin)
            {
                yMax = yMin * 10;
            }

            ticks = [];
            for (double t = yMin; t <= yMax * 1.0001; t *= 10)
            {
                ticks.Add(t);
            }
        }
        else
        {
            double max = values.Length == 0 ? 1 : values.Max();
            double step = NiceStep(max / 5);
            yMin = 0;
            yMax = Math.Ceiling(max / step) * step;
            ticks = [];
            for (int k = 0; k * step <= yMax * 1.0001; k++)
            {
                ticks.Add(k * step);
            }
        }

        double YPos(double v) => panel.LogY
            ? bottom - ((Math.Log10(v) - Math.Log10(yMin)) / (Math.Log10(yMax) - Math.Log10(yMin)) * PanelH)
            : bottom - ((v - yMin) / (yMax - yMin) * PanelH);

        foreach (double t in ticks)
        {
            double y = YPos(t);
            sb.AppendLine(Ci, $"  <line x1=\"{x0:F1}\" y1=\"{y:F1}\" x2=\"{x0 + PanelW:F1}\" y2=\"{y:F1}\" stroke=\"#e5e5e5\"/>");
            sb.AppendLine(Ci, $"  <text x=\"{x0 - 6:F1}\" y=\"{y + 4:F1}\" text-anchor=\"end\" font-size=\"11\" fill=\"#555555\">{Compact(t)}</text>");
        }

        foreach (int x in xs)
        {
            double px = XPos(x);
            sb.AppendLine(Ci, $"  <line x1=\"{px:F1}\" y1=\"{bottom:F1}\" x2=\"{px:F1}\" y2=\"{bottom + 4:F1}\" stroke=\"#333333\"/>");
            sb.AppendLine(Ci, $"  <text x=\"{px:F1}\" y=\"{bottom + 17:F1}\" text-anchor=\"middle\" font-size=\"11\" fill=\"#555555\">{x}</text>");
        }

        sb.AppendLine(Ci, $"  <path d=\"M{x0:F1} {y0:F1}V{bottom:F1}H{x0 + PanelW:F1}\" stroke=\"#333333\" fill=\"none\"/>");
        sb.AppendLine(Ci, $"  <text x=\"{x0 + (PanelW / 2.0):F1}\" y=\"{bottom + 36:F1}\" text-anchor=\"middle\" fill=\"#333333\">{SummaryReport.X(xTitle)}</text>");

        foreach (Series s in panel.Series)
        {
            var path = new StringBuilder();
            bool pen = false;
            for (int i = 0; i < xs.Count && i < s.Values.Count; i++)
            {
                if (s.Values[i] is not double v || (panel.LogY && v <= 0))
                {
                    pen = false;
                    continue;
                }

                path.Append(Ci, $"{(pen ? "L" : "M")}{XPos(xs[i]):F1} {YPos(v):F1}");
                pen = true;
            }

            if (path.Length == 0)
            {
                continue;
            }

            string dash = s.Dashed ? " stroke-dasharray=\"5 4\"" : "";
            sb.AppendLine(Ci, $"  <path d=\"{path}\" stroke=\"{s.Color}\" stroke-width=\"2\" fill=\"none\"{dash}/>");
            for (int i = 0; i < xs.Count && i < s.Values.Count; i++)
            {
                if (s.Values[i] is double v && (!panel.LogY || v > 0))
                {
                    string fill = s.Dashed ? "#ffffff" : s.Color;
                    sb.AppendLine(Ci, $"  <circle cx=\"{XPos(xs[i]):F1}\" cy=\"{YPos(v):F1}\" r=\"3.5\" fill=\"{fill}\" stroke=\"{s.Color}\" stroke-width=\"1.5\"><title>{SummaryReport.X(s.Label)}, {xs[i]} {SummaryReport.X(xTitle)}: {v.ToString("#,0.#", Ci)}</title></circle>");
                }
            }
        }
    }

    /// <summary>1, 2 or 5 times a power of ten, at least <paramref name="rough"/>.</summary>
    private static double NiceStep(double rough)
    {
        if (rough <= 0)
        {
            return 1;
        }

        double decade = Math.Pow(10, Math.Floor(Math.Log10(rough)));
        double f = rough / decade;
        return (f <= 1 ? 1 : f <= 2 ? 2 : f <= 5 ? 5 : 10) * decade;
    }

    /// <summary>12, 2.5k, 40k, 1M.</summary>
    private static string Compact(double v) =>
        v >= 1e6 ? (v / 1e6).ToString("0.#", Ci) + "M"
        : v >= 1e3 ? (v / 1e3).ToString("0.#", Ci) + "k"
        : v.ToString("0.##", Ci);
}
