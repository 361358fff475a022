using System.Globalization;
using ScottPlot;
using SkiaSharp;

namespace LoadGen;

/// <summary>
/// The charts of <c>report</c> and <c>scale-report</c>, drawn by ScottPlot and written as PNG:
/// a header (title, subtitle, legend) above one panel or several side by side. The baseline
/// is grey and the C# server blue, in every chart.
/// </summary>
internal static class Charts
{
    public static readonly Color BaselineColor = Color.FromHex("#7f8c8d");
    public static readonly Color[] SeriesColors = [.. new[] { "#2e86de", "#e67e22", "#27ae60", "#8e44ad" }.Select(Color.FromHex)];

    private static readonly Color TextColor = Color.FromHex("#333333");
    private static readonly Color SubtleColor = Color.FromHex("#555555");
    private const int Width = 820, PanelHeight = 320;

    /// <summary>Every text in a sans-serif family the machine has, else in ScottPlot's default.</summary>
    static Charts()
    {
        string? sans = new[] { "DejaVu Sans", "Liberation Sans", "Noto Sans", "Arial", "Helvetica" }
            .FirstOrDefault(name => Fonts.GetTypeface(name, false, false)?.FamilyName == name);
        if (sans is not null)
        {
            Fonts.Default = sans;
        }
    }

    /// <summary>One horizontal bar: a value with an optional min–max range, or a note in its place.</summary>
    public sealed record Bar(string Label, double? Value, double? Min, double? Max, string Text, bool Baseline);

    /// <summary>One line: a value (or none, which breaks the line) per x.</summary>
    public sealed record Series(Color Color, IReadOnlyList<double?> Values, bool Dashed = false);

    public sealed record Panel(string Title, bool LogY, IReadOnlyList<Series> Series);

    /// <summary>Horizontal bars, one row per entry, with a dashed line at 1.</summary>
    public static void SaveBars(string path, string title, string subtitle, string xTitle, IReadOnlyList<Bar> rows)
    {
        Plot plot = NewPlot();
        double maxValue = Math.Max(1.0, rows.Select(r => Math.Max(r.Value ?? 0, r.Max ?? 0)).DefaultIfEmpty(0).Max());
        var ticks = new ScottPlot.TickGenerators.NumericManual();
        var bars = new List<ScottPlot.Bar>();
        for (int i = 0; i < rows.Count; i++)
        {
            Bar row = rows[i];
            double y = rows.Count - 1 - i; // the first row on top
            ticks.AddMajor(y, row.Label);
            if (row.Value is not double v)
            {
                Label(plot, row.Text, 0, y, SubtleColor);
                continue;
            }

            bars.Add(new ScottPlot.Bar
            {
                Position = y,
                Value = v,
                Size = 0.65,
                FillColor = row.Baseline ? BaselineColor : SeriesColors[0],
                LineWidth = 0,
                Orientation = Orientation.Horizontal,
            });
            double textX = v;
            if (row.Min is double lo && row.Max is double hi && hi > lo)
            {
                // The range: a line from min to max with a tick at each end.
                foreach ((double x1, double y1, double x2, double y2) in new[] { (lo, y, hi, y), (lo, y - 0.15, lo, y + 0.15), (hi, y - 0.15, hi, y + 0.15) })
                {
                    plot.Add.Line(x1, y1, x2, y2).LineStyle = new LineStyle { Width = 1.5f, Color = Color.FromHex("#1b2631") };
                }

                textX = Math.Max(textX, hi);
            }

            Label(plot, row.Text, textX, y, TextColor);
        }

        if (bars.Count > 0)
        {
            var barPlot = plot.Add.Bars(bars);
            barPlot.Horizontal = true;
            plot.MoveToBack(barPlot); // under the ranges and the text
        }

        plot.MoveToBack(plot.Add.VerticalLine(1, 1, TextColor, LinePattern.Dashed));
        plot.XLabel(xTitle, 13);
        plot.Axes.Left.TickGenerator = ticks;
        plot.Axes.Left.MajorTickStyle.Length = 0;
        plot.Axes.Left.TickLabelStyle.FontSize = 13;
        plot.Grid.YAxisStyle.MajorLineStyle.Width = 0;
        // Room on the right for the text after the longest bar.
        plot.Axes.SetLimits(0, maxValue * 1.55, -0.6, rows.Count - 0.4);
        Save(path, title, subtitle, [], 64 + (rows.Count * 38), plot);
    }

