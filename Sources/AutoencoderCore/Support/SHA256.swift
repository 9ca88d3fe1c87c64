import COpenSSL
import Foundation

/// SHA-256 through OpenSSL's libcrypto.
public struct SHA256Digest {
    private var ctx: OpaquePointer

    public init() {
        ctx = EVP_MD_CTX_new()
        EVP_DigestInit_ex(ctx, EVP_sha256(), nil)
    }

    public mutating func update(_ p: UnsafeRawPointer, _ n: Int) {
        if n > 0 { EVP_DigestUpdate(ctx, p, n) }
    }

    public mutating func update(_ data: Data) {
        data.withUnsafeBytes { if let b = $0.baseAddress { update(b, $0.count) } }
    }

    public mutating func finalizeHex() -> String {
        var out = [UInt8](repeating: 0, count: 32)
        var len: UInt32 = 0
        EVP_DigestFinal_ex(ctx, &out, &len)
        EVP_MD_CTX_free(ctx)
        return out.map { String(format: "%02x", $0) }.joined()
    }

    public static func hex(_ data: Data) -> String {
        var d = SHA256Digest()
        d.update(data)
        return d.finalizeHex()
    }

    public static func hex(_ p: UnsafeRawBufferPointer) -> String {
        var d = SHA256Digest()
        if let b = p.baseAddress { d.update(b, p.count) }
        return d.finalizeHex()
    }
}
