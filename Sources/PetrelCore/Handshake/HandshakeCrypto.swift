import COpenSSL

/// RFC 6455 §4.2.2 step 5: the GUID appended to the key before hashing.
private let acceptGUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

/// SHA-1 and Base64 for the handshake come from libcrypto (OpenSSL), the maintained implementation
/// already on every system with libssl: no hand-rolled crypto.
public enum HandshakeCrypto {
    /// `base64(SHA-1(key + GUID))`.
    public static func acceptValue(forKey key: String) -> String {
        var input = Array(key.utf8)
        input.append(contentsOf: acceptGUID.utf8)
        var digest = [UInt8](repeating: 0, count: Int(SHA_DIGEST_LENGTH))
        _ = input.withUnsafeBufferPointer { inp in
            digest.withUnsafeMutableBufferPointer { SHA1(inp.baseAddress, inp.count, $0.baseAddress) }
        }
        return self.base64(digest)
    }

    public static func base64(_ bytes: [UInt8]) -> String {
        var out = [UInt8](repeating: 0, count: 4 * ((bytes.count + 2) / 3) + 1)
        let n = bytes.withUnsafeBufferPointer { inp in
            out.withUnsafeMutableBufferPointer { EVP_EncodeBlock($0.baseAddress, inp.baseAddress, Int32(inp.count)) }
        }
        return String(decoding: out[0..<Int(n)], as: UTF8.self)
    }

    /// A fresh `Sec-WebSocket-Key`: 16 bytes from the kernel CSPRNG, base64-encoded.
    public static func makeKey(using entropy: inout EntropySource) -> String {
        var raw: [UInt8] = []
        raw.reserveCapacity(16)
        for _ in 0..<2 {
            let w = entropy.next64()
            for s in 0..<8 { raw.append(UInt8(truncatingIfNeeded: w >> (UInt64(s) * 8))) }
        }
        return self.base64(raw)
    }

    /// Whether `key` is the base64 form of exactly 16 bytes: 22 alphabet characters then `==`.
    public static func isValidKey(_ key: String) -> Bool {
        let b = Array(key.utf8)
        guard b.count == 24, b[22] == UInt8(ascii: "="), b[23] == UInt8(ascii: "=") else { return false }
        return b[0..<22].allSatisfy { c in
            (c >= 0x41 && c <= 0x5A) || (c >= 0x61 && c <= 0x7A) || (c >= 0x30 && c <= 0x39) || c == 0x2B || c == 0x2F
        }
    }
}
