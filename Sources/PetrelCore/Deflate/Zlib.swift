import CZlib

/// A raw-deflate compressor with a sync flush per call: one subclass per engine (`DeflateStream`
/// for zlib, `IsalStream` for ISA-L). A class rather than a protocol so that a session holds one
/// in a single reference (8 bytes, where an existential takes 16: every connection carries the
/// codec inline, compressing or not).
class Deflater {
    let key: Key

    /// What a compressor is made for: streams with equal keys are interchangeable in a pool.
    /// ISA-L's ignore zlib's level and memory level, so its keys carry zeros there.
    struct Key: Hashable {
        var windowBits: Int
        var memoryLevel: Int
        var level: Int
        var engine: DeflateEngine.Resolved = .zlib

        init(windowBits: Int, memoryLevel: Int, level: Int, engine: DeflateEngine.Resolved = .zlib) {
            self.windowBits = windowBits
            self.memoryLevel = engine == .isal ? 0 : memoryLevel
            self.level = engine == .isal ? 0 : level
            self.engine = engine
        }
    }

    init(key: Key) { self.key = key }

    /// Forgets the history (the next message refers to nothing before it). Each engine's own.
    func reset() { preconditionFailure("\(type(of: self)) does not implement reset") }

    /// Compresses `input` with a sync flush, leaving the empty stored block at the end. Each engine's own.
    func compress(_ input: UnsafeRawBufferPointer, into out: inout ByteBuffer) {
        preconditionFailure("\(type(of: self)) does not implement compress")
    }

    /// Compresses `input` as one whole message into `out` (RFC 7692 §7.2.1): a sync flush, then the
    /// trailing `00 00 ff ff` removed.
    final func compressMessage(_ input: UnsafeRawBufferPointer, into out: inout ByteBuffer) {
        let before = out.count
        self.compress(input, into: &out)
        if out.count - before >= 4 {
            // A sync flush that wrote anything ends in an empty stored block: 00 00 ff ff.
            out.trimEnd(4)
        } else {
            // Nothing to flush (zlib, with no input right after a sync flush, writes nothing):
            // the payload of an empty message is a single 0x00 octet (RFC 7692 §7.2.3.6).
            precondition(out.count == before, "a sync flush wrote \(out.count - before) bytes")
            var zero: UInt8 = 0
            withUnsafeBytes(of: &zero) { out.append($0) }
        }
    }
}

/// A compressor for `key`: ISA-L's when the key asks for it and the library loads, else zlib's.
func makeDeflater(_ key: Deflater.Key) -> Deflater {
    #if PETREL_ISAL
    if key.engine == .isal, let s = IsalStream(key) { return s }
    #endif
    return DeflateStream(key)
}

/// One zlib raw-deflate compressor. The `z_stream` lives at a fixed address (zlib keeps a pointer
/// back to it), allocated here and released in `deinit`.
final class DeflateStream: Deflater {
    let z: UnsafeMutablePointer<z_stream>

    init(_ key: Key) {
        self.z = .allocate(capacity: 1)
        self.z.initialize(to: z_stream())
        let huffmanOnly = key.windowBits < 9
        let rc = petrel_deflate_init2(
            self.z, Int32(key.level), -Int32(max(key.windowBits, 9)), Int32(key.memoryLevel),
            huffmanOnly ? Z_HUFFMAN_ONLY : Z_DEFAULT_STRATEGY)
        // Only Z_MEM_ERROR is possible with parameters validated by negotiation.
        precondition(rc == Z_OK, "deflateInit2 failed (\(rc)): out of memory")
        super.init(key: key)
    }

    deinit {
        deflateEnd(self.z)
        self.z.deallocate()
    }

    override func reset() { deflateReset(self.z) }

    override func compress(_ input: UnsafeRawBufferPointer, into out: inout ByteBuffer) {
        let z = self.z
        z.pointee.next_in = UnsafeMutablePointer(mutating: input.baseAddress?.assumingMemoryBound(to: UInt8.self))
        z.pointee.avail_in = UInt32(input.count)
        while true {
            let room = max(input.count / 2 + 64, 256)
            let p = out.appendUninitialized(room)
            z.pointee.next_out = p.assumingMemoryBound(to: UInt8.self)
            z.pointee.avail_out = UInt32(room)
            let rc = deflate(z, Z_SYNC_FLUSH)
            let left = Int(z.pointee.avail_out)
            out.trimEnd(left)
            precondition(rc == Z_OK || rc == Z_BUF_ERROR, "deflate failed (\(rc))")
            if z.pointee.avail_in == 0 && left > 0 { break }
        }
        z.pointee.next_in = nil
        z.pointee.next_out = nil
    }
}

/// One zlib raw-deflate decompressor, at a fixed address like `DeflateStream`.
final class InflateStream {
    let z: UnsafeMutablePointer<z_stream>
    let windowBits: Int

    init(windowBits: Int) {
        // A larger window inflates anything a smaller one produced; 9 avoids zlib's 8-bit corner.
        self.windowBits = max(windowBits, 9)
        self.z = .allocate(capacity: 1)
        self.z.initialize(to: z_stream())
        let rc = petrel_inflate_init2(self.z, -Int32(self.windowBits))
        precondition(rc == Z_OK, "inflateInit2 failed (\(rc)): out of memory")
    }

    deinit {
        inflateEnd(self.z)
        self.z.deallocate()
    }

    func reset() { inflateReset(self.z) }

    /// After a final block (BFINAL) zlib stops; to go on with the same window for the next message
    /// (context takeover), restart the stream primed with the window it had.
    func restartKeepingWindow() {
        var window = [UInt8](repeating: 0, count: 1 << self.windowBits)
        var length: UInt32 = 0
        window.withUnsafeMutableBufferPointer { _ = inflateGetDictionary(self.z, $0.baseAddress, &length) }
        inflateReset(self.z)
        if length > 0 {
            window.withUnsafeBufferPointer { _ = inflateSetDictionary(self.z, $0.baseAddress, length) }
        }
    }
}

/// Compressors and decompressors kept for reuse by sessions that drop their context between
/// messages, so that neither an idle connection holds zlib memory nor a busy one pays for
/// `deflateInit` on every message. Not thread-safe: one pool per thread (per event loop).
public final class ZlibPool {
    private var deflaters: [Deflater.Key: [Deflater]] = [:]
    private var inflaters: [Int: [InflateStream]] = [:]
    /// Streams kept per kind; more are freed when returned.
    public let capacity: Int

    public init(capacity: Int = 8) {
        self.capacity = capacity
    }

    func takeDeflater(_ key: Deflater.Key) -> Deflater {
        if let s = self.deflaters[key]?.popLast() { return s }
        return makeDeflater(key)
    }

    func give(_ s: Deflater) {
        s.reset()
        if self.deflaters[s.key, default: []].count < self.capacity { self.deflaters[s.key, default: []].append(s) }
    }

    func takeInflater(windowBits: Int) -> InflateStream {
        if let s = self.inflaters[max(windowBits, 9)]?.popLast() { return s }
        return InflateStream(windowBits: windowBits)
    }

    func give(_ s: InflateStream) {
        s.reset()
        if self.inflaters[s.windowBits, default: []].count < self.capacity { self.inflaters[s.windowBits, default: []].append(s) }
    }

    /// Streams currently kept (for tests and metrics).
    public var idleCount: Int {
        self.deflaters.values.reduce(0) { $0 + $1.count } + self.inflaters.values.reduce(0) { $0 + $1.count }
    }
}
