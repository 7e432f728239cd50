/// Which end of the connection a session is. Fixed for its life: it decides masking (RFC 6455 §5.1)
/// and who closes the TCP connection first (§7.1.1).
public enum Role: Sendable {
    case server
    case client
}

/// Limits and behaviour of one session. Defaults are in docs/limits.md.
public struct SessionConfiguration: Sendable {
    /// Largest frame payload accepted; larger fails the connection with 1009.
    public var maxFrameSize: Int = 16 * 1024 * 1024
    /// Largest message accepted (after decompression); larger fails the connection with 1009.
    public var maxMessageSize: Int = 16 * 1024 * 1024
    /// Answer every ping with a pong carrying the same payload.
    public var autoPong: Bool = true

    public init(maxFrameSize: Int = 16 * 1024 * 1024, maxMessageSize: Int = 16 * 1024 * 1024, autoPong: Bool = true) {
        self.maxFrameSize = maxFrameSize
        self.maxMessageSize = maxMessageSize
        self.autoPong = autoPong
    }
}

/// What `Session.parse` found. Payloads are borrowed: valid until the next call to `parse`
/// (and, when they point into the caller's input, until the caller reuses that input).
public enum Event {
    /// A complete text message, validated UTF-8.
    case text(UnsafeRawBufferPointer)
    case binary(UnsafeRawBufferPointer)
    /// A ping; with `autoPong` its pong is already queued.
    case ping(UnsafeRawBufferPointer)
    /// A pong (solicited or not).
    case pong(UnsafeRawBufferPointer)
    /// The peer's close frame: its code (nil when the frame had none, i.e. 1005) and UTF-8 reason.
    /// If we had not sent a close frame, the echo is already queued.
    case close(CloseCode?, reason: UnsafeRawBufferPointer)
    /// The peer broke the protocol. A close frame with `error.closeCode` is queued; no more input is read.
    case failed(ProtocolError)
}

/// The RFC 6455 protocol engine for one connection after its opening handshake: bytes in, events out;
/// messages in, bytes out. No sockets, threads or clocks.
///
/// Drive it by feeding received bytes to `parse` until it has consumed them all, handling each event
/// as it comes (sending replies between calls is fine), and by writing `pendingOutput` to the
/// transport. Frames are handled strictly in order: everything before a protocol error is
/// delivered, and answered, before the failure is reported.
public struct Session: ~Copyable {
    public enum State: Sendable {
        /// Data flows both ways.
        case open
        /// We sent a close frame and wait for the peer's.
        case closing
        /// Both close frames were exchanged, or the connection failed.
        case closed
    }

    public let role: Role
    public let configuration: SessionConfiguration
    public private(set) var state: State = .open
    /// The close code we sent or will send, once known.
    public private(set) var closeCodeSent: CloseCode?
    /// The code from the peer's close frame, once received (1005 when it had none).
    public private(set) var closeCodeReceived: CloseCode?
    /// Whether the connection failed (a protocol error, or the transport ended before the close handshake).
    public private(set) var failed = false

    /// Mask keys: clients only, so out of line (a server-side session stays 88 bytes smaller).
    var entropy: EntropyBox?

    // Receive side.
    @usableFromInline enum Phase { case header, payload }
    @usableFromInline var phase: Phase = .header
    var spill: (UInt64, UInt64) = (0, 0)
    @usableFromInline var spillCount = 0
    @usableFromInline var readClosed = false
    /// The last event lent out the message (or control) buffer: empty it on the next call.
    @usableFromInline var releaseMessage = false
    @usableFromInline var releaseControl = false

    var frameFin = false
    var frameOpcode = Opcode.continuation
    var frameMasked = false
    var frameKey: UInt32 = 0
    var frameLength = 0
    var frameReceived = 0

    /// The opcode of the message being received (text or binary), or continuation when none is.
    @usableFromInline var messageOpcode = Opcode.continuation
    var messageSize = 0
    var utf8 = UTF8Validator()
    var message = ByteBuffer()
    var control = ByteBuffer()

