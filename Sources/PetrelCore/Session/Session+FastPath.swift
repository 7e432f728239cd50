/// The common case of each direction in a few inlined steps, for drivers that handle one
/// message at a time in a loop (the runtime's read path and its send from a callback).
///
/// Both are exact shortcuts of the general path: each either does what `parse` or `send` would
/// have done, with the same result, or does nothing and says so (`nil`, `false`), and the
/// caller then takes the general path, which handles and reports everything else.
/// `FastPathTests` checks both against the general path.
extension Session {
    /// A whole message found by `takeWholeDataFrame`: `used` bytes of the input, the message
    /// kind, and its payload, unmasked in place in the input (borrowed like `Event`'s).
    public struct WholeMessage {
        public let used: Int
        public let kind: MessageKind
        public let payload: UnsafeRawBufferPointer

        @inlinable
        init(used: Int, kind: MessageKind, payload: UnsafeRawBufferPointer) {
            self.used = used
            self.kind = kind
            self.payload = payload
        }
    }

    /// Takes a whole unfragmented, uncompressed text or binary frame of under 64 KiB at the
    /// start of `input`, outside a fragmented message, within the limits, masked exactly when
    /// this is the server, and with no bytes of a previous frame pending. It is unmasked in
    /// place; text is checked as UTF-8 in the same pass (ASCII) or after it. Anything else,
    /// including text that is not UTF-8 (its bytes masked again, untouched), is nil: call
    /// `parse`, which handles and reports it.
    @inlinable @inline(__always)
    public mutating func takeWholeDataFrame(_ input: UnsafeMutableRawBufferPointer) -> WholeMessage? {
        guard input.count >= 2, let p = input.baseAddress, self.idleBetweenFrames else { return nil }
        let b0 = p.load(as: UInt8.self)
        let b1 = p.load(fromByteOffset: 1, as: UInt8.self)
        // FIN, no RSV bit, text or binary; masked exactly when we are the server (§5.1).
        let isServer = self.role == .server
        guard b0 == 0x81 || b0 == 0x82, (b1 & 0x80 != 0) == isServer else { return nil }
        var length = Int(b1 & 0x7F)
        var at = 2
        if length == 126 {
            guard input.count >= 4 else { return nil }
            length = Int(UInt16(bigEndian: p.loadUnaligned(fromByteOffset: 2, as: UInt16.self)))
            at = 4
        } else if length == 127 {
            return nil
        }
        let header = isServer ? at + 4 : at
        guard input.count - header >= length, length <= self.configuration.maxFrameSize,
              length <= self.configuration.maxMessageSize else { return nil }
        let payload = p + header
        let kind = MessageKind(rawValue: b0 & 0x0F).unsafelyUnwrapped
        if isServer {
            let key = p.loadUnaligned(fromByteOffset: at, as: UInt32.self)
            let highBits = Masking.unmaskFromStart(key: key, payload, count: length)
            // §8.1: text is UTF-8. ASCII was seen in passing; anything else is checked in full.
            if kind == .text && highBits != 0
                && !UTF8Validator.isValid(UnsafeRawBufferPointer(start: payload, count: length)) {
                _ = Masking.unmaskFromStart(key: key, payload, count: length)
                return nil
            }
        } else if kind == .text && !UTF8Validator.isValid(UnsafeRawBufferPointer(start: payload, count: length)) {
            return nil
        }
        return WholeMessage(used: header + length, kind: kind, payload: UnsafeRawBufferPointer(start: payload, count: length))
    }

    /// True when the parser stands between frames with nothing carried over: no partial
    /// header, no fragmented message, input still read, and no buffer of a delivered message
    /// waiting to be released (the general `parse` releases it first).
    @inlinable
    var idleBetweenFrames: Bool {
        self.phase == .header && self.spillCount == 0 && self.messageOpcode == .continuation
            && !self.readClosed && !self.releaseMessage && !self.releaseControl
    }

    /// Queues a server's whole uncompressed message of under 126 bytes as one frame, as `send`
    /// would. False, with nothing done, for anything else (a client, compression, a longer
    /// payload, a streamed message in progress, a close begun): call `send`.
    @inlinable @inline(__always)
    public mutating func sendShort(_ kind: MessageKind, _ payload: UnsafeRawBufferPointer) -> Bool {
        let n = payload.count
        guard n < 126, self.role == .server, !self.isCompressing, !self.sendingFragmented,
              self.closeCodeSent == nil, self.state != .closed else { return false }
        let p = self.out.appendUninitialized(2 + n)
        p.storeBytes(of: 0x80 | kind.rawValue, as: UInt8.self)
        p.storeBytes(of: UInt8(truncatingIfNeeded: n), toByteOffset: 1, as: UInt8.self)
        if n > 0 { copyShort(to: p + 2, from: payload.baseAddress.unsafelyUnwrapped, count: n) }
        return true
    }
}

/// Copies up to 125 bytes with a few overlapping word moves (no call for the common sizes).
@inlinable @inline(__always)
func copyShort(to d: UnsafeMutableRawPointer, from s: UnsafeRawPointer, count n: Int) {
    if n >= 16 && n <= 32 {
        let a = s.loadUnaligned(as: UInt64.self)
        let b = s.loadUnaligned(fromByteOffset: 8, as: UInt64.self)
        let c = s.loadUnaligned(fromByteOffset: n - 16, as: UInt64.self)
        let e = s.loadUnaligned(fromByteOffset: n - 8, as: UInt64.self)
        d.storeBytes(of: a, as: UInt64.self)
        d.storeBytes(of: b, toByteOffset: 8, as: UInt64.self)
        d.storeBytes(of: c, toByteOffset: n - 16, as: UInt64.self)
        d.storeBytes(of: e, toByteOffset: n - 8, as: UInt64.self)
    } else if n >= 8 && n < 16 {
        let a = s.loadUnaligned(as: UInt64.self)
        let e = s.loadUnaligned(fromByteOffset: n - 8, as: UInt64.self)
        d.storeBytes(of: a, as: UInt64.self)
        d.storeBytes(of: e, toByteOffset: n - 8, as: UInt64.self)
    } else {
        d.copyMemory(from: s, byteCount: n)
    }
}
