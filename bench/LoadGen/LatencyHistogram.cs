using System.Numerics;

namespace LoadGen;

/// <summary>
/// Log-linear histogram of non-negative values (nanoseconds here), HdrHistogram style:
/// values below 256 are exact, above that every power of two is split into 128 buckets,
/// so any reported percentile is within 1/128 (0.8 %) of the true value. Constant memory
/// (~58 KiB) however long the run; one instance per client, merged at the end.
/// Not thread-safe.
/// </summary>
internal sealed class LatencyHistogram
{
    private const int SubBits = 7;
    private const int SubCount = 1 << SubBits; // 128
    private const int LinearLimit = SubCount * 2; // 256: exact below this
    private const int BucketCount = LinearLimit + ((64 - SubBits - 1) * SubCount);

    private readonly long[] _counts = new long[BucketCount];

    public long Count { get; private set; }
    public long Min { get; private set; } = long.MaxValue;
    public long Max { get; private set; }
    public double Sum { get; private set; }

    public double Mean => Count == 0 ? 0 : Sum / Count;

    public void Record(long value)
    {
        if (value < 0)
        {
            value = 0;
        }

        _counts[Index(value)]++;
        Count++;
        Sum += value;
        if (value > Max)
        {
            Max = value;
        }

        if (value < Min)
        {
            Min = value;
        }
    }

    public void Add(LatencyHistogram other)
    {
        for (int i = 0; i < _counts.Length; i++)
        {
            _counts[i] += other._counts[i];
        }

        Count += other.Count;
        Sum += other.Sum;
        Max = Math.Max(Max, other.Max);
        Min = Math.Min(Min, other.Min);
    }

    /// <summary>Smallest recorded bucket such that at least <paramref name="percent"/> % of values are at or below it.</summary>
    public long Percentile(double percent)
    {
        if (Count == 0)
        {
            return 0;
        }

        long rank = Math.Max(1, (long)Math.Ceiling(percent / 100.0 * Count));
        long seen = 0;
        for (int i = 0; i < _counts.Length; i++)
        {
            seen += _counts[i];
            if (seen >= rank)
            {
                // Report the bucket's upper edge (never understate), capped by the true extremes.
                return Math.Clamp(UpperEdge(i), Min, Max);
            }
        }

        return Max;
    }

    internal static int Index(long value)
    {
        if (value < LinearLimit)
        {
            return (int)value;
        }

        int msb = 63 - BitOperations.LeadingZeroCount((ulong)value); // >= 8
        int shift = msb - SubBits;
        int mantissa = (int)(value >> shift); // in [128, 255]
        return LinearLimit + ((msb - SubBits - 1) * SubCount) + (mantissa - SubCount);
    }

    internal static long UpperEdge(int index)
    {
        if (index < LinearLimit)
        {
            return index;
        }

        int k = index - LinearLimit;
        int msb = (k / SubCount) + SubBits + 1;
        long mantissa = (k % SubCount) + SubCount;
        int shift = msb - SubBits;
        long lower = mantissa << shift;
        return lower + (1L << shift) - 1;
    }
}