    /// Set when a compressed message is being received.
    var messageCompressed = false
    /// The inflated size of the compressed message being received.
    var messageInflated = 0
    /// permessage-deflate, when negotiated.
    var codec: DeflateCodec?
    /// Holds a message while it is compressed.
    var scratch = ByteBuffer()

    // Send side.
    @usableFromInline var out = ByteBuffer()
    @usableFromInline var sendingFragmented = false

    /// Buffers above this size are released once their message is delivered, so an idle session is small.
    static let keepBufferBytes = 64 * 1024
    /// The output buffer keeps up to what one loop read can turn into replies (the runtime reads
    /// 256 KiB at a time): an echo of 16 KiB messages four at a time once freed and re-made its
    /// 128 KiB buffer after every write. Idle connections still free it (`releaseIdleBuffers`).
    static let keepOutputBytes = 256 * 1024

    /// - Parameters:
    ///   - compression: permessage-deflate as negotiated in the handshake, or nil.
    ///   - zlibPool: where streams of sides without context takeover are kept between messages
    ///     (one pool per thread). Without a pool such streams are reset and kept by the session.
    ///   - entropy: the source of mask keys (`.system` on a network).
    public init(
        role: Role, configuration: SessionConfiguration = SessionConfiguration(), compression: Compression? = nil,
        zlibPool: ZlibPool? = nil, entropy: EntropySource = .system
    ) {
        self.role = role
        self.configuration = configuration
        self.entropy = role == .client ? EntropyBox(entropy) : nil
        if let compression { self.codec = DeflateCodec(compression: compression, pool: zlibPool) }
        self.isCompressing = compression != nil
    }

    /// Whether permessage-deflate is in use. Stored, not computed from the codec: another
    /// module reads a stored property in place, where a call to a getter copies the session.
    public let isCompressing: Bool

    /// permessage-deflate as negotiated, or nil.
    public var compression: Compression? { self.codec?.compression }

    // MARK: Receiving

    /// Parses `input` in place (unmasking it) up to and including the next event.
    /// - Returns: how many bytes of `input` were consumed, and the event they completed, if any.
    ///   Call again with the rest of the input until it is all consumed.
    public mutating func parse(_ input: UnsafeMutableRawBufferPointer) -> (consumed: Int, event: Event?) {
        if self.releaseMessage {
            self.releaseMessage = false
            self.message.clear(keepingUpTo: Session.keepBufferBytes)
        }
        if self.releaseControl {
            self.releaseControl = false
            self.control.clear(keepingUpTo: 256)
        }
        let n = input.count
        guard !self.readClosed, n > 0, let base = input.baseAddress else { return (n, nil) }
        var i = 0
        while i < n {
            switch self.phase {
            case .header:
                if self.spillCount == 0, n - i >= 2 {
                    if let m = self.takeWholeDataFrame(UnsafeMutableRawBufferPointer(start: base + i, count: n - i)) {
                        return (i + m.used, m.kind == .text ? .text(m.payload) : .binary(m.payload))
                    }
                    let b1 = base.load(fromByteOffset: i + 1, as: UInt8.self)
                    if let error = self.checkStart(base.load(fromByteOffset: i, as: UInt8.self), b1) {
                        return (n, self.fail(error))
                    }
                    let need = Session.headerLength(b1)
                    if n - i >= need {
                        if let error = self.readHeader(UnsafeRawPointer(base + i)) { return (n, self.fail(error)) }
                        i += need
                    } else {
                        self.appendToHeaderSpill(UnsafeRawPointer(base + i), count: n - i)
                        i = n
                        continue
                    }
                } else {
                    // Gather a header that arrives in pieces in the 14-byte spill.
                    let need = self.spillCount >= 2 ? Session.headerLength(self.spillByte(1)) : 2
                    let take = min(need - self.spillCount, n - i)
                    self.appendToHeaderSpill(UnsafeRawPointer(base + i), count: take)
                    i += take
                    if self.spillCount == 2 {
                        if let error = self.checkStart(self.spillByte(0), self.spillByte(1)) { return (n, self.fail(error)) }
                    }
                    if self.spillCount < 2 || self.spillCount < Session.headerLength(self.spillByte(1)) { continue }
                    var header = self.spill
                    let error = withUnsafeBytes(of: &header) { self.readHeader($0.baseAddress!) }
                    self.spillCount = 0
                    if let error { return (n, self.fail(error)) }
                }
                self.phase = .payload
                if self.frameLength == 0 {
                    self.phase = .header
                    if let event = self.payloadChunk(UnsafeMutableRawBufferPointer(start: base + i, count: 0), first: true, last: true) {
                        return (self.readClosed ? n : i, event)
                    }
                }
            case .payload:
                let take = min(self.frameLength - self.frameReceived, n - i)
                let chunk = UnsafeMutableRawBufferPointer(start: base + i, count: take)
                if self.frameMasked { Masking.apply(key: self.frameKey, offset: self.frameReceived, to: chunk) }
                i += take
                let first = self.frameReceived == 0
                self.frameReceived += take
                let last = self.frameReceived == self.frameLength
                if last { self.phase = .header }
                if let event = self.payloadChunk(chunk, first: first, last: last) {
                    return (self.readClosed ? n : i, event)
                }
            }
        }
        return (n, nil)
    }

