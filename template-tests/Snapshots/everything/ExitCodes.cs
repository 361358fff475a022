namespace My.Server_2;

/// <summary>Exit codes of the master (and of workers); docs/operations.md lists them too.</summary>
public static class ExitCodes
{
    public const int Ok = 0;             // stopped as asked
    public const int Failure = 1;        // unexpected error: see the log
    public const int Usage = 2;          // a bad option or value
    public const int CannotListen = 3;   // the address or port cannot be bound (in use, no permission)
    public const int WorkersFailed = 4;  // no worker could start
    public const int BadSocket = 5;      // a worker was not handed a listening TCP socket
    public const int NoServer = 6;       // status: no server answers at the --metrics address
}
