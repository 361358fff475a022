namespace My.Server_2;

using System;
using System.IO;
using System.Security.Authentication;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.AspNetCore.Server.Kestrel.Https;

/// <summary>
/// What Kestrel speaks on the port: --protocols, and TLS with --certificate and
/// --certificate-key. Each worker reads the certificate when it starts, so the workers a HUP
/// starts serve a renewed one; the master reads it first (Settings.cs), at start and on HUP,
/// and refuses one that cannot be loaded while the running workers keep serving.
/// </summary>
internal static class Https
{
    /// <summary>The certificate with its private key; null without --certificate. Throws <see cref="UsageException"/>.</summary>
    public static X509Certificate2? Load(Settings settings)
    {
        string file = settings.Certificate, key = settings.CertificateKey;
        if (file.Length == 0)
            return key.Length == 0 ? null : throw new UsageException("--certificate-key needs --certificate");
        CheckFile("certificate", file);
        if (key.Length > 0) CheckFile("certificate-key", key);
        X509Certificate2 certificate;
        try
        {
            // PEM as certbot and Kubernetes secrets write it (the key in its own file, or after
            // the certificate in the same one), or a PKCS#12 file without a password.
            string text = File.ReadAllText(file);
            bool pem = text.Contains("-----BEGIN", StringComparison.Ordinal);
            if (pem && key.Length == 0 && !text.Contains("PRIVATE KEY-----", StringComparison.Ordinal))
                throw new UsageException($"--certificate: '{file}' holds no private key; name its key file with --certificate-key");
            if (pem)
                certificate = X509Certificate2.CreateFromPemFile(file, key.Length == 0 ? null : key);
            else if (key.Length == 0)
                certificate = X509CertificateLoader.LoadPkcs12FromFile(file, password: null);
            else
                throw new UsageException($"--certificate: '{file}' is not PEM; a PKCS#12 file holds its own key, leave --certificate-key empty");
        }
        catch (Exception e) when (e is CryptographicException or ArgumentException or IOException or UnauthorizedAccessException)
        {
            throw new UsageException($"--certificate: cannot load '{file}'{(key.Length == 0 ? "" : $" with the key '{key}'")}: {e.Message}");
        }
        if (!certificate.HasPrivateKey)
        {
            certificate.Dispose();
            throw new UsageException($"--certificate: '{file}' has no private key; give it with --certificate-key");
        }
        return certificate;
    }

    /// <summary>
    /// Only a regular file of a sane size: a FIFO would block the master's HUP until something
    /// writes to it, and /dev/zero would never end.
    /// </summary>
    private static void CheckFile(string option, string path)
    {
        if (!File.Exists(path))
            throw new UsageException($"--{option}: '{path}' does not exist");
        if (!Posix.IsRegularFile(path))
            throw new UsageException($"--{option}: '{path}' is not a regular file");
        if (new FileInfo(path).Length > MaxFileBytes)
            throw new UsageException($"--{option}: '{path}' is more than {MaxFileBytes} bytes, too large for a certificate or key");
    }

    private const int MaxFileBytes = 1 << 20;

    /// <summary>
    /// Kestrel's protocols on the worker's connections and, with a certificate, TLS 1.2 or 1.3,
    /// where ALPN picks HTTP/2 or HTTP/1.1. A client has --write-timeout for its handshake.
    /// </summary>
    public static void Configure(ListenOptions listen, Settings settings)
    {
        var protocols = Enum.Parse<HttpProtocols>(settings.Protocols);
        X509Certificate2? certificate = Load(settings);
        // Without TLS there is no ALPN to choose by: Kestrel would serve Http1AndHttp2 as
        // HTTP/1.1, and log at start that it does.
        listen.Protocols = certificate is null && protocols == HttpProtocols.Http1AndHttp2 ? HttpProtocols.Http1 : protocols;
        if (certificate is not null)
            listen.UseHttps(new HttpsConnectionAdapterOptions
            {
                ServerCertificate = certificate,
                SslProtocols = SslProtocols.Tls12 | SslProtocols.Tls13,
                HandshakeTimeout = settings.WriteTimeout,
            });
    }
}