    /// The transport reached end of stream. Returns `.abnormalClosure` if that happened before the
    /// closing handshake (the peer vanished), else nil.
    public mutating func receiveEndOfStream() -> ProtocolError? {
        self.readClosed = true
        defer { self.state = .closed }
        if self.closeCodeReceived != nil || self.failed { return nil }
        self.failed = true
        return .abnormalClosure
    }

    @inline(__always)
    static func headerLength(_ b1: UInt8) -> Int {
        let len7 = b1 & 0x7F
        return 2 + (len7 == 126 ? 2 : (len7 == 127 ? 8 : 0)) + (b1 & 0x80 != 0 ? 4 : 0)
    }

    func spillByte(_ i: Int) -> UInt8 {
        withUnsafeBytes(of: self.spill) { $0[i] }
    }

    /// Keeps part of a frame header that arrived split, until the rest comes.
    mutating func appendToHeaderSpill(_ p: UnsafeRawPointer, count: Int) {
        let at = self.spillCount
        withUnsafeMutableBytes(of: &self.spill) { $0.baseAddress!.advanced(by: at).copyMemory(from: p, byteCount: count) }
        self.spillCount += count
    }

    /// The checks that need only the first two header bytes, so a bad frame fails before its length arrives.
    func checkStart(_ b0: UInt8, _ b1: UInt8) -> ProtocolError? {
        let opcode = Opcode(rawValue: b0)
        // §5.2: reserved opcodes; RSV bits without an extension that defines them.
        if opcode.isReserved { return .reservedOpcode }
        if b0 & 0x30 != 0 { return .reservedBits }
        // RFC 7692 §6: RSV1 marks a compressed message, on its first frame only.
        if b0 & 0x40 != 0 && (!self.isCompressing || opcode.isControl || opcode == .continuation) { return .reservedBits }
        if opcode.isControl {
            // §5.5: control frames are never fragmented and carry at most 125 bytes.
            if b0 & 0x80 == 0 { return .fragmentedControlFrame }
            if b1 & 0x7F > 125 { return .controlFrameTooLong }
        } else if opcode == .continuation {
            if self.messageOpcode == .continuation { return .unexpectedContinuation }
        } else if self.messageOpcode != .continuation {
            // §5.4: a new data frame may not start inside a fragmented message.
            return .expectedContinuation
        }
        // §5.1: clients mask every frame; servers mask none.
        let masked = b1 & 0x80 != 0
        if self.role == .server && !masked { return .unmaskedFrame }
        if self.role == .client && masked { return .maskedFrame }
        return nil
    }