    /// <summary>Line panels side by side over the same x values, on a log scale with a tick at each.</summary>
    public static void SaveLines(string path, string title, string subtitle, string xTitle, IReadOnlyList<int> xs,
        IReadOnlyList<(string Label, Color Color)> legend, params Panel[] panels)
    {
        Plot[] plots = [.. panels.Select(p => LinePanel(p, xs, xTitle))];
        Save(path, title, subtitle, legend, PanelHeight, plots);
    }

    /// <summary>An image that says why there is no chart.</summary>
    public static void SaveEmpty(string path, string text) => Save(path, text, "", [], 0);

    private static Plot LinePanel(Panel panel, IReadOnlyList<int> xs, string xTitle)
    {
        Plot plot = NewPlot();
        plot.Title(panel.Title, 13);
        plot.XLabel(xTitle, 13);

        // x: log10 of the measured values, labelled with the values themselves.
        var xTicks = new ScottPlot.TickGenerators.NumericManual();
        foreach (int x in xs.Distinct())
        {
            xTicks.AddMajor(Math.Log10(x), x.ToString(CultureInfo.InvariantCulture));
        }

        plot.Axes.Bottom.TickGenerator = xTicks;
        double lo = Math.Log10(xs.Min()), hi = Math.Log10(xs.Max());
        double pad = hi > lo ? (hi - lo) * 0.05 : 0.5;
        plot.Axes.SetLimitsX(lo - pad, hi + pad);

        double Y(double v) => panel.LogY ? Math.Log10(v) : v;
        var ys = new List<double>();
        foreach (Series s in panel.Series)
        {
            // A missing value breaks the line: each run of present values is its own scatter.
            var run = new List<(double X, double Y)>();
            for (int i = 0; i <= xs.Count; i++)
            {
                double? v = i < xs.Count && i < s.Values.Count ? s.Values[i] : null;
                if (v is double d && (!panel.LogY || d > 0))
                {
                    run.Add((Math.Log10(xs[i]), Y(d)));
                    ys.Add(d);
                    continue;
                }

                if (run.Count > 0)
                {
                    var scatter = plot.Add.Scatter(run.Select(p => p.X).ToArray(), run.Select(p => p.Y).ToArray(), s.Color);
                    scatter.LineWidth = 2;
                    scatter.LinePattern = s.Dashed ? LinePattern.Dashed : LinePattern.Solid;
                    scatter.MarkerShape = s.Dashed ? MarkerShape.OpenCircle : MarkerShape.FilledCircle;
                    scatter.MarkerSize = 7;
                    run.Clear();
                }
            }
        }

        if (panel.LogY)
        {
            // log10 of the values, labelled at each decade, with minor ticks at 2..9.
            plot.Axes.Left.TickGenerator = new ScottPlot.TickGenerators.NumericAutomatic
            {
                IntegerTicksOnly = true,
                MinorTickGenerator = new ScottPlot.TickGenerators.LogMinorTickGenerator(),
                LabelFormatter = e => Math.Pow(10, e).ToString("N0", CultureInfo.InvariantCulture),
            };
            plot.Axes.SetLimitsY(ys.Count == 0 ? 0 : Math.Floor(Math.Log10(ys.Min())), ys.Count == 0 ? 1 : Math.Ceiling(Math.Log10(ys.Max())));
        }
        else
        {
            plot.Axes.SetLimitsY(0, ys.Count == 0 ? 1 : ys.Max() * 1.08);
        }

        return plot;
    }

