import CZlib

/// permessage-deflate's data path for one session (RFC 7692 §7.2). Streams are created on first
/// use; a side that drops its context gives its stream back to the pool (or resets it, without a
/// pool) after each message.
struct DeflateCodec {
    let compression: Compression
    let pool: ZlibPool?
    var deflater: Deflater?
    var inflater: InflateStream?
    /// The current message's deflate stream reached a final block: the rest of its data is ignored.
    var inflateEnded = false
    /// The compressor's engine, chosen once (one byte here: every connection carries the codec).
    let engine: DeflateEngine.Resolved

    init(compression: Compression, pool: ZlibPool?) {
        self.compression = compression
        self.pool = pool
        self.engine = compression.options.engine.resolved(compressionLevel: compression.options.compressionLevel)
    }

    private var deflateKey: Deflater.Key {
        self.compression.options.deflaterKey(windowBits: self.compression.parameters.localMaxWindowBits, engine: self.engine)
    }

    /// Compresses one whole message into `out`, unless it is shorter than `minimumSize`: false then,
    /// and `out` is untouched.
    mutating func compressMessage(_ payload: UnsafeRawBufferPointer, into out: inout ByteBuffer) -> Bool {
        guard payload.count >= self.compression.options.minimumSize else { return false }
        let d = self.deflater ?? self.pool?.takeDeflater(self.deflateKey) ?? makeDeflater(self.deflateKey)
        d.compressMessage(payload, into: &out)
        self.finishedCompressing(d)
        return true
    }

    /// Compresses one fragment of a streamed message; the last one loses its `00 00 ff ff`.
    mutating func compressFragment(_ payload: UnsafeRawBufferPointer, isFinal: Bool, into out: inout ByteBuffer) {
        let d = self.deflater ?? self.pool?.takeDeflater(self.deflateKey) ?? makeDeflater(self.deflateKey)
        if isFinal {
            d.compressMessage(payload, into: &out)
            self.finishedCompressing(d)
        } else {
            d.compress(payload, into: &out)
            self.deflater = d
        }
    }

    private mutating func finishedCompressing(_ d: Deflater) {
        if self.compression.parameters.localNoContextTakeover {
            if let pool = self.pool {
                pool.give(d)
                self.deflater = nil
            } else {
                d.reset()
                self.deflater = d
            }
        } else {
            self.deflater = d
        }
    }

    /// Inflates `input` (part of a compressed message) onto the end of `message`, never letting the
    /// inflated message grow past `limit` bytes, and validating text as it is produced.
    /// - Parameters:
    ///   - produced: the message's inflated size so far; updated.
    ///   - utf8: the text validator, or nil for a binary message.
    mutating func inflate(
        _ input: UnsafeRawBufferPointer, into message: inout ByteBuffer, produced: inout Int, limit: Int,
        utf8: inout UTF8Validator, isText: Bool
    ) -> ProtocolError? {
        if self.inflateEnded || input.isEmpty { return nil }
        let s = self.inflater ?? self.pool?.takeInflater(windowBits: self.compression.parameters.remoteMaxWindowBits)
            ?? InflateStream(windowBits: self.compression.parameters.remoteMaxWindowBits)
        self.inflater = s
        let z = s.z
        z.pointee.next_in = UnsafeMutablePointer(mutating: input.baseAddress!.assumingMemoryBound(to: UInt8.self))
        z.pointee.avail_in = UInt32(input.count)
        defer {
            z.pointee.next_in = nil
            z.pointee.next_out = nil
        }
        while true {
            let before = z.pointee.avail_in
            // At most one byte past the limit, so a bomb is caught without allocating beyond it.
            let room = min(max(input.count * 4, 4096), limit - produced + 1)
            let p = message.appendUninitialized(room)
            z.pointee.next_out = p.assumingMemoryBound(to: UInt8.self)
            z.pointee.avail_out = UInt32(room)
            let rc = CZlib.inflate(z, Z_SYNC_FLUSH)
            let out = room - Int(z.pointee.avail_out)
            message.trimEnd(Int(z.pointee.avail_out))
            produced += out
            if produced > limit { return .messageTooBig(limit: limit) }
            if isText, out > 0, utf8.validate(UnsafeRawBufferPointer(start: p, count: out)) != nil { return .invalidUTF8 }
            switch rc {
            case Z_OK:
                if z.pointee.avail_in == 0 && z.pointee.avail_out > 0 { return nil }
            case Z_BUF_ERROR:
                // No progress possible: all input is used and zlib wants more.
                if z.pointee.avail_in == 0 { return nil }
                if out == 0 && z.pointee.avail_in == before { return .inflateFailed }
            case Z_STREAM_END:
                // A final block (BFINAL=1): the message's data ends here (RFC 7692 §7.2.3.4).
                self.inflateEnded = true
                return nil
            default:
                return .inflateFailed
            }
        }
    }

    /// Ends a compressed message: appends the `00 00 ff ff` the sender removed (§7.2.2), then
    /// drops or keeps the context.
    mutating func finishInflating(
        into message: inout ByteBuffer, produced: inout Int, limit: Int, utf8: inout UTF8Validator, isText: Bool
    ) -> ProtocolError? {
        let tail: (UInt8, UInt8, UInt8, UInt8) = (0x00, 0x00, 0xFF, 0xFF)
        var error: ProtocolError? = nil
        if !self.inflateEnded {
            error = withUnsafeBytes(of: tail) {
                self.inflate($0, into: &message, produced: &produced, limit: limit, utf8: &utf8, isText: isText)
            }
        }
        guard let s = self.inflater else { return error }
        if self.compression.parameters.remoteNoContextTakeover {
            if let pool = self.pool {
                pool.give(s)
                self.inflater = nil
            } else {
                s.reset()
            }
        } else if self.inflateEnded {
            s.restartKeepingWindow()
        }
        self.inflateEnded = false
        return error
    }
}

extension PerMessageDeflate {
    /// Encodes a whole unmasked frame (server role) whose payload is compressed on its own, with no
    /// context before or after: decodable by any peer that agreed to permessage-deflate with a
    /// window of at least `windowBits`, whatever its context. The runtime's pub/sub uses it to
    /// compress a published message once for every subscriber whose server side keeps no context.
    public static func encodeStandaloneFrame(
        _ kind: MessageKind, _ payload: UnsafeRawBufferPointer, windowBits: Int, options: DeflateOptions, pool: ZlibPool
    ) -> [UInt8] {
        let d = pool.takeDeflater(options.deflaterKey(windowBits: windowBits))
        var body = ByteBuffer()
        d.compressMessage(payload, into: &body)
        pool.give(d)
        let compressed = body.readable
        var out = [UInt8](repeating: 0, count: FrameHeader.size(payloadLength: compressed.count, masked: false) + compressed.count)
        out.withUnsafeMutableBytes { p in
            let n = FrameHeader.encode(fin: true, rsv1: true, opcode: kind.opcode, payloadLength: compressed.count, maskKey: nil, into: p.baseAddress!)
            if compressed.count > 0 { (p.baseAddress! + n).copyMemory(from: compressed.baseAddress!, byteCount: compressed.count) }
        }
        return out
    }
}