    /// Reads a complete header (already checked by `checkStart`) and sets up the frame and message.
    mutating func readHeader(_ p: UnsafeRawPointer) -> ProtocolError? {
        let b0 = p.load(as: UInt8.self)
        let b1 = p.load(fromByteOffset: 1, as: UInt8.self)
        var length: UInt64 = UInt64(b1 & 0x7F)
        var at = 2
        if length == 126 {
            length = UInt64(UInt16(bigEndian: p.loadUnaligned(fromByteOffset: 2, as: UInt16.self)))
            at = 4
        } else if length == 127 {
            length = UInt64(bigEndian: p.loadUnaligned(fromByteOffset: 2, as: UInt64.self))
            // §5.2: the most significant bit of a 64-bit length MUST be 0.
            if length >> 63 != 0 { return .lengthTopBitSet }
            at = 10
        }
        self.frameMasked = b1 & 0x80 != 0
        if self.frameMasked { self.frameKey = p.loadUnaligned(fromByteOffset: at, as: UInt32.self) }
        self.frameFin = b0 & 0x80 != 0
        self.frameOpcode = Opcode(rawValue: b0)
        self.frameReceived = 0
        let limits = self.configuration
        if length > UInt64(limits.maxFrameSize) { return .frameTooBig(limit: limits.maxFrameSize) }
        self.frameLength = Int(length)
        if !self.frameOpcode.isControl {
            if self.frameOpcode != .continuation {
                self.messageOpcode = self.frameOpcode
                self.messageSize = 0
                self.messageCompressed = b0 & 0x40 != 0
                self.messageInflated = 0
                self.utf8.reset()
            }
            // Compressed data is inflated as it arrives and the inflated size is what the limit
            // counts; the compressed size is bounded too (stored blocks add 5 bytes per 64 KiB).
            let slack = limits.maxMessageSize / 4096 + 1024
            let limit = !self.messageCompressed ? limits.maxMessageSize
                : (limits.maxMessageSize > Int.max - slack ? Int.max : limits.maxMessageSize + slack)
            if self.frameLength > limit - self.messageSize {
                return .messageTooBig(limit: limits.maxMessageSize)
            }
            self.messageSize += self.frameLength
        }
        return nil
    }

    /// Handles payload bytes of the current frame as they arrive (already unmasked).
    mutating func payloadChunk(_ chunk: UnsafeMutableRawBufferPointer, first: Bool, last: Bool) -> Event? {
        let bytes = UnsafeRawBufferPointer(chunk)
        if self.frameOpcode.isControl {
            if first && last { return self.controlFrame(bytes) }
            self.control.append(bytes)
            guard last else { return nil }
            self.releaseControl = true
            return self.controlFrame(self.control.readable)
        }
        let endsMessage = last && self.frameFin
        if self.messageCompressed { return self.compressedChunk(bytes, endsMessage: endsMessage) }
        // §8.1: fail at the first invalid byte, even mid-frame.
        if self.messageOpcode == .text, self.utf8.validate(bytes) != nil { return self.fail(.invalidUTF8) }
        if first && endsMessage && self.frameOpcode != .continuation {
            // An unfragmented message that arrived in one read: hand out the caller's bytes, no copy.
            return self.finishMessage(bytes)
        }
        self.message.append(bytes)
        guard endsMessage else { return nil }
        self.releaseMessage = true
        return self.finishMessage(self.message.readable)
    }

