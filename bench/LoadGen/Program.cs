using System.Text;
using System.Text.Json;

namespace LoadGen;

internal static class Program
{
    private static int Main(string[] args)
    {
        Console.OutputEncoding = new UTF8Encoding(encoderShouldEmitUTF8Identifier: false);
        try
        {
            if (args.Length > 0 && args[0] == "report")
            {
                return SummaryReport.Run(args[1..]);
            }

            if (args.Length > 0 && args[0] == "scale-report")
            {
                return ScaleReport.Run(args[1..]);
            }

            if (args.Length > 0 && args[0] == "hold")
            {
                return HoldCommand.Run(args[1..]);
            }

            if (args.Length > 0 && args[0] == "run")
            {
                args = args[1..];
            }

            if (args.Any(a => a is "-h" or "--help" or "help"))
            {
                Console.WriteLine(RunOptions.Usage);
                return 0;
            }

            RunOptions options = RunOptions.Parse(args);
            if (options.Mode == ClientMode.Raw && RawSockets.Probe() is string problem)
            {
                if (options.ModeExplicit)
                {
                    throw new UsageException($"--mode raw is not available here: {problem}");
                }

                Console.Error.WriteLine($"LoadGen: raw libc sockets unavailable ({problem}); using --mode sync");
                options.Mode = ClientMode.Sync;
            }

            if (options.JsonPath is string path)
            {
                // Fail on an unwritable path now, not after a long run.
                using FileStream probe = File.Open(path, FileMode.Create, FileAccess.Write);
            }

            LoadResult result = LoadRunner.Run(options);
            TextReport.Print(result, Console.Out);
            if (options.JsonPath is string jsonPath)
            {
                File.WriteAllText(jsonPath, JsonSerializer.Serialize(result, BenchJsonContext.Default.LoadResult) + "\n");
            }

            return result.Failed == 0 ? 0 : 1;
        }
        catch (UsageException e)
        {
            Console.Error.WriteLine($"LoadGen: error: {e.Message}");
            Console.Error.WriteLine("Run 'LoadGen --help' for usage.");
            return 2;
        }
        catch (IOException e) when (e is FileNotFoundException or DirectoryNotFoundException or PathTooLongException)
        {
            Console.Error.WriteLine($"LoadGen: error: {e.Message}");
            return 2;
        }
        catch (UnauthorizedAccessException e)
        {
            Console.Error.WriteLine($"LoadGen: error: {e.Message}");
            return 2;
        }
    }
}
