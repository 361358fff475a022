namespace PreforkTemplates.Tests.Infrastructure;

public enum StartMode { AppHost, DotnetDll, DotnetRun }