    /// Inflates a piece of a compressed message into the message buffer (RFC 7692 §7.2.2).
    mutating func compressedChunk(_ bytes: UnsafeRawBufferPointer, endsMessage: Bool) -> Event? {
        let limit = self.configuration.maxMessageSize
        let isText = self.messageOpcode == .text
        // The codec is changed where it lies (`self.codec!`): taking it out and putting it back
        // copied it, retaining and releasing its three streams, per message.
        if self.isCompressing {
            var error = self.codec!.inflate(
                bytes, into: &self.message, produced: &self.messageInflated, limit: limit, utf8: &self.utf8, isText: isText)
            if error == nil && endsMessage {
                error = self.codec!.finishInflating(
                    into: &self.message, produced: &self.messageInflated, limit: limit, utf8: &self.utf8, isText: isText)
            }
            if let error { return self.fail(error) }
        }
        guard endsMessage else { return nil }
        self.releaseMessage = true
        return self.finishMessage(self.message.readable)
    }

    mutating func finishMessage(_ payload: UnsafeRawBufferPointer) -> Event {
        let opcode = self.messageOpcode
        self.messageOpcode = .continuation
        if opcode == .text {
            if !self.utf8.isComplete { return self.fail(.invalidUTF8) }
            return .text(payload)
        }
        return .binary(payload)
    }

    mutating func controlFrame(_ payload: UnsafeRawBufferPointer) -> Event {
        switch self.frameOpcode {
        case .ping:
            if self.configuration.autoPong && self.closeCodeSent == nil {
                self.writeFrame(fin: true, opcode: .pong, payload)
            }
            return .ping(payload)
        case .pong:
            return .pong(payload)
        default:
            return self.closeFrame(payload)
        }
    }

    /// §5.5.1 and §7.4: a close frame is empty, or a valid code plus a UTF-8 reason.
    mutating func closeFrame(_ payload: UnsafeRawBufferPointer) -> Event {
        var code: CloseCode? = nil
        var reason = UnsafeRawBufferPointer(start: payload.baseAddress, count: 0)
        if payload.count == 1 { return self.fail(.closePayloadOneByte) }
        if payload.count >= 2 {
            let c = CloseCode(UInt16(payload[0]) << 8 | UInt16(payload[1]))
            if !c.isValidOnWire { return self.fail(.invalidCloseCode) }
            reason = UnsafeRawBufferPointer(rebasing: payload[2...])
            if !UTF8Validator.isValid(reason) { return self.fail(.invalidCloseReason) }
            code = c
        }
        self.closeCodeReceived = code ?? .noStatusReceived
        self.readClosed = true
        if self.closeCodeSent == nil {
            // §5.5.1: answer with a close frame, echoing the status code.
            self.closeCodeSent = code ?? .noStatusReceived
            if let c = code {
                var be = c.rawValue.bigEndian
                withUnsafeBytes(of: &be) { self.writeFrame(fin: true, opcode: .close, $0) }
            } else {
                self.writeFrame(fin: true, opcode: .close, UnsafeRawBufferPointer(start: nil, count: 0))
            }
        }
        self.state = .closed
        return .close(code, reason: reason)
    }

    /// §7.1.7: fail the connection: send a close frame (unless one was sent) and read nothing more.
    mutating func fail(_ error: ProtocolError) -> Event {
        self.readClosed = true
        self.failed = true
        if self.closeCodeSent == nil {
            self.queueClose(code: error.closeCode, reason: error.description)
        }
        self.state = .closed
        return .failed(error)
    }

    // MARK: Sending

    /// Queues a complete message as one frame. With permessage-deflate it is compressed unless it
    /// is shorter than the configured minimum or `compress` is false.
    public mutating func send(_ kind: MessageKind, _ payload: UnsafeRawBufferPointer, compress: Bool = true) throws(UsageError) {
        try self.send(kind, payload, fragmentSize: Int.max, compress: compress)
    }

