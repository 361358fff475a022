using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;

namespace PreforkTemplates.Tests.Infrastructure;

/// <summary>Self-signed certificates for 127.0.0.1, written as PEM files the way certbot writes them: the certificate and its key apart.</summary>
public static class TestCertificate
{
    /// <summary>Writes <paramref name="certificate"/> and <paramref name="key"/> (PEM) for CN=<paramref name="subject"/>, replacing each file in one rename.</summary>
    public static void Write(string certificate, string key, string subject)
    {
        using ECDsa ecdsa = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        using X509Certificate2 made = Make(ecdsa, subject);
        Replace(certificate, made.ExportCertificatePem() + "\n");
        Replace(key, ecdsa.ExportPkcs8PrivateKeyPem() + "\n");
    }

    /// <summary>Writes a PKCS#12 file without a password, the certificate for CN=<paramref name="subject"/> with its key.</summary>
    public static void WritePkcs12(string path, string subject)
    {
        using ECDsa ecdsa = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        using X509Certificate2 made = Make(ecdsa, subject);
        File.WriteAllBytes(path, made.Export(X509ContentType.Pkcs12));
    }

    private static X509Certificate2 Make(ECDsa ecdsa, string subject)
    {
        var request = new CertificateRequest($"CN={subject}", ecdsa, HashAlgorithmName.SHA256);
        var names = new SubjectAlternativeNameBuilder();
        names.AddIpAddress(System.Net.IPAddress.Loopback);
        names.AddDnsName("localhost");
        request.CertificateExtensions.Add(names.Build());
        return request.CreateSelfSigned(DateTimeOffset.UtcNow.AddMinutes(-5), DateTimeOffset.UtcNow.AddDays(1));
    }

    /// <summary>Writes a file in one rename, as certbot and Kubernetes swap theirs: a reader never sees half of it.</summary>
    public static void Replace(string path, string text)
    {
        string temporary = path + ".new";
        File.WriteAllText(temporary, text);
        File.Move(temporary, path, overwrite: true);
    }
}