    private static Plot NewPlot()
    {
        var plot = new Plot();
        plot.Axes.Color(TextColor);
        plot.Axes.Bottom.TickLabelStyle.FontSize = 11;
        plot.Axes.Left.TickLabelStyle.FontSize = 11;
        plot.Grid.MajorLineColor = Color.FromHex("#e5e5e5");
        return plot;
    }

    private static void Label(Plot plot, string text, double x, double y, Color color)
    {
        var t = plot.Add.Text(text, x, y);
        t.LabelFontSize = 12;
        t.LabelFontColor = color;
        t.LabelBackgroundColor = ScottPlot.Colors.White; // over the dashed line at 1
        t.LabelAlignment = Alignment.MiddleLeft;
        t.OffsetX = 6;
    }

    /// <summary>The header over the full width, then the panels side by side, into one PNG.</summary>
    private static void Save(string path, string title, string subtitle, IReadOnlyList<(string Label, Color Color)> legend,
        int panelHeight, params Plot[] panels)
    {
        int headerHeight = legend.Count > 0 ? 80 : 54;
        int height = headerHeight + (panels.Length == 0 ? 0 : panelHeight);
        Plot header = NewPlot();
        header.Layout.Frameless();
        header.Axes.Frameless();
        header.HideGrid();
        header.Axes.SetLimits(0, Width, 0, headerHeight);
        AddHeaderText(header, headerHeight, title, 16, 24, 16, true, TextColor);
        AddHeaderText(header, headerHeight, subtitle, 16, 44, 13, false, SubtleColor);
        if (legend.Count > 0)
        {
            foreach ((string label, Color color) in legend)
            {
                header.Legend.ManualItems.Add(new LegendItem { LabelText = label, LineColor = color, LineWidth = 2, MarkerShape = MarkerShape.FilledCircle, MarkerColor = color, MarkerSize = 7 });
            }

            header.Legend.Orientation = Orientation.Horizontal;
            header.Legend.Alignment = Alignment.LowerLeft;
            header.Legend.OutlineWidth = 0;
            header.Legend.BackgroundColor = ScottPlot.Colors.Transparent;
            header.Legend.ShadowColor = ScottPlot.Colors.Transparent;
            header.Legend.TightHorizontalWrapping = true;
            header.Legend.FontSize = 13;
            header.Legend.Margin = new PixelPadding(6, 0, 0, 0);
            header.ShowLegend();
        }

        using var surface = SKSurface.Create(new SKImageInfo(Width, height));
        surface.Canvas.Clear(SKColors.White);
        Draw(surface.Canvas, header, 0, 0, Width, headerHeight);
        int panelWidth = Width / Math.Max(1, panels.Length);
        for (int i = 0; i < panels.Length; i++)
        {
            Draw(surface.Canvas, panels[i], i * panelWidth, headerHeight, panelWidth, panelHeight);
        }

        using SKImage image = surface.Snapshot();
        using SKData png = image.Encode(SKEncodedImageFormat.Png, 100);
        using FileStream file = File.Create(path);
        png.SaveTo(file);
    }

    /// <summary>Renders the plot on its own surface (a plot paints its whole canvas), then copies it into place.</summary>
    private static void Draw(SKCanvas canvas, Plot plot, int x, int y, int width, int height)
    {
        using var surface = SKSurface.Create(new SKImageInfo(width, height));
        plot.Render(surface);
        using SKImage image = surface.Snapshot();
        canvas.DrawImage(image, x, y);
    }

    private static void AddHeaderText(Plot header, int height, string text, double x, double yFromTop, float size, bool bold, Color color)
    {
        if (text.Length == 0)
        {
            return;
        }

        var t = header.Add.Text(text, x, height - yFromTop);
        t.LabelFontSize = size;
        t.LabelBold = bold;
        t.LabelFontColor = color;
        t.LabelAlignment = Alignment.LowerLeft;
    }
}