    /// Queues a complete message as fragments of at most `fragmentSize` payload bytes (at least
    /// one frame). A compressed message is compressed whole, then fragmented (RSV1 on the first).
    public mutating func send(
        _ kind: MessageKind, _ payload: UnsafeRawBufferPointer, fragmentSize: Int, compress: Bool = true
    ) throws(UsageError) {
        try self.checkCanSend()
        if self.sendingFragmented { throw .messageInProgress }
        if !self.isCompressing && payload.count <= fragmentSize {
            // Uncompressed and whole: one frame.
            self.writeFrame(fin: true, opcode: kind.opcode, payload)
            return
        }
        if compress, self.isCompressing, self.codec!.compressMessage(payload, into: &self.scratch) {
            self.writeFragments(kind, self.scratch.readable, fragmentSize: fragmentSize, compressed: true)
            self.scratch.clear(keepingUpTo: Session.keepBufferBytes)
            return
        }
        self.writeFragments(kind, payload, fragmentSize: fragmentSize, compressed: false)
    }

    mutating func writeFragments(_ kind: MessageKind, _ payload: UnsafeRawBufferPointer, fragmentSize: Int, compressed: Bool) {
        let size = max(1, fragmentSize)
        var offset = 0
        repeat {
            let end = payload.count - offset > size ? offset + size : payload.count
            let piece = UnsafeRawBufferPointer(rebasing: payload[offset..<end])
            let first = offset == 0
            self.writeFrame(fin: end == payload.count, rsv1: first && compressed, opcode: first ? kind.opcode : .continuation, piece)
            offset = end
        } while offset < payload.count
    }

    /// Streams a message in pieces: the first call starts it (as `kind`), later ones continue it,
    /// and the call with `isFinal` ends it. Control frames may be sent in between. With
    /// permessage-deflate each piece is compressed as it comes (sync-flushed).
    public mutating func sendFragment(_ kind: MessageKind, _ payload: UnsafeRawBufferPointer, isFinal: Bool) throws(UsageError) {
        try self.checkCanSend()
        let first = !self.sendingFragmented
        self.sendingFragmented = !isFinal
        if self.isCompressing {
            self.codec!.compressFragment(payload, isFinal: isFinal, into: &self.scratch)
            self.writeFrame(fin: isFinal, rsv1: first, opcode: first ? kind.opcode : .continuation, self.scratch.readable)
            self.scratch.clear(keepingUpTo: Session.keepBufferBytes)
            return
        }
        self.writeFrame(fin: isFinal, opcode: first ? kind.opcode : .continuation, payload)
    }

    public mutating func sendPing(_ payload: UnsafeRawBufferPointer) throws(UsageError) {
        try self.checkCanSend()
        guard payload.count <= 125 else { throw .controlPayloadTooLong }
        self.writeFrame(fin: true, opcode: .ping, payload)
    }

    public mutating func sendPong(_ payload: UnsafeRawBufferPointer) throws(UsageError) {
        try self.checkCanSend()
        guard payload.count <= 125 else { throw .controlPayloadTooLong }
        self.writeFrame(fin: true, opcode: .pong, payload)
    }

    /// Starts the closing handshake (§7.1.2). Data already queued still goes out; nothing after it.
    /// - Parameter reason: UTF-8, at most 123 bytes.
    public mutating func close(code: CloseCode = .normalClosure, reason: String = "") throws(UsageError) {
        if self.closeCodeSent != nil { throw .closing }
        guard code.isValidOnWire else { throw .invalidCloseCode }
        guard reason.utf8.count <= 123 else { throw .closeReasonTooLong }
        self.queueClose(code: code, reason: reason)
        self.state = self.closeCodeReceived == nil ? .closing : .closed
    }

    func checkCanSend() throws(UsageError) {
        if self.closeCodeSent != nil || self.state == .closed { throw .closing }
    }

    mutating func queueClose(code: CloseCode, reason: String) {
        self.closeCodeSent = code
        var payload: [UInt8] = [UInt8(code.rawValue >> 8), UInt8(code.rawValue & 0xFF)]
        payload.append(contentsOf: reason.utf8.prefix(123))
        payload.withUnsafeBytes { self.writeFrame(fin: true, opcode: .close, $0) }
    }

    /// Encodes one frame into the output, masked with a fresh key in the client role.
    mutating func writeFrame(fin: Bool, rsv1: Bool = false, opcode: Opcode, _ payload: UnsafeRawBufferPointer) {
        if self.role == .server && payload.count < 126 {
            // A server's short frame: two header bytes, then the payload.
            let p = self.out.appendUninitialized(2 + payload.count)
            p.storeBytes(of: (fin ? 0x80 : 0) | (rsv1 ? 0x40 : 0) | opcode.rawValue, as: UInt8.self)
            p.storeBytes(of: UInt8(truncatingIfNeeded: payload.count), toByteOffset: 1, as: UInt8.self)
            if let src = payload.baseAddress, payload.count > 0 { (p + 2).copyMemory(from: src, byteCount: payload.count) }
            return
        }
        let key: UInt32? = self.role == .client ? self.entropy.unsafelyUnwrapped.source.next32() : nil
        let headerSize = FrameHeader.size(payloadLength: payload.count, masked: key != nil)
        let p = self.out.appendUninitialized(headerSize + payload.count)
        _ = FrameHeader.encode(fin: fin, rsv1: rsv1, opcode: opcode, payloadLength: payload.count, maskKey: key, into: p)
        guard let src = payload.baseAddress, payload.count > 0 else { return }
        (p + headerSize).copyMemory(from: src, byteCount: payload.count)
        if let key {
            Masking.apply(key: key, offset: 0, to: UnsafeMutableRawBufferPointer(start: p + headerSize, count: payload.count))
        }
    }

    /// Appends bytes encoded elsewhere to the output, in order with everything else: an HTTP
    /// response before the first frame, or a frame encoded once and shared by many connections.
    /// The caller vouches that they are whole frames valid for this connection (unmasked in the
    /// server role, RSV1 only with permessage-deflate) or a handshake response.
    public mutating func queueEncoded(_ bytes: UnsafeRawBufferPointer) throws(UsageError) {
        try self.checkCanSend()
        self.out.append(bytes)
    }

    // MARK: Output

    /// Bytes queued for the transport.
    @inlinable public var pendingOutputCount: Int { self.out.count }

    /// Lends the queued bytes to `body` (do not let the pointer escape); then call `consumeOutput`.
    @inlinable public func withPendingOutput<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        try body(self.out.readable)
    }

    /// Frees the buffers that hold nothing (output, message, control, scratch): for a connection
    /// that is about to sit idle, such as one whose handshake response was just written.
    public mutating func releaseIdleBuffers() {
        if self.out.isEmpty { self.out.clear(keepingUpTo: 0) }
        if self.message.isEmpty { self.message.clear(keepingUpTo: 0) }
        if self.control.isEmpty { self.control.clear(keepingUpTo: 0) }
        if self.scratch.isEmpty { self.scratch.clear(keepingUpTo: 0) }
    }

    /// Marks `count` queued bytes as written.
    public mutating func consumeOutput(_ count: Int) {
        precondition(count >= 0 && count <= self.out.count, "consumeOutput beyond the queued bytes")
        self.out.consume(count)
        if self.out.isEmpty { self.out.clear(keepingUpTo: Session.keepOutputBytes) }
    }

    /// Takes all queued bytes as an array (a convenience for tests and simple drivers).
    public mutating func takeOutput() -> [UInt8] {
        let bytes = [UInt8](self.out.readable)
        self.consumeOutput(bytes.count)
        return bytes
    }

    /// Whether the session still reads from the transport.
    @inlinable public var wantsRead: Bool { !self.readClosed }

    /// True once the transport should be closed after the queued output is written: the server
    /// closes first after the closing handshake (§7.1.1); either role closes after a failure.
    /// A client that closed cleanly waits for the server to close (the driver bounds the wait).
    @inlinable public var shouldCloseTransport: Bool {
        self.state == .closed && (self.role == .server || self.failed)
    }
}
